// model/attention.h — grouped-query self-attention of one Llama-family layer, through
// at::scaled_dot_product_attention. Besides its own tokens it attends to an optional prefix of extra
// key/value entries (the memory of later stages, already rotated to their own positions) and to the
// KV cache. Owns projections and the attention call; masks are built once per forward by the model.
// Dims: B batch, T tokens, P prefix entries, L cached entries, S = P + L + T keys, C model dim,
// H query heads, G KV heads, D head dim.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/kv_cache.h"
#include "model/linear.h"
#include "model/memory_attention.h"

namespace uio::model {

// How a forward runs: `fused` (the default) uses libtorch's fused ops where they exist (RMSNorm, a
// RoPE of fewer kernels, the LM head and cross-entropy chunked without float32 logits, the memory
// prefix attended once per chunk: model/memory_attention.h); `reference` runs the plain eager formulas
// of the first version, kept for checking the fused path and for before/after benchmarks. Both compute
// the same function; they differ by rounding in half precision and not at all in float64.
enum class Kernels { fused, reference };
Kernels parse_kernels(const std::string& name);  // fused | reference; throws std::invalid_argument
const char* kernels_name(Kernels kernels);

// Extra key/value entries placed before a layer's sequence; every token attends to all of them.
// Batch 1 is broadcast over the batch. When cos/sin are given the keys are rotated here (per batch
// row: rows may use different positions or frequencies); otherwise they are taken as rotated.
struct AttentionPrefix {
  torch::Tensor k;  // [B or 1, G, P, D]
  torch::Tensor v;  // [B or 1, G, P, D]
  torch::Tensor cos, sin;  // [B or 1, P, D] float32, or undefined
  // Set (one count per batch row) when every row reads one memory (batch 1; cos/sin per row or shared)
  // and row b sees only entries [0, visible[b]): with Kernels::fused the attention then runs as
  // shared_prefix_attention (model/memory_attention.h) and needs no mask over the prefix.
  std::vector<int64_t> visible{};
  // Optional gradient routing for that path: same values as k and v, gradients weighted per row.
  torch::Tensor route_k{}, route_v{};  // [1, G, P, D]
  RouteEntries route{};  // which entries each row routes to, with which weight
  torch::Tensor row_bias{};  // row_part_bias() of these rows, made once for every layer
};

// What one attention call sees beyond its input.
struct AttentionContext {
  const torch::Tensor* cos = nullptr;  // [B or 1, T, D] for the tokens' positions
  const torch::Tensor* sin = nullptr;
  const AttentionPrefix* prefix = nullptr;
  KVCache* cache = nullptr;
  int64_t layer = 0;
  const LayerLora* lora = nullptr;  // this layer's adapters of the active set, or none
  // Boolean [T, S] or [B, 1, T, S] (true = may attend); undefined means plain causal over T == S.
  torch::Tensor mask;
  Kernels kernels = Kernels::reference;
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx);  // [B, T, C] -> [B, T, C]

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

// The default mask of a forward over T new tokens after P prefix entries and L cached tokens:
// every token sees the whole prefix, the cached tokens and itself causally, within the sliding window
// when there is one. Undefined when plain causal attention (P = L = 0, no binding window) suffices.
// Built top-left-correct for T != S (SDPA's is_causal would align the diagonal wrongly).
torch::Tensor default_attention_mask(int64_t tokens, int64_t prefix, int64_t cached,
                                     std::optional<int64_t> sliding_window, torch::Device device);

}  // namespace uio::model
