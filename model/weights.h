// model/weights.h — loading a base model's weights into a CausalLM: from an HF directory
// (config.json + safetensors, sharded or not) or, through model/gguf.h, a GGUF file. Every tensor is
// checked against the config's shapes; names are HF's (the tables translating other formats live at
// the edge, in the format readers). Base weights are frozen (requires_grad = false).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "model/config.h"
#include "model/llama.h"

namespace uio::model {

// Where tensors come from: answers by HF tensor name.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool contains(const std::string& name) const = 0;
  // The tensor on CPU, in whatever dtype the file holds (or dequantised); shape as HF lays it out.
  virtual torch::Tensor get(const std::string& name) const = 0;
  // The file a tensor lives in, or where it was looked for when absent (for error messages).
  virtual std::string file_of(const std::string& name) const = 0;
  // What describes the architecture (config.json, the .gguf), for error messages.
  virtual std::string config_file() const = 0;
};

struct LoadOptions {
  torch::ScalarType dtype = torch::kFloat;  // compute dtype of the base weights
  torch::Device device = torch::kCPU;
};

struct LoadedModel {
  ModelConfig config;
  CausalLM model{nullptr};
  std::string path;    // what was opened
  std::string format;  // "hf" or "gguf"
};

// Copies (or, on CPU in the file's own dtype, aliases without copying) every parameter of `model`
// from `source`; throws naming the file, the tensor, the found and the expected shape.
void load_weights(CausalLM& model, const WeightSource& source, const LoadOptions& options);

// Opens an HF model directory or a .gguf file. The model is in eval mode with frozen weights.
LoadedModel load_model(const std::string& path, const LoadOptions& options = {});

// The architecture alone (no weights read): for `uio info`.
ModelConfig load_model_config(const std::string& path);

torch::ScalarType parse_dtype(const std::string& name);  // float32 | bfloat16 | float16 (+ fp32/bf16/fp16)
std::string dtype_name(torch::ScalarType dtype);

}  // namespace uio::model
