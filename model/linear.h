// model/linear.h — the base model's linear layer and token embedding, with parameters created in a
// chosen dtype/device: random init (normal, std 0.02, as HF initialises Llama) on a real device, or
// (asked for with the meta device) a one-element CPU placeholder expanded to the shape, for weights a
// file supplies right after (libtorch cannot swap a meta parameter's data for a real tensor).
#pragma once

#include <torch/torch.h>

#include "model/lora.h"

namespace uio::model {

// New parameter storage: normal(0, std) on a real device; a placeholder for a meta `options`.
torch::Tensor new_weight(c10::IntArrayRef shape, const torch::TensorOptions& options, double std = 0.02);
// Ones (RMSNorm's init), or a placeholder for a meta `options`.
torch::Tensor new_ones(c10::IntArrayRef shape, const torch::TensorOptions& options);

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias, const torch::TensorOptions& options);
  // [..., in] -> [..., out]; with `lora`, plus that adapter's low-rank update.
  torch::Tensor forward(const torch::Tensor& x, LoraLinearImpl* lora = nullptr);
  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;  // [out] or undefined
};
TORCH_MODULE(Linear);

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t dim, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& ids);  // [B, T] -> [B, T, C]
  torch::Tensor weight;  // [V, C]
};
TORCH_MODULE(Embedding);

}  // namespace uio::model
