// model/lora.h — low-rank adapters (LoRA) for the base model's linear layers. An adapter set covers
// chosen projections (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj) of every layer;
// several sets live beside ONE frozen copy of the base weights and a forward pass picks one (or none)
// through ForwardContext. Adapter weights are fp32 (master weights) and cast to the compute dtype.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/config.h"

namespace uio::model {

struct LoraOptions {
  int64_t rank = 8;
  double alpha = 16.0;  // update scale = alpha / rank
  double dropout = 0.0;
  std::vector<std::string> targets = {"q_proj", "v_proj"};
};

// One adapter: delta(x) = (alpha / r) * B (A dropout(x)). A random (Kaiming-uniform, as PEFT), B zero.
class LoraLinearImpl : public torch::nn::Module {
 public:
  LoraLinearImpl(int64_t in_features, int64_t out_features, const LoraOptions& options);
  torch::Tensor delta(const torch::Tensor& x);  // [..., in] -> [..., out] in x's dtype
  torch::Tensor lora_A;  // [r, in]
  torch::Tensor lora_B;  // [out, r]
  double scale() const { return scale_; }

 private:
  double scale_, dropout_;
};
TORCH_MODULE(LoraLinear);

// The adapters of one layer; a projection without an adapter is null.
struct LayerLora {
  LoraLinearImpl* q_proj = nullptr;
  LoraLinearImpl* k_proj = nullptr;
  LoraLinearImpl* v_proj = nullptr;
  LoraLinearImpl* o_proj = nullptr;
  LoraLinearImpl* gate_proj = nullptr;
  LoraLinearImpl* up_proj = nullptr;
  LoraLinearImpl* down_proj = nullptr;
};

// An adapter set over every layer. Parameters are named `layers.{i}.{proj}.lora_{A,B}`.
class LoraSetImpl : public torch::nn::Module {
 public:
  LoraSetImpl(const ModelConfig& config, const LoraOptions& options, const torch::Device& device = torch::kCPU);
  const LayerLora& layer(int64_t i) const { return layers_.at(static_cast<size_t>(i)); }
  const LoraOptions& options() const { return options_; }

 private:
  LoraOptions options_;
  std::vector<LayerLora> layers_;
};
TORCH_MODULE(LoraSet);

// Known projection names, and the (in, out) features of one for `config`.
const std::vector<std::string>& lora_target_names();
std::pair<int64_t, int64_t> projection_shape(const ModelConfig& config, const std::string& name);

}  // namespace uio::model
