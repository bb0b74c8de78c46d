// model/weights.cpp — base weights into a CausalLM, checked against the config.
#include "model/weights.h"

#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "data/format/gguf.h"
#include "model/gguf_names.h"
#include "data/format/safetensors.h"

namespace uio::model {
namespace fs = std::filesystem;

namespace {

std::string shape_str(c10::IntArrayRef s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  return o.str() + "]";
}

class HfDirectorySource : public WeightSource {
 public:
  explicit HfDirectorySource(const std::string& dir) : dir_(dir), files_(dir) {}
  bool contains(const std::string& name) const override { return files_.contains(name); }
  torch::Tensor get(const std::string& name) const override { return files_.tensor(name); }
  std::string file_of(const std::string& name) const override {
    if (files_.contains(name)) return files_.file_of(name);
    const auto index = fs::path(dir_) / "model.safetensors.index.json";
    return (fs::exists(index) ? index : fs::path(dir_) / "model.safetensors").string();
  }
  std::string config_file() const override { return (fs::path(dir_) / "config.json").string(); }

 private:
  std::string dir_;
  format::SafetensorsDirectory files_;
};

// A .gguf file: llama.cpp names translated to HF's, quantised types dequantised, Q/K rows restored.
class GgufSource : public WeightSource {
 public:
  GgufSource(const format::GgufFile& file, const ModelConfig& config) : file_(file), config_(config) {}
  bool contains(const std::string& name) const override {
    auto gguf = gguf_name_from_hf(name);
    return gguf && file_.has_tensor(*gguf);
  }
  torch::Tensor get(const std::string& name) const override {
    return load_gguf_tensor_as_hf(file_, name, config_, torch::kFloat);
  }
  std::string file_of(const std::string&) const override { return file_.path(); }
  std::string config_file() const override { return file_.path(); }

 private:
  const format::GgufFile& file_;
  const ModelConfig& config_;
};

bool is_gguf_path(const std::string& path) {
  return fs::path(path).extension() == ".gguf" && fs::is_regular_file(path);
}

}  // namespace

void load_weights(CausalLM& model, const WeightSource& source, const LoadOptions& options) {
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& param = item.value();
    if (!source.contains(name))
      throw std::runtime_error(source.file_of(name) + ": missing tensor '" + name + "' (" +
                               source.config_file() + " describes a model that needs it, shape " +
                               shape_str(param.sizes()) + ")");
    auto t = source.get(name);
    if (t.sizes() != param.sizes())
      throw std::runtime_error(source.file_of(name) + ": tensor '" + name + "' has shape " + shape_str(t.sizes()) +
                               ", " + fs::path(source.config_file()).filename().string() + " expects " +
                               shape_str(param.sizes()));
    if (!t.is_floating_point())
      throw std::runtime_error(source.file_of(name) + ": tensor '" + name + "' has dtype " +
                               std::string(c10::toString(t.scalar_type())) + ", expected a floating-point type");
    // Same dtype on CPU: the parameter aliases the file's mapped bytes (no second copy).
    auto value = (t.scalar_type() == options.dtype && options.device.is_cpu()) ? t : t.to(options.device, options.dtype);
    param.set_data(value);
    param.set_requires_grad(false);
  }
  model->eval();
}

ModelConfig load_model_config(const std::string& path) {
  if (fs::is_directory(path)) return load_hf_config((fs::path(path) / "config.json").string());
  if (is_gguf_path(path)) return config_from_gguf(format::GgufFile(path));
  if (!fs::exists(path)) throw std::runtime_error(path + ": no such file or directory (expected an HF model directory or a .gguf file)");
  throw std::runtime_error(path + ": not a model (expected an HF model directory with config.json, or a .gguf file)");
}

LoadedModel load_model(const std::string& path, const LoadOptions& options) {
  LoadedModel out;
  out.path = path;
  out.config = load_model_config(path);
  // Built with placeholders (the meta-device request): no storage until the file's tensors arrive.
  out.model = CausalLM(out.config, torch::TensorOptions().device(torch::kMeta).dtype(options.dtype));
  if (is_gguf_path(path)) {
    out.format = "gguf";
    format::GgufFile file(path);
    load_weights(out.model, GgufSource(file, out.config), options);
  } else {
    out.format = "hf";
    load_weights(out.model, HfDirectorySource(path), options);
  }
  return out;
}

torch::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "float") return torch::kFloat;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half") return torch::kHalf;
  if (name == "float64" || name == "fp64" || name == "double") return torch::kDouble;
  throw std::invalid_argument("unknown dtype '" + name + "' (expected float32, bfloat16, float16 or float64)");
}

std::string dtype_name(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kHalf: return "float16";
    case torch::kDouble: return "float64";
    default: return c10::toString(dtype);
  }
}

}  // namespace uio::model
