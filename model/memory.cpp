// model/memory.cpp — encoder, transfer head and decoder with memory.
#include "model/memory.h"

#include <algorithm>
#include <stdexcept>

namespace uio::model {

void Memory::append(const Memory& more) {
  if (more.k.empty()) return;
  if (k.empty()) sink = more.sink;  // a sink comes first or not at all
  const bool graph =
      torch::GradMode::is_enabled() && (more.k.front().requires_grad() || (!k.empty() && k.front().requires_grad()));
  if (k.empty() && graph) {
    k = more.k, v = more.v;
    return;
  }
  if (graph || (!k.empty() && k_storage_.empty())) {
    k_storage_.clear(), v_storage_.clear();  // k, v no longer view the storage: concatenate from now on
    for (size_t i = 0; i < more.k.size(); ++i) {
      k[i] = torch::cat({k[i], more.k[i]}, 1);
      v[i] = torch::cat({v[i], more.v[i]}, 1);
    }
    return;
  }
  const int64_t have = entries(), add = more.entries();
  const int64_t capacity = k_storage_.empty() ? 0 : k_storage_.front().size(1);
  if (have + add > capacity) {
    const int64_t grown = std::max(2 * capacity, have + add);
    for (size_t i = 0; i < more.k.size(); ++i) {
      auto shape = more.k[i].sizes().vec();  // [G, add, D]
      shape[1] = grown;
      auto kb = torch::empty(shape, more.k[i].options()), vb = torch::empty(shape, more.v[i].options());
      if (have > 0) kb.narrow(1, 0, have).copy_(k[i]), vb.narrow(1, 0, have).copy_(v[i]);
      if (k_storage_.size() <= i)
        k_storage_.push_back(kb), v_storage_.push_back(vb);
      else
        k_storage_[i] = kb, v_storage_[i] = vb;
    }
  }
  k.resize(more.k.size()), v.resize(more.v.size());
  for (size_t i = 0; i < more.k.size(); ++i) {
    k_storage_[i].narrow(1, have, add).copy_(more.k[i]);
    v_storage_[i].narrow(1, have, add).copy_(more.v[i]);
    k[i] = k_storage_[i].narrow(1, 0, have + add);
    v[i] = v_storage_[i].narrow(1, 0, have + add);
  }
}

torch::Tensor eos_memory_init(CausalLM& base) {
  const int64_t eos = base->config().eos_token_id >= 0 ? base->config().eos_token_id : 0;
  return base->model->embed_tokens->weight[eos].detach().to(torch::kFloat).clone();
}

torch::Tensor encoder_attention_mask(int64_t l, int64_t M) {
  TORCH_CHECK(l > 0 && M > 0 && l % M == 0, "memory: segment_len (", l, ") must be a positive multiple of ",
              "num_memory_tokens (", M, ")");
  auto mask = torch::zeros({l + M, l + M}, torch::kBool);
  mask.narrow(0, 0, l).narrow(1, 0, l).copy_(torch::ones({l, l}, torch::kBool).tril());  // ordinary: causal
  for (int64_t i = 0; i < M; ++i) {
    mask[l + i].narrow(0, 0, (i + 1) * (l / M)).fill_(true);  // memory i: ordinary [0, (i+1) l/M)
    mask[l + i][l + i] = true;  // and itself
  }
  return mask;
}

torch::Tensor encoder_positions(int64_t l, int64_t M) {
  auto memory = (torch::arange(1, M + 1, torch::kInt64) * (l / M));  // memory i at (i+1) l/M
  return torch::cat({torch::arange(l, torch::kInt64), memory});
}

MemoryCompressorImpl::MemoryCompressorImpl(const ModelConfig& config, const MemoryOptions& options,
                                           const torch::Tensor& memory_init)
    : config_(config), options_(options), l_(options.segment_len), M_(options.num_memory_tokens) {
  TORCH_CHECK(memory_init.dim() == 1 && memory_init.size(0) == config.hidden_size, "memory: <mem> init must be [",
              config.hidden_size, "], got ", memory_init.sizes());
  TORCH_CHECK(options.sink_tokens >= 0 && options.sink_tokens <= options.segment_len, "memory: sink_tokens must lie ",
              "in [0, segment_len = ", options.segment_len, "], got ", options.sink_tokens);
  const auto device = memory_init.device();
  encoder = register_module("encoder", LoraSet(config, options.encoder_lora, device));
  transfer_head = register_module("transfer", LoraSet(config, options.transfer_lora, device));
  // Registered only when on, so a compressor without decoder adapters has today's parameters, names and
  // random draws exactly (and its files and checkpoints are unchanged).
  TORCH_CHECK(options.decoder_lora.rank >= 0, "memory: decoder_lora rank must be >= 0 (0 = off), got ",
              options.decoder_lora.rank);
  if (options.decoder_lora.rank > 0)
    decoder = register_module("decoder", LoraSet(config, options.decoder_lora, device));
  memory_embedding = register_parameter("memory_embedding", memory_init.detach().to(torch::kFloat).clone());
  // Plain members, not buffers: Module::to(dtype) would turn the boolean mask into numbers.
  encoder_mask_ = encoder_attention_mask(l_, M_);
  encoder_positions_ = encoder_positions(l_, M_);

  const auto kind = options.memory_rope;
  if (kind == RopeKind::none) {
    decoder_rope_.emplace(config.head_dim, config.rope_theta, config.rope_scaling, config.max_position);
  } else {
    TORCH_CHECK(kind != RopeKind::llama3, "memory_rope 'llama3' is not one of none, linear, ntk, dynamic, yarn");
    TORCH_CHECK(config.rope_scaling.type == RopeKind::none, "memory_rope '", rope_kind_name(kind),
                "' replaces the base ", "model's RoPE, which already scales ('",
                rope_kind_name(config.rope_scaling.type), "'); use memory_rope = none with this model");
    TORCH_CHECK(options.memory_rope_factor > 0, "memory_rope_factor must be > 0");
    RopeScaling s;
    s.type = kind;
    s.factor = options.memory_rope_factor;
    s.original_max_position = config.max_position;
    decoder_rope_.emplace(config.head_dim, config.rope_theta, s, config.max_position);
  }
}

std::vector<torch::Tensor> MemoryCompressorImpl::encode(CausalLM& base, const torch::Tensor& segments) {
  TORCH_CHECK(segments.dim() == 2 && segments.size(1) == l_, "memory: encoder expects segments [S, ", l_, "], got ",
              segments.sizes());
  const int64_t S = segments.size(0);
  auto tokens = base->model->embed_tokens(segments);  // [S, l, C]
  auto memory = memory_embedding.to(tokens.scalar_type()).expand({S, M_, config_.hidden_size});
  std::vector<torch::Tensor> hidden;
  ForwardContext ctx;
  if (encoder_mask_.device() != segments.device()) {
    encoder_mask_ = encoder_mask_.to(segments.device());
    encoder_positions_ = encoder_positions_.to(segments.device());
  }
  ctx.positions = encoder_positions_;
  ctx.mask = encoder_mask_;
  ctx.lora = encoder.get();
  ctx.attn_inputs = &hidden;
  ctx.capture_from = l_;
  base->model->forward_embeddings(torch::cat({tokens, memory}, 1), ctx);  // [S, l + M, C] in
  return hidden;  // L x [S, M, C]
}

std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> MemoryCompressorImpl::transfer(
    CausalLM& base, const std::vector<torch::Tensor>& hidden) {
  std::vector<torch::Tensor> keys, values;
  const int64_t G = config_.num_kv_heads, D = config_.head_dim;
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    const auto& h = hidden.at(static_cast<size_t>(i));  // [S, M, C]
    auto& attn = *base->model->layers[i]->as<DecoderLayer>()->self_attn;
    const auto& lora = transfer_head->layer(i);
    const int64_t S = h.size(0);
    keys.push_back(attn.k_proj(h, lora.k_proj).view({S, M_, G, D}).permute({0, 2, 1, 3}));  // [S, G, M, D]
    values.push_back(attn.v_proj(h, lora.v_proj).view({S, M_, G, D}).permute({0, 2, 1, 3}));  // [S, G, M, D]
  }
  return {keys, values};
}

Memory MemoryCompressorImpl::compress(CausalLM& base, const torch::Tensor& segments) {
  auto [keys, values] = transfer(base, encode(base, segments));
  Memory m;
  const int64_t S = segments.size(0), G = config_.num_kv_heads, D = config_.head_dim;
  for (size_t i = 0; i < keys.size(); ++i) {
    m.k.push_back(keys[i].permute({1, 0, 2, 3}).reshape({G, S * M_, D}));  // [G, S * M, D]
    m.v.push_back(values[i].permute({1, 0, 2, 3}).reshape({G, S * M_, D}));
  }
  return m;
}

Memory MemoryCompressorImpl::sink(CausalLM& base, const torch::Tensor& first) {
  const int64_t k = options_.sink_tokens;
  TORCH_CHECK(k > 0 && first.dim() == 1 && first.size(0) == k, "memory: the attention sink takes the document's first ",
              k, " tokens, got ", first.sizes());
  // The base model is frozen and the sink's tokens are data: without decoder adapters there is nothing to
  // train. With them the sink is what the decoder computes for those tokens, so gradient flows into it:
  // the adapters then get the exact gradient of the loss, which also reads them through every later
  // segment's sink (a detached sink would drop that path and bias their gradient).
  torch::AutoGradMode grad_mode(decoder && torch::GradMode::is_enabled());
  std::vector<torch::Tensor> hidden;  // L x [1, k, C]
  ForwardContext ctx;
  ctx.attn_inputs = &hidden;
  ctx.lora = decoder ? decoder.get() : nullptr;
  base->model->forward_embeddings(base->model->embed_tokens(first.unsqueeze(0)), ctx);
  Memory m;
  m.sink = k;
  const int64_t G = config_.num_kv_heads, D = config_.head_dim;
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    auto& attn = *base->model->layers[i]->as<DecoderLayer>()->self_attn;
    const auto& h = hidden.at(static_cast<size_t>(i));
    const auto* lora = decoder ? &decoder->layer(i) : nullptr;
    auto keys = attn.k_proj(h, lora ? lora->k_proj : nullptr);  // [1, k, G * D]
    auto values = attn.v_proj(h, lora ? lora->v_proj : nullptr);
    m.k.push_back(keys.view({k, G, D}).permute({1, 0, 2}).contiguous());  // [G, k, D]
    m.v.push_back(values.view({k, G, D}).permute({1, 0, 2}).contiguous());
  }
  return m;
}

std::pair<torch::Tensor, torch::Tensor> MemoryCompressorImpl::row_cos_sin(const torch::Tensor& positions,
                                                                          int64_t segment) const {
  const int64_t span = decoder_position(segment, l_);  // the decoder's positions in this segment: [0, span)
  if (options_.memory_rope == RopeKind::none)
    TORCH_CHECK(span <= config_.max_position, "memory_rope = none: segment ", segment, " needs positions up to ", span,
                " but the base model was trained on ", config_.max_position, "; with l = ", l_, " and M = ", M_,
                " a document may have at most ", (config_.max_position - l_ - options_.sink_tokens) / M_ + 1,
                " segments. Use memory_rope = dynamic (or linear, ntk, yarn) for longer documents");
  return decoder_rope_->cos_sin(positions, span);
}

bool MemoryCompressorImpl::reads_shared_memory(CausalLM& base) const { return base->kernels() == Kernels::fused; }

torch::Tensor MemoryCompressorImpl::decode(CausalLM& base, const torch::Tensor& ids,
                                           const std::vector<int64_t>& segment_index, const Memory& memory,
                                           KVCache* cache, bool recompute_layers) {
  TORCH_CHECK(ids.dim() == 2 && ids.size(0) == static_cast<int64_t>(segment_index.size()),
              "memory: decoder expects ids [K, T] with one segment index per row, got ", ids.sizes(), " and ",
              segment_index.size(), " indices");
  TORCH_CHECK(!cache || ids.size(0) == 1, "memory: decoding with a KV cache takes one row");
  const int64_t K = ids.size(0), T = ids.size(1), cached = cache ? cache->length() : 0;
  const auto device = ids.device();
  TORCH_CHECK(memory.k.empty() || memory.sink == options_.sink_tokens, "memory: the memory holds ", memory.sink,
              " sink entries, the compressor expects ", options_.sink_tokens);
  int64_t P = 0;  // memory entries any row sees
  for (auto t : segment_index) P = std::max(P, memory.visible(t, M_));
  TORCH_CHECK(P <= memory.entries(), "memory: a row of segment ",
              *std::max_element(segment_index.begin(), segment_index.end()), " needs ", P, " memory entries, only ",
              memory.entries(), " exist");
  TORCH_CHECK(cached + T <= l_, "memory: ", cached + T, " tokens in one segment exceed segment_len ", l_);

  // RoPE per row: token j of segment t at t*M + j; memory entry p at p (dynamic NTK: per segment span).
  std::vector<torch::Tensor> cos_rows, sin_rows, pcos_rows, psin_rows;
  const bool rope_per_row = decoder_rope_->scaling().type == RopeKind::dynamic;
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  for (int64_t k = 0; k < K; ++k) {
    const int64_t t = segment_index[k];
    auto [c, s] = row_cos_sin(torch::arange(cached, cached + T, opts) + decoder_position(t, 0), t);  // [1, T, D]
    cos_rows.push_back(c), sin_rows.push_back(s);
    if (P > 0 && (rope_per_row || k == 0)) {
      auto [pc, ps] = row_cos_sin(torch::arange(P, opts), t);  // [1, P, D]
      pcos_rows.push_back(pc), psin_rows.push_back(ps);
    }
  }
  ForwardContext ctx;
  ctx.cos = torch::cat(cos_rows), ctx.sin = torch::cat(sin_rows);  // [K, T, D]
  ctx.cache = cache;
  ctx.recompute_layers = recompute_layers;
  ctx.lora = decoder ? decoder.get() : nullptr;  // none: the paper's frozen decoder
  std::vector<AttentionPrefix> prefix;
  const bool shared = P > 0 && !cache && memory.k.front().dim() == 3 && reads_shared_memory(base);
  TORCH_CHECK(memory.route_k.empty() || shared, "memory: a routed memory is read by the fused kernels only");
  if (shared) {
    std::vector<int64_t> visible;
    for (auto t : segment_index) visible.push_back(memory.visible(t, M_));
    // One table for every row unless dynamic NTK gives rows of this chunk different frequencies.
    bool same_rotation = true;
    for (auto t : segment_index) same_rotation = same_rotation && decoder_position(t, l_) <= config_.max_position;
    const bool tables_per_row = rope_per_row && K > 1 && !same_rotation;
    auto pcos = tables_per_row ? torch::cat(pcos_rows) : pcos_rows.front();  // [K or 1, P, D]
    auto psin = tables_per_row ? torch::cat(psin_rows) : psin_rows.front();
    const auto route = memory.route_k.empty() ? RouteEntries{} : route_entries(memory.route_weights, visible, device);
    auto own = default_attention_mask(T, 0, cached, config_.sliding_window, device);  // [T, T] or plain causal
    const auto row_bias =
        row_part_bias(visible, T, own, config_.num_heads, base->model->embed_tokens->weight.options().device(device));
    for (int64_t i = 0; i < config_.num_layers; ++i) {
      AttentionPrefix p{memory.k[i].narrow(-2, 0, P).unsqueeze(0), memory.v[i].narrow(-2, 0, P).unsqueeze(0), pcos,
                        psin};
      p.visible = visible;
      if (!memory.route_k.empty()) {
        p.route_k = memory.route_k[i].narrow(-2, 0, P).unsqueeze(0);
        p.route_v = memory.route_v[i].narrow(-2, 0, P).unsqueeze(0);
        p.route = route;
      }
      p.row_bias = row_bias;
      prefix.push_back(std::move(p));
    }
    ctx.prefix = &prefix;
    if (own.defined()) ctx.mask = own;  // else plain causal
    return base->model->forward_embeddings(base->model->embed_tokens(ids), ctx);  // [K, T, C]
  }
  if (P > 0) {
    auto pcos = torch::cat(pcos_rows), psin = torch::cat(psin_rows);  // [K or 1, P, D]
    const bool per_row = memory.k.front().dim() == 4;  // one memory per row
    TORCH_CHECK(!per_row || memory.k.front().size(0) == K, "memory: a per-row memory has ", memory.k.front().size(0),
                " rows, the decoder ", K);
    for (int64_t i = 0; i < config_.num_layers; ++i) {
      auto k = memory.k[i].narrow(-2, 0, P), v = memory.v[i].narrow(-2, 0, P);  // [K or -, G, P, D]
      prefix.push_back({per_row ? k : k.unsqueeze(0), per_row ? v : v.unsqueeze(0), pcos, psin});
    }
    ctx.prefix = &prefix;
  }
  // Mask: row k sees memory entries [0, t_k M) and its own tokens causally (within a sliding window).
  // Without memory this is the base model's own mask (undefined: plain causal), bit for bit.
  auto own = default_attention_mask(T, 0, cached, config_.sliding_window, device);
  if (P > 0) {
    if (!own.defined()) own = torch::ones({T, T}, torch::TensorOptions().dtype(torch::kBool).device(device)).tril();
    std::vector<torch::Tensor> rows;
    for (int64_t k = 0; k < K; ++k) {
      auto visible = (torch::arange(P, opts) < memory.visible(segment_index[k], M_)).unsqueeze(0).expand({T, P});
      rows.push_back(torch::cat({visible, own}, 1).unsqueeze(0));  // [1, T, P + L + T]
    }
    ctx.mask = torch::stack(rows);  // [K, 1, T, P + L + T]
  } else {
    ctx.mask = own;
  }
  return base->model->forward_embeddings(base->model->embed_tokens(ids), ctx);  // [K, T, C]
}

}  // namespace uio::model
