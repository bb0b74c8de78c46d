// model/memory_attention.h — the decoder attention of a chunk of K rows over one shared memory prefix,
// without per-row copies of the memory or a [K, T, P + T] mask (docs/method.md §11). Row b attends to
// memory entries [0, visible[b]) and causally to its own T tokens. The entries every row sees (the
// shared part, [0, min visible)) are attended once for all K*T queries in one mask-free call; the
// rest (the memories of earlier rows of the same chunk, at most (K-1) M entries) and the row's own
// tokens go through one masked call; the two partial attentions are merged by their log-sum-exp, as
// ring attention merges its blocks. The backward runs each part's fused backward with the merged
// output and log-sum-exp, which gives the exact gradient of the whole.
//
// Memory keys come un-rotated with the RoPE tables of the rows; when every row rotates them alike they
// are rotated once, otherwise per row inside the call (so no [K, P] copy outlives a layer).
//
// Gradient routing (optim/estimator.cpp): besides the plain gradient of the memory (the sum over rows,
// for the transfer head) the estimators need, per memory entry e, sum_b w[b, e] * (row b's gradient
// for e) for the encoder. Only the few entries of a row's window or reservoir have w != 0; their
// per-row gradients are recomputed in the backward from the row's queries, output and log-sum-exp over
// those keys alone, and returned as the gradient of `route_k` / `route_v` (same values as k / v).
// Dims: K rows, H query heads, G KV heads, T tokens per row, P memory entries, D head dim.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace uio::model {

// The entries each row routes a gradient to, from the weights w [K, >= P] (float64, CPU) and the rows'
// visible counts: index [K, E] (int64) and weight [K, E] (float64) on `device`, E the most any row
// has, padded with entry 0 and weight 0. Computed once per decoder pass and shared by its layers.
struct RouteEntries {
  torch::Tensor index, weight;
};
RouteEntries route_entries(const torch::Tensor& weights, const std::vector<int64_t>& visible, torch::Device device);

struct SharedMemoryPrefix {
  torch::Tensor k, v;  // [G, P, D]: one memory for every row, keys un-rotated (see cos, sin)
  std::vector<int64_t> visible;  // K entries: row b sees [0, visible[b]) (visible[b] <= P)
  // Optional routing: tensors holding k's and v's values whose gradients are the weighted per-row sums.
  torch::Tensor route_k{}, route_v{};  // [G, P, D] or undefined
  RouteEntries route{};  // route_entries() of the weights w[b, e] (zero where row b does not see e)
  // RoPE of the memory keys (model/rope.h, apply_rope): float32 [1, >= P, D] when every row rotates them
  // the same way (rotated once, read once by all rows), [K, >= P, D] when each row has its own
  // frequencies (dynamic NTK past the base window: rotated per row inside the call, never stored);
  // undefined when k is given rotated.
  torch::Tensor cos{}, sin{};
  // row_part_bias() for these rows, made once by the caller for every layer (undefined: made per call).
  torch::Tensor row_bias{};
};

// The additive mask (0 or -inf, [K, H, T, rows + T] in `options`' dtype) of the second part: row b sees
// the chunk's earlier memories [min visible, visible[b]) and its own tokens under `own_mask` [T, T]
// (undefined: causal). Undefined when every row sees the same memory and plain causal attention fits.
torch::Tensor row_part_bias(const std::vector<int64_t>& visible, int64_t T, const torch::Tensor& own_mask,
                            int64_t heads, const torch::TensorOptions& options);

// Attention output [K, H, T, D] of rotated queries `q` [K, H, T, D] and the rows' own rotated keys and
// values [K, G, T, D]. `own_mask` [T, T] bool (true = may attend, e.g. a sliding window) or undefined
// for plain causal. Computes softmax(q k^T / sqrt(D)) v in float32 accumulation through libtorch's
// fused attention kernels (flash / memory-efficient on CUDA, flash on the CPU).
torch::Tensor shared_prefix_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                      const SharedMemoryPrefix& memory, const torch::Tensor& own_mask);

}  // namespace uio::model
