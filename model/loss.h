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
torch::Tensor row_cross_entropy(CausalLM& base, const torch::Tensor& hidden, const torch::Tensor& targets);

}  // namespace uio::model
