// model/linear.cpp — linear layer and embedding over explicitly created parameters.
#include "model/linear.h"

namespace uio::model {

namespace {
torch::Tensor placeholder(c10::IntArrayRef shape, const torch::TensorOptions& options) {
  return torch::zeros({1}, options.device(torch::kCPU)).expand(shape);
}
}  // namespace

torch::Tensor new_weight(c10::IntArrayRef shape, const torch::TensorOptions& options, double std) {
  if (options.device().is_meta()) return placeholder(shape, options);
  return torch::randn(shape, options) * std;
}

torch::Tensor new_ones(c10::IntArrayRef shape, const torch::TensorOptions& options) {
  if (options.device().is_meta()) return placeholder(shape, options);
  return torch::ones(shape, options);
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool has_bias, const torch::TensorOptions& options) {
  weight = register_parameter("weight", new_weight({out_features, in_features}, options));
  if (has_bias) bias = register_parameter("bias", new_weight({out_features}, options));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x, LoraLinearImpl* lora) {
  auto y = torch::nn::functional::linear(x, weight, bias);
  return lora ? y + lora->delta(x) : y;
}

EmbeddingImpl::EmbeddingImpl(int64_t num_embeddings, int64_t dim, const torch::TensorOptions& options) {
  weight = register_parameter("weight", new_weight({num_embeddings, dim}, options));
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) { return torch::embedding(weight, ids); }

}  // namespace uio::model
