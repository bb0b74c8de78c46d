// model/rope.h — rotary position embeddings with the base model's frequency scaling (none, linear /
// position interpolation, dynamic NTK, YaRN, llama3). Owns the inverse frequencies and cos/sin tables;
// does not know about attention masks or memory. Dims: B batch, T tokens, H heads, D head dim.
#pragma once

#include <torch/torch.h>

#include "model/config.h"

namespace uio::model {

class Rope {
 public:
  Rope(int64_t head_dim, double theta, RopeScaling scaling, int64_t max_position);

  // cos and sin for `positions` ([T] or [B, T], int64): each [B or 1, T, D] in float32, already
  // multiplied by attention_scaling(). Dynamic NTK chooses its frequencies from max(positions) + 1
  // (the sequence length seen so far), as HF transformers does.
  // `seq_len` > 0 fixes the length dynamic NTK scales for (instead of max(positions) + 1).
  std::pair<torch::Tensor, torch::Tensor> cos_sin(const torch::Tensor& positions, int64_t seq_len = 0) const;

  // Inverse frequencies [D/2] (float32) for a sequence of `seq_len` positions.
  torch::Tensor inv_freq(int64_t seq_len) const;
  double attention_scaling() const { return attention_scaling_; }
  const RopeScaling& scaling() const { return scaling_; }

 private:
  int64_t head_dim_;
  double theta_;
  RopeScaling scaling_;
  int64_t max_position_;
  torch::Tensor inv_freq_;  // [D/2] for every kind but dynamic (whose frequencies depend on length)
  double attention_scaling_ = 1.0;
};

// x * cos + rotate_half(x) * sin, HF's layout (the two halves of D rotate together).
// x: [B, H, T, D]; cos, sin: [B or 1, T, D] (float32; cast to x's dtype here).
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// The same rotation in three kernels instead of seven, for tables prepared once per forward by
// rope_tables(): x * cos + roll(x, D/2) * sin', where sin' is sin with its first half negated (so
// roll's halves take the signs rotate_half gives them). cos, sin': [B or 1, T, D] in x's dtype.
torch::Tensor apply_rope_rolled(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin);
// cos and sin' of apply_rope_rolled from cos_sin()'s tables, cast to `dtype`.
std::pair<torch::Tensor, torch::Tensor> rope_tables(const torch::Tensor& cos, const torch::Tensor& sin,
                                                    torch::ScalarType dtype);

}  // namespace uio::model
