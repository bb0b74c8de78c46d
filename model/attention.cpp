// model/attention.cpp — GQA attention with prefix entries and a KV cache over SDPA.
#include "model/attention.h"

#include <stdexcept>

#include "model/rope.h"

namespace uio::model {

Kernels parse_kernels(const std::string& name) {
  if (name == "fused") return Kernels::fused;
  if (name == "reference") return Kernels::reference;
  throw std::invalid_argument("kernels '" + name + "' is not one of fused, reference");
}

const char* kernels_name(Kernels kernels) { return kernels == Kernels::fused ? "fused" : "reference"; }

namespace {

// The memory prefix read once for all rows (model/memory_attention.h): no per-row copy, no mask over it.
torch::Tensor shared_prefix(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                            const AttentionPrefix& p, const torch::Tensor& own_mask) {
  TORCH_CHECK(p.k.dim() == 4 && p.k.size(0) == 1, "attention: a shared memory prefix has batch 1, got keys ",
              p.k.sizes());
  SharedMemoryPrefix m;
  m.k = p.k.to(k.scalar_type()).squeeze(0), m.v = p.v.to(v.scalar_type()).squeeze(0), m.visible = p.visible;
  m.cos = p.cos, m.sin = p.sin, m.row_bias = p.row_bias;
  if (p.route_k.defined())
    m.route_k = p.route_k.to(k.scalar_type()).squeeze(0), m.route_v = p.route_v.to(v.scalar_type()).squeeze(0),
    m.route = p.route;
  return shared_prefix_attention(q, k, v, m, own_mask);  // [B, H, T, D]
}

}  // namespace

AttentionImpl::AttentionImpl(const ModelConfig& c, const torch::TensorOptions& options)
    : num_heads_(c.num_heads), num_kv_heads_(c.num_kv_heads), head_dim_(c.head_dim) {
  auto linear = [&](int64_t in, int64_t out, bool bias) { return Linear(in, out, bias, options); };
  q_proj = register_module("q_proj", linear(c.hidden_size, c.num_heads * c.head_dim, c.attention_bias));
  k_proj = register_module("k_proj", linear(c.hidden_size, c.num_kv_heads * c.head_dim, c.attention_bias));
  v_proj = register_module("v_proj", linear(c.hidden_size, c.num_kv_heads * c.head_dim, c.attention_bias));
  o_proj = register_module("o_proj", linear(c.num_heads * c.head_dim, c.hidden_size, c.attention_output_bias));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(ctx.cos && ctx.sin, "attention: cos/sin tables are required");
  const int64_t B = x.size(0), T = x.size(1);
  auto* lora = ctx.lora;
  auto q =
      q_proj(x, lora ? lora->q_proj : nullptr).view({B, T, num_heads_, head_dim_}).transpose(1, 2);  // [B, H, T, D]
  auto k =
      k_proj(x, lora ? lora->k_proj : nullptr).view({B, T, num_kv_heads_, head_dim_}).transpose(1, 2);  // [B, G, T, D]
  auto v =
      v_proj(x, lora ? lora->v_proj : nullptr).view({B, T, num_kv_heads_, head_dim_}).transpose(1, 2);  // [B, G, T, D]
  if (ctx.kernels == Kernels::fused) {  // tables from rope_tables(), prepared once per forward
    q = apply_rope_rolled(q, *ctx.cos, *ctx.sin);
    k = apply_rope_rolled(k, *ctx.cos, *ctx.sin);
  } else {
    q = apply_rope(q, *ctx.cos, *ctx.sin);
    k = apply_rope(k, *ctx.cos, *ctx.sin);
  }

  // [B, H, T, D] attention output -> [B, T, C] through o_proj.
  auto project = [&](const torch::Tensor& y) {
    return o_proj(y.transpose(1, 2).reshape({B, T, num_heads_ * head_dim_}), lora ? lora->o_proj : nullptr);
  };
  if (ctx.cache) std::tie(k, v) = ctx.cache->append(ctx.layer, k, v);  // [B, G, L + T, D]
  if (ctx.prefix && !ctx.prefix->visible.empty() && ctx.kernels == Kernels::fused && !ctx.cache)
    return project(shared_prefix(q, k, v, *ctx.prefix, ctx.mask));
  if (ctx.prefix) {
    const auto& p = *ctx.prefix;
    TORCH_CHECK(p.k.dim() == 4 && (p.k.size(0) == B || p.k.size(0) == 1) && p.k.size(1) == num_kv_heads_ &&
                    p.k.size(3) == head_dim_ && p.v.sizes() == p.k.sizes(),
                "attention: prefix keys/values must be [", B, " or 1, ", num_kv_heads_, ", P, ", head_dim_, "], got ",
                p.k.sizes(), " and ", p.v.sizes());
    auto pk = p.k.to(k.scalar_type());
    if (p.cos.defined()) pk = apply_rope(pk, p.cos, p.sin);  // [B or 1, G, P, D]
    const int64_t P = pk.size(2);
    k = torch::cat({pk.expand({B, num_kv_heads_, P, head_dim_}), k}, 2);  // [B, G, S, D]
    v = torch::cat({p.v.to(v.scalar_type()).expand({B, num_kv_heads_, P, head_dim_}), v}, 2);
  }
  const bool causal = !ctx.mask.defined();
  TORCH_CHECK(!causal || k.size(2) == T, "attention: ", k.size(2), " keys for ", T,
              " queries need an explicit mask (see default_attention_mask)");
  auto y =
      at::scaled_dot_product_attention(q, k, v, ctx.mask.defined() ? std::optional<at::Tensor>(ctx.mask) : std::nullopt,
                                       /*dropout_p=*/0.0, /*is_causal=*/causal, /*scale=*/std::nullopt,
                                       /*enable_gqa=*/num_heads_ != num_kv_heads_);  // [B, H, T, D]
  return project(y);
}

torch::Tensor default_attention_mask(int64_t tokens, int64_t prefix, int64_t cached,
                                     std::optional<int64_t> sliding_window, torch::Device device) {
  const int64_t own = cached + tokens;  // the sequence's own keys: cached then new
  const bool window_binds = sliding_window && *sliding_window < own;
  if (prefix == 0 && cached == 0 && !window_binds) return {};
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  auto query_pos = torch::arange(cached, own, opts).unsqueeze(1);  // [T, 1] position within the sequence
  auto key_pos = torch::arange(0, own, opts).unsqueeze(0);  // [1, L + T]
  auto allowed = key_pos <= query_pos;  // [T, L + T]
  if (sliding_window) allowed = allowed.logical_and(query_pos - key_pos < *sliding_window);
  if (prefix > 0) {
    auto memory = torch::ones({tokens, prefix}, opts.dtype(torch::kBool));
    allowed = torch::cat({memory, allowed}, 1);  // [T, P + L + T]
  }
  return allowed;
}

}  // namespace uio::model
