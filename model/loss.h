// model/loss.h — the language-modelling loss of a document read in segments. Every token predicts the
// next one across segment boundaries (the last token of segment t predicts the first of t + 1), so a
// document of n tokens has n - 1 predictions however it is cut. Training (optim/) and evaluation
// (trainer/) both score through here, so they agree on what a loss is.
#pragma once

#include <torch/torch.h>

#include "model/llama.h"

namespace uio::model {

constexpr int64_t kIgnoreTarget = -100;

// Targets [n] of document ids [n]: ids shifted left by one; the last token has none (kIgnoreTarget).
torch::Tensor next_token_targets(const torch::Tensor& ids);

// Summed cross-entropy per row [K] of the base model's LM head over hidden states [K, T, C]
// against targets [K, T] (kIgnoreTarget entries count nothing). Softmax in float32 (float64 for a
// float64 model).
// With the fused kernels (model/attention.h, Kernels) and a frozen LM head this is linear_cross_entropy.
torch::Tensor row_cross_entropy(CausalLM& base, const torch::Tensor& hidden, const torch::Tensor& targets);

// Per-token cross-entropy [N] of LM head `weight` [V, C] (frozen) over hidden states [N, C] against
// targets [N], `block` tokens at a time (0: about 256 MB of float32 logits): the logits of all N
// tokens never exist at once, forward or backward (which recomputes each block's).
torch::Tensor linear_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight,
                                   const torch::Tensor& targets, int64_t block = 0);

}  // namespace uio::model
