// model/llama.cpp — the Llama-family forward pass.
#include "model/llama.h"

#include "model/recompute.h"

namespace uio::model {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, const torch::TensorOptions& options) : eps_(eps) {
  weight = register_parameter("weight", new_ones({dim}, options));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x, Kernels kernels) {
  if (kernels == Kernels::fused) return at::rms_norm(x, {weight.size(0)}, weight, eps_);
  // In float32 at least (HF's habit for half types); float64 stays float64 so exactness tests hold.
  auto h = x.to(x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat);
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return weight * h.to(x.scalar_type());
}

MLPImpl::MLPImpl(const ModelConfig& c, const torch::TensorOptions& options) {
  auto linear = [&](int64_t in, int64_t out) { return Linear(in, out, false, options); };
  gate_proj = register_module("gate_proj", linear(c.hidden_size, c.intermediate_size));
  up_proj = register_module("up_proj", linear(c.hidden_size, c.intermediate_size));
  down_proj = register_module("down_proj", linear(c.intermediate_size, c.hidden_size));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x, const LayerLora* lora) {
  if (!lora) return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
  return down_proj(torch::silu(gate_proj(x, lora->gate_proj)) * up_proj(x, lora->up_proj), lora->down_proj);
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, const torch::TensorOptions& options) {
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
  self_attn = register_module("self_attn", Attention(c, options));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
  mlp = register_module("mlp", MLP(c, options));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const AttentionContext& ctx, torch::Tensor* attn_input,
                                        bool stop_after) {
  auto normed = input_layernorm->forward(x, ctx.kernels);
  if (attn_input) *attn_input = normed;
  if (stop_after) return {};
  auto h = x + self_attn(normed, ctx);
  return h + mlp(post_attention_layernorm->forward(h, ctx.kernels), ctx.lora);
}

LlamaModelImpl::LlamaModelImpl(const ModelConfig& c, const torch::TensorOptions& options)
    : config_(c), rope_(c.head_dim, c.rope_theta, c.rope_scaling, c.max_position) {
  embed_tokens = register_module("embed_tokens", Embedding(c.vocab_size, c.hidden_size, options));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(DecoderLayer(c, options));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
}

namespace {

// One layer under activation checkpointing: its inputs are the hidden states and the layer's memory
// prefix (the tensors gradients flow through); everything else the closure keeps by value, since it
// runs again in the backward pass, after this forward has returned.
torch::Tensor recompute_layer(DecoderLayerImpl& layer, const torch::Tensor& h, const AttentionContext& actx) {
  std::vector<torch::Tensor> inputs{h};
  std::optional<AttentionPrefix> prefix;
  if (actx.prefix) prefix = *actx.prefix, inputs.push_back(prefix->k), inputs.push_back(prefix->v);
  const bool route = prefix && prefix->route_k.defined();  // the routed memory gradient flows through these
  if (route) inputs.push_back(prefix->route_k), inputs.push_back(prefix->route_v);
  auto fn = [&layer, cos = *actx.cos, sin = *actx.sin, mask = actx.mask, index = actx.layer, lora = actx.lora,
             kernels = actx.kernels, prefix](const std::vector<torch::Tensor>& in) mutable {
    AttentionContext c;
    c.cos = &cos, c.sin = &sin, c.mask = mask, c.layer = index, c.lora = lora, c.kernels = kernels;
    if (prefix) prefix->k = in[1], prefix->v = in[2], c.prefix = &*prefix;
    if (prefix && prefix->route_k.defined()) prefix->route_k = in[3], prefix->route_v = in[4];
    return std::vector<torch::Tensor>{layer.forward(in[0], c)};
  };
  return recompute_in_backward(fn, inputs)[0];
}

}  // namespace

torch::Tensor LlamaModelImpl::forward_embeddings(const torch::Tensor& x, const ForwardContext& ctx) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == config_.hidden_size, "llama: expected embeddings [B, T, ",
              config_.hidden_size, "], got ", x.sizes());
  const int64_t T = x.size(1);
  const int64_t cached = ctx.cache ? ctx.cache->length() : 0;
  const int64_t prefix = ctx.prefix && !ctx.prefix->empty() ? ctx.prefix->front().k.size(2) : 0;
  TORCH_CHECK(!ctx.prefix || ctx.prefix->empty() || static_cast<int64_t>(ctx.prefix->size()) == config_.num_layers,
              "llama: prefix has ", ctx.prefix ? ctx.prefix->size() : 0, " layers, the model ", config_.num_layers);
  auto positions =
      ctx.positions.defined()
          ? ctx.positions
          : torch::arange(cached, cached + T, torch::TensorOptions().dtype(torch::kInt64).device(x.device()));
  auto [cos, sin] = ctx.cos.defined() ? std::make_pair(ctx.cos, ctx.sin)
                                      : (ctx.rope ? *ctx.rope : rope_).cos_sin(positions);  // [B or 1, T, D]
  if (kernels_ == Kernels::fused) std::tie(cos, sin) = rope_tables(cos, sin, x.scalar_type());  // once, not per layer
  // A shared prefix under the fused kernels is read without a mask over it (model/memory_attention.h).
  const bool shared = prefix > 0 && kernels_ == Kernels::fused && !ctx.prefix->front().visible.empty();
  auto mask = ctx.mask.defined()
                  ? ctx.mask
                  : default_attention_mask(T, shared ? 0 : prefix, cached, config_.sliding_window, x.device());

  AttentionContext actx;
  actx.cos = &cos;
  actx.sin = &sin;
  actx.cache = ctx.cache;
  actx.mask = mask;
  actx.kernels = kernels_;
  TORCH_CHECK(!ctx.recompute_layers || (!ctx.cache && !ctx.attn_inputs),
              "llama: recompute_layers is for training passes without a KV cache or captured attention inputs");
  auto h = x;
  if (ctx.attn_inputs) ctx.attn_inputs->clear();
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    actx.layer = i;
    actx.prefix = prefix > 0 ? &(*ctx.prefix)[i] : nullptr;
    actx.lora = ctx.lora ? &ctx.lora->layer(i) : nullptr;
    torch::Tensor attn_input;
    const bool last = i + 1 == config_.num_layers;
    auto layer = layers[i]->as<DecoderLayer>();
    if (ctx.recompute_layers) {
      h = recompute_layer(*layer, h, actx);
      continue;
    }
    h = layer->forward(h, actx, ctx.attn_inputs ? &attn_input : nullptr, ctx.attn_inputs && last);
    if (ctx.attn_inputs) ctx.attn_inputs->push_back(attn_input.narrow(1, ctx.capture_from, T - ctx.capture_from));
  }
  if (ctx.cache) ctx.cache->advance(T);
  return ctx.attn_inputs ? torch::Tensor() : norm->forward(h, kernels_);
}

CausalLMImpl::CausalLMImpl(const ModelConfig& c, const torch::TensorOptions& options) : config_(c) {
  model = register_module("model", LlamaModel(c, options));
  if (!c.tie_word_embeddings) lm_head = register_module("lm_head", Linear(c.hidden_size, c.vocab_size, false, options));
}

torch::Tensor CausalLMImpl::hidden_states(const torch::Tensor& ids, const ForwardContext& ctx) {
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == torch::kInt64, "llama: expected int64 token ids [B, T], got ",
              ids.sizes(), " ", ids.scalar_type());
  return model->forward_embeddings(model->embed_tokens(ids), ctx);
}

torch::Tensor CausalLMImpl::logits(const torch::Tensor& hidden) {
  return torch::nn::functional::linear(hidden, output_weight());
}

torch::Tensor CausalLMImpl::forward(const torch::Tensor& ids, const ForwardContext& ctx) {
  return logits(hidden_states(ids, ctx));
}

torch::Tensor CausalLMImpl::output_weight() const { return lm_head ? lm_head->weight : model->embed_tokens->weight; }

KVCache CausalLMImpl::make_cache(int64_t batch, int64_t capacity) const {
  const auto& w = model->embed_tokens->weight;
  return KVCache(config_.num_layers, batch, config_.num_kv_heads, capacity, config_.head_dim, w.options());
}

}  // namespace uio::model
