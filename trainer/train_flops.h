// trainer/train_flops.h — what `uio bench train` counts as the useful arithmetic of a training step
// through memory, for TFLOP/s and MFU, and the named model shapes it can run with random weights
// (no weights of 7B/8B models are at hand; the speed does not depend on their values).
//
// Convention (FLOPs of one document of T segments of l tokens, M memory tokens each; N = the base
// model's matrix parameters per token: attention q/k/v/o and MLP gate/up/down of every layer; V x C the
// LM head; H heads of D dims; P_t = t * M memory entries before segment t):
//   encoder forward      2 N (l + M) per segment, plus attention 4 H D (l + M)^2 / 2
//   decoder              forward + backward to its inputs (the base is frozen: no weight gradients):
//                        2 x 2 (N + V C) l per segment, plus attention 3 x 4 H D l (P_t + l / 2)
//   not counted          the encoder backward of the memories in the reservoir (S per loss at most),
//                        LoRA matmuls, transfer head, norms, softmax: MFU is a lower bound
// This is the "4N + causal attention" convention of the eager HF figures in docs/benchmarks.md, with the
// encoder's forward added.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace uio::trainer {

double train_step_flops(const model::ModelConfig& config, int64_t segment_len, int64_t memory_tokens, int64_t segments);

// "smollm2-135m", "llama2-7b", "llama3-8b": the published configurations (throws naming the known ones).
model::ModelConfig named_shape(const std::string& name);
const std::vector<std::string>& shape_names();

}  // namespace uio::trainer
