// model/weights.cpp — base weights into a CausalLM, checked against the config.
#include "model/weights.h"

#include <algorithm>
#include <filesystem>
#include <set>
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
  std::string layer_count_key() const override { return "num_hidden_layers"; }
  std::vector<std::string> file_names() const override { return files_.names(); }
  std::optional<std::string> hf_name(const std::string& file_name) const override { return file_name; }
  // Checkpoints saved before transformers 4.31 hold RoPE buffers; transformers ignores them on load too.
  bool ignored(const std::string& file_name) const override {
    const std::string suffix = "rotary_emb.inv_freq";
    return file_name.size() >= suffix.size() &&
           file_name.compare(file_name.size() - suffix.size(), suffix.size(), suffix) == 0;
  }
  std::vector<int64_t> shape(const std::string& name) const override { return files_.info(name).shape; }

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
  std::string layer_count_key() const override { return config_.architecture + ".block_count"; }
  std::vector<std::string> file_names() const override {
    std::vector<std::string> out;
    for (const auto& t : file_.tensors()) out.push_back(t.name);
    return out;
  }
  std::optional<std::string> hf_name(const std::string& file_name) const override {
    return hf_name_from_gguf(file_name);
  }
  // Llama-3 RoPE factors: config_from_gguf reads them.
  bool ignored(const std::string& file_name) const override { return file_name == "rope_freqs.weight"; }
  std::vector<int64_t> shape(const std::string& name) const override {
    return file_.tensor_info(*gguf_name_from_hf(name)).shape();
  }
  std::string describe(const std::string& name) const override {
    const auto gguf = gguf_name_from_hf(name);
    return gguf ? "'" + *gguf + "' (HF '" + name + "')" : "'" + name + "'";
  }

 private:
  const format::GgufFile& file_;
  const ModelConfig& config_;
};

bool is_gguf_path(const std::string& path) {
  return fs::path(path).extension() == ".gguf" && fs::is_regular_file(path);
}

}  // namespace

void check_weights_fit_config(const ModelConfig& config, const WeightSource& source) {
  // Layers the file holds: one past the highest "model.layers.<i>." index.
  const std::string prefix = "model.layers.";
  int64_t file_layers = 0;
  for (const auto& file_name : source.file_names()) {
    const auto hf = source.hf_name(file_name);
    if (!hf || hf->compare(0, prefix.size(), prefix) != 0) continue;
    const auto end = hf->find('.', prefix.size());
    const std::string digits =
        hf->substr(prefix.size(), end == std::string::npos ? std::string::npos : end - prefix.size());
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    file_layers = std::max<int64_t>(file_layers, std::stoll(digits) + 1);
  }
  if (config.num_layers > file_layers)
    throw std::runtime_error(
        source.config_file() + ": " + source.layer_count_key() + " is " + std::to_string(config.num_layers) + ", but " +
        source.file_of(prefix + "0.input_layernorm.weight") + " holds tensors of only " + std::to_string(file_layers) +
        " layers" +
        (file_layers > 0 ? " (model.layers.0 .. model.layers." + std::to_string(file_layers - 1) + ")" : "") +
        "; the config does not describe these weights");
  // The count is now bounded by the file, so listing the config's tensors is cheap.
  for (const auto& name : hf_tensor_names(config)) {
    const auto expected = hf_tensor_shape(config, name);
    if (!source.contains(name))
      throw std::runtime_error(source.file_of(name) + ": missing tensor " + source.describe(name) + " (" +
                               source.config_file() + " describes a model that needs it, shape " + shape_str(expected) +
                               ")");
    const auto found = source.shape(name);
    if (found != expected)
      throw std::runtime_error(source.file_of(name) + ": tensor " + source.describe(name) + " has shape " +
                               shape_str(found) + ", " + fs::path(source.config_file()).filename().string() +
                               " expects " + shape_str(expected));
  }
}

void check_every_tensor_used(const ModelConfig& config, const WeightSource& source) {
  const auto needed = hf_tensor_names(config);
  const std::set<std::string> used(needed.begin(), needed.end());
  std::vector<std::string> unused;
  for (const auto& file_name : source.file_names()) {
    if (source.ignored(file_name)) continue;
    const auto hf = source.hf_name(file_name);
    // A tied model may still carry lm_head.weight; transformers loads it into the shared embedding.
    if (hf && (used.count(*hf) || (config.tie_word_embeddings && *hf == "lm_head.weight"))) continue;
    unused.push_back(file_name);
  }
  if (unused.empty()) return;
  std::string listed;
  for (size_t i = 0; i < unused.size() && i < 4; ++i) listed += (i ? ", '" : "'") + unused[i] + "'";
  if (unused.size() > 4) listed += " and " + std::to_string(unused.size() - 4) + " more";
  const auto first = source.hf_name(unused.front());
  throw std::runtime_error((first && source.contains(*first) ? source.file_of(*first) : source.config_file()) + ": " +
                           std::to_string(unused.size()) + " tensors are not used by the model " +
                           source.config_file() + " describes (" + source.layer_count_key() + " = " +
                           std::to_string(config.num_layers) +
                           ", tie_word_embeddings = " + (config.tie_word_embeddings ? "true" : "false") +
                           ", attention_bias = " + (config.attention_bias ? "true" : "false") + "): " + listed +
                           "; the config and the weights disagree (use the config the weights were saved with)");
}

void load_weights(CausalLM& model, const WeightSource& source, const LoadOptions& options) {
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& param = item.value();
    if (!source.contains(name))
      throw std::runtime_error(source.file_of(name) + ": missing tensor '" + name + "' (" + source.config_file() +
                               " describes a model that needs it, shape " + shape_str(param.sizes()) + ")");
    auto t = source.get(name);
    if (t.sizes() != param.sizes())
      throw std::runtime_error(source.file_of(name) + ": tensor '" + name + "' has shape " + shape_str(t.sizes()) +
                               ", " + fs::path(source.config_file()).filename().string() + " expects " +
                               shape_str(param.sizes()));
    if (!t.is_floating_point())
      throw std::runtime_error(source.file_of(name) + ": tensor '" + name + "' has dtype " +
                               std::string(c10::toString(t.scalar_type())) + ", expected a floating-point type");
    // Same dtype on CPU: the parameter aliases the file's mapped bytes (no second copy).
    auto value =
        (t.scalar_type() == options.dtype && options.device.is_cpu()) ? t : t.to(options.device, options.dtype);
    param.set_data(value);
    param.set_requires_grad(false);
  }
  model->eval();
}

ModelConfig load_model_config(const std::string& path) {
  if (fs::is_directory(path)) return load_hf_config((fs::path(path) / "config.json").string());
  if (is_gguf_path(path)) return config_from_gguf(format::GgufFile(path));
  if (!fs::exists(path))
    throw std::runtime_error(path + ": no such file or directory (expected an HF model directory or a .gguf file)");
  throw std::runtime_error(path + ": not a model (expected an HF model directory with config.json, or a .gguf file)");
}

LoadedModel load_model(const std::string& path, const LoadOptions& options) {
  LoadedModel out;
  out.path = path;
  out.config = load_model_config(path);
  auto load = [&](const WeightSource& source) {
    check_weights_fit_config(out.config, source);
    // Built with placeholders (the meta-device request): no storage until the file's tensors arrive.
    out.model = CausalLM(out.config, torch::TensorOptions().device(torch::kMeta).dtype(options.dtype));
    load_weights(out.model, source, options);
    check_every_tensor_used(out.config, source);
    out.model->set_kernels(options.kernels);
  };
  if (is_gguf_path(path)) {
    out.format = "gguf";
    format::GgufFile file(path);
    load(GgufSource(file, out.config));
  } else {
    out.format = "hf";
    load(HfDirectorySource(path));
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
