// model/recompute.h — activation checkpointing: run a piece of the forward pass without keeping its
// activations, and run it again inside the backward pass to get its gradients. Memory for compute:
// only the piece's inputs are kept. Owns the autograd plumbing, not the choice of what to recompute
// (the model's forward decides per layer; model/llama.h, ForwardContext::recompute_layers).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <vector>

namespace uio::model {

using RecomputeFn = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;

// Returns fn(inputs), computed without a graph; in the backward pass fn runs again on the saved inputs
// with autograd on, and its gradients flow to `inputs` and to every parameter fn uses. The default
// random generator of the inputs' device is restored before the second run, so dropout draws repeat.
// Gradients reach parameters inside fn through the second run, so at least one input must require
// grad for the piece to be recomputed; when none does (or grad mode is off) this is plain fn(inputs),
// graph and all, which is always correct.
std::vector<torch::Tensor> recompute_in_backward(const RecomputeFn& fn, const std::vector<torch::Tensor>& inputs);

}  // namespace uio::model
