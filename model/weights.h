// model/weights.h — loading a base model's weights into a CausalLM: from an HF directory
// (config.json + safetensors, sharded or not) or, through model/gguf.h, a GGUF file. Every tensor is
// checked against the config's shapes; names are HF's (the tables translating other formats live at
// the edge, in the format readers). Base weights are frozen (requires_grad = false).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

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
  // The key of that file holding the layer count ("num_hidden_layers", "llama.block_count").
  virtual std::string layer_count_key() const = 0;

  // Every tensor the file holds, by the file's own names, and each one's HF name (none: not a model tensor).
  virtual std::vector<std::string> file_names() const = 0;
  virtual std::optional<std::string> hf_name(const std::string& file_name) const = 0;
  // Tensors the file may hold besides the model's (read by the config, or ignored as transformers does).
  virtual bool ignored(const std::string& file_name) const = 0;
  // The HF-layout shape of a tensor that contains(name), without reading its data.
  virtual std::vector<int64_t> shape(const std::string& name) const = 0;
  // How errors name a tensor: "'name'", or "'blk.0.attn_q.weight' (HF 'model.layers.0...')".
  virtual std::string describe(const std::string& name) const { return "'" + name + "'"; }
};

struct LoadOptions {
  torch::ScalarType dtype = torch::kFloat;  // compute dtype of the base weights
  torch::Device device = torch::kCPU;
  Kernels kernels = Kernels::fused;  // how the forward runs (model/attention.h)
};

struct LoadedModel {
  ModelConfig config;
  CausalLM model{nullptr};
  std::string path;  // what was opened
  std::string format;  // "hf" or "gguf"
};

// Before any layer is built: the config's layer count against the layers the file holds, then every tensor
// the config needs is present with the config's shape. Throws naming the files, key and tensor.
void check_weights_fit_config(const ModelConfig& config, const WeightSource& source);
// After loading: every tensor of the file was used (transformers reports the rest as unused weights; uio
// refuses them, as they mean the config and the weights disagree). Throws naming the file and the first few.
void check_every_tensor_used(const ModelConfig& config, const WeightSource& source);

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
