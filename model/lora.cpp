// model/lora.cpp — LoRA adapters and adapter sets.
#include "model/lora.h"

#include <cmath>
#include <stdexcept>

namespace uio::model {

LoraLinearImpl::LoraLinearImpl(int64_t in_features, int64_t out_features, const LoraOptions& o)
    : scale_(o.alpha / static_cast<double>(o.rank)), dropout_(o.dropout) {
  TORCH_CHECK(o.rank > 0, "lora: rank must be > 0, got ", o.rank);
  TORCH_CHECK(o.dropout >= 0 && o.dropout < 1, "lora: dropout must be in [0, 1), got ", o.dropout);
  // PEFT's init: A ~ kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0 (delta starts at 0).
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  lora_A = register_parameter("lora_A", torch::empty({o.rank, in_features}).uniform_(-bound, bound));
  lora_B = register_parameter("lora_B", torch::zeros({out_features, o.rank}));
}

torch::Tensor LoraLinearImpl::delta(const torch::Tensor& x) {
  auto h = dropout_ > 0 && is_training() ? torch::dropout(x, dropout_, /*train=*/true) : x;
  const auto dt = x.scalar_type();
  h = torch::nn::functional::linear(h, lora_A.to(dt));  // [..., r]
  return torch::nn::functional::linear(h, lora_B.to(dt)) * scale_;  // [..., out]
}

const std::vector<std::string>& lora_target_names() {
  static const std::vector<std::string> names = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return names;
}

std::pair<int64_t, int64_t> projection_shape(const ModelConfig& c, const std::string& name) {
  const int64_t C = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  if (name == "q_proj") return {C, q};
  if (name == "k_proj" || name == "v_proj") return {C, kv};
  if (name == "o_proj") return {q, C};
  if (name == "gate_proj" || name == "up_proj") return {C, c.intermediate_size};
  if (name == "down_proj") return {c.intermediate_size, C};
  throw std::invalid_argument("lora: unknown target '" + name +
                              "' (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
}

LoraSetImpl::LoraSetImpl(const ModelConfig& config, const LoraOptions& options, const torch::Device& device)
    : options_(options) {
  auto list = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_layers; ++i) {
    auto layer = std::make_shared<torch::nn::Module>();
    LayerLora slots;
    for (const auto& target : options.targets) {
      auto [in, out] = projection_shape(config, target);
      auto adapter = layer->register_module(target, LoraLinear(in, out, options));
      LoraLinearImpl* p = adapter.get();
      if (target == "q_proj")
        slots.q_proj = p;
      else if (target == "k_proj")
        slots.k_proj = p;
      else if (target == "v_proj")
        slots.v_proj = p;
      else if (target == "o_proj")
        slots.o_proj = p;
      else if (target == "gate_proj")
        slots.gate_proj = p;
      else if (target == "up_proj")
        slots.up_proj = p;
      else
        slots.down_proj = p;
    }
    list->push_back(layer);
    layers_.push_back(slots);
  }
  to(device);
}

}  // namespace uio::model
