// model/memory_io.cpp — memory compressor directories.
#include "model/memory_io.h"

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "model/safetensors.h"

namespace uio::model {
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

Json lora_json(const LoraOptions& o) {
  return {{"rank", o.rank}, {"alpha", o.alpha}, {"dropout", o.dropout}, {"targets", o.targets}};
}

LoraOptions lora_from_json(const Json& j, const std::string& file, const std::string& key) {
  try {
    return {j.at("rank").get<int64_t>(), j.at("alpha").get<double>(), j.at("dropout").get<double>(),
            j.at("targets").get<std::vector<std::string>>()};
  } catch (const Json::exception& e) {
    throw std::runtime_error(file + ": key '" + key + "' is malformed (" + e.what() + ")");
  }
}

}  // namespace

BaseIdentity identify(const std::string& path, const ModelConfig& c) {
  return {path, c.architecture, c.num_layers, c.hidden_size, c.vocab_size, c.num_kv_heads, c.head_dim};
}

void save_memory(const std::string& dir, MemoryCompressor& compressor, const BaseIdentity& base) {
  fs::create_directories(dir);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : compressor->named_parameters()) tensors.emplace_back(item.key(), item.value().detach());
  write_safetensors((fs::path(dir) / "uio_memory.safetensors").string(), tensors, {{"format", "uio-memory"}});
  const auto& o = compressor->options();
  Json j = {{"format", "uio-memory"},
            {"version", 1},
            {"segment_len", o.segment_len},
            {"num_memory_tokens", o.num_memory_tokens},
            {"memory_rope", o.memory_rope},
            {"memory_rope_factor", o.memory_rope_factor},
            {"encoder_lora", lora_json(o.encoder_lora)},
            {"transfer_lora", lora_json(o.transfer_lora)},
            {"base_model",
             {{"path", base.path}, {"architecture", base.architecture}, {"num_layers", base.num_layers},
              {"hidden_size", base.hidden_size}, {"vocab_size", base.vocab_size},
              {"num_kv_heads", base.num_kv_heads}, {"head_dim", base.head_dim}}}};
  const auto path = fs::path(dir) / "uio_config.json", tmp = fs::path(dir) / "uio_config.json.tmp";
  std::ofstream(tmp) << j.dump(2) << "\n";
  fs::rename(tmp, path);
}

LoadedMemory load_memory(const std::string& dir, const ModelConfig& config, const torch::Device& device) {
  const auto config_path = (fs::path(dir) / "uio_config.json").string();
  std::ifstream in(config_path);
  if (!in) throw std::runtime_error(config_path + ": cannot open; --memory expects a directory written by uio (a "
                                    "checkpoint or an export) holding uio_config.json and uio_memory.safetensors");
  Json j;
  try {
    in >> j;
  } catch (const Json::exception& e) {
    throw std::runtime_error(config_path + ": not valid JSON (" + e.what() + ")");
  }
  LoadedMemory out;
  try {
    auto& o = out.options;
    o.segment_len = j.at("segment_len").get<int64_t>();
    o.num_memory_tokens = j.at("num_memory_tokens").get<int64_t>();
    o.memory_rope = j.at("memory_rope").get<std::string>();
    o.memory_rope_factor = j.at("memory_rope_factor").get<double>();
    const auto& b = j.at("base_model");
    out.base = {b.at("path").get<std::string>(), b.at("architecture").get<std::string>(),
                b.at("num_layers").get<int64_t>(), b.at("hidden_size").get<int64_t>(),
                b.at("vocab_size").get<int64_t>(), b.at("num_kv_heads").get<int64_t>(), b.at("head_dim").get<int64_t>()};
  } catch (const Json::exception& e) {
    throw std::runtime_error(config_path + ": missing or wrongly typed key (" + e.what() + ")");
  }
  out.options.encoder_lora = lora_from_json(j.at("encoder_lora"), config_path, "encoder_lora");
  out.options.transfer_lora = lora_from_json(j.at("transfer_lora"), config_path, "transfer_lora");
  const auto want = identify(out.base.path, config);
  auto mismatch = [&](const char* key, int64_t have, int64_t need) {
    if (have != need)
      throw std::runtime_error(config_path + ": the compressor was trained for a base model with " + key + " = " +
                               std::to_string(have) + " (" + out.base.path + "), this model has " +
                               std::to_string(need) + "; pass the base model it was trained on");
  };
  mismatch("num_layers", out.base.num_layers, want.num_layers);
  mismatch("hidden_size", out.base.hidden_size, want.hidden_size);
  mismatch("vocab_size", out.base.vocab_size, want.vocab_size);
  mismatch("num_kv_heads", out.base.num_kv_heads, want.num_kv_heads);
  mismatch("head_dim", out.base.head_dim, want.head_dim);

  out.compressor = MemoryCompressor(config, out.options, torch::zeros({config.hidden_size}, device));
  SafetensorsFile weights((fs::path(dir) / "uio_memory.safetensors").string());
  torch::NoGradGuard no_grad;
  for (auto& item : out.compressor->named_parameters()) {
    auto& param = item.value();
    auto t = weights.tensor(item.key(), param.sizes().vec(), "uio_config.json");
    param.copy_(t);
  }
  return out;
}

}  // namespace uio::model
