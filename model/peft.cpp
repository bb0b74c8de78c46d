// model/peft.cpp — PEFT LoRA adapter directories.
#include "model/peft.h"

#include <filesystem>
#include <regex>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/format/atomic_file.h"
#include "data/format/safetensors.h"
#include "data/format/json_file.h"

namespace uio::model {
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

// The module that holds each projection in HF's Llama-family layers.
std::string parent_of(const std::string& proj) {
  if (proj == "q_proj" || proj == "k_proj" || proj == "v_proj" || proj == "o_proj") return "self_attn";
  if (proj == "gate_proj" || proj == "up_proj" || proj == "down_proj") return "mlp";
  throw std::invalid_argument("peft: unknown projection '" + proj + "'");
}

}  // namespace

std::string peft_tensor_name(const std::string& uio_name) {
  static const std::regex pattern(R"(layers\.(\d+)\.(\w+)\.lora_([AB]))");
  std::smatch m;
  if (!std::regex_match(uio_name, m, pattern))
    throw std::invalid_argument("peft: '" + uio_name + "' is not an adapter tensor name (layers.I.PROJ.lora_A|B)");
  return "base_model.model.model.layers." + m[1].str() + "." + parent_of(m[2].str()) + "." + m[2].str() + ".lora_" +
         m[3].str() + ".weight";
}

std::string uio_tensor_name(const std::string& peft_name) {
  static const std::regex pattern(
      R"(base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight)");
  std::smatch m;
  if (!std::regex_match(peft_name, m, pattern) || parent_of(m[3].str()) != m[2].str())
    throw std::invalid_argument("peft: tensor '" + peft_name +
                                "' is not a LoRA weight of a Llama-family layer "
                                "(base_model.model.model.layers.I.self_attn|mlp.PROJ.lora_A|B.weight)");
  return "layers." + m[1].str() + "." + m[3].str() + ".lora_" + m[4].str();
}

void write_peft_adapter(const std::string& dir, const std::map<std::string, torch::Tensor>& tensors,
                        const LoraOptions& options, const std::string& base_model) {
  fs::create_directories(dir);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [name, t] : tensors) out.emplace_back(peft_tensor_name(name), t.detach().to(torch::kFloat));
  format::write_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), out, {{"format", "pt"}});
  const Json config = {{"peft_type", "LORA"},
                       {"task_type", "CAUSAL_LM"},
                       {"base_model_name_or_path", base_model},
                       {"r", options.rank},
                       {"lora_alpha", options.alpha},
                       {"lora_dropout", options.dropout},
                       {"target_modules", options.targets},
                       {"bias", "none"},
                       {"fan_in_fan_out", false},
                       {"inference_mode", true},
                       {"init_lora_weights", true},
                       {"use_rslora", false},
                       {"use_dora", false},
                       {"modules_to_save", nullptr}};
  format::write_file_atomic((fs::path(dir) / "adapter_config.json").string(), config.dump(2) + "\n");
}

PeftAdapter read_peft_adapter(const std::string& dir) {
  const auto config_path = (fs::path(dir) / "adapter_config.json").string();
  Json j;
  try {
    j = format::read_json_file(config_path);
  } catch (const format::FormatError& e) {
    throw std::runtime_error(std::string(e.what()) + "; expected a PEFT adapter directory");
  }
  PeftAdapter out;
  try {
    if (j.value("peft_type", std::string()) != "LORA")
      throw std::runtime_error(config_path + ": peft_type is " + j.value("peft_type", std::string("missing")) +
                               ", uio reads LORA adapters only");
    if (j.value("use_rslora", false) || j.value("use_dora", false))
      throw std::runtime_error(config_path + ": rsLoRA and DoRA adapters are not supported");
    out.options.rank = j.at("r").get<int64_t>();
    out.options.alpha = j.at("lora_alpha").get<double>();
    out.options.dropout = j.value("lora_dropout", 0.0);
    out.options.targets = j.at("target_modules").get<std::vector<std::string>>();
  } catch (const Json::exception& e) {
    throw std::runtime_error(config_path + ": missing or wrongly typed key (" + e.what() + ")");
  }
  format::SafetensorsFile weights((fs::path(dir) / "adapter_model.safetensors").string());
  for (const auto& info : weights.tensors()) {
    try {
      out.tensors[uio_tensor_name(info.name)] = weights.tensor(info.name);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(weights.path() + ": " + e.what());
    }
  }
  return out;
}

}  // namespace uio::model
