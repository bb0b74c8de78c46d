// model/memory_io.h — the trained memory compressor on disk: a directory with `uio_memory.safetensors`
// (encoder LoRA, transfer LoRA, <mem> embedding, uio's names) and `uio_config.json` (l, M, memory_rope,
// LoRA shapes and targets, and which base model it belongs to). Checkpoints (trainer/) and exports build
// on it; `uio generate --memory DIR` reads it.
#pragma once

#include <string>

#include "model/config.h"
#include "model/memory.h"

namespace uio::model {

// What identifies the base model a compressor was trained on.
struct BaseIdentity {
  std::string path;          // as given when training
  std::string architecture;  // llama | mistral | qwen2
  int64_t num_layers = 0, hidden_size = 0, vocab_size = 0, num_kv_heads = 0, head_dim = 0;
};
BaseIdentity identify(const std::string& path, const ModelConfig& config);

void save_memory(const std::string& dir, MemoryCompressor& compressor, const BaseIdentity& base);

struct LoadedMemory {
  MemoryOptions options;
  BaseIdentity base;
  MemoryCompressor compressor{nullptr};
};

// Reads a compressor for `config` onto `device`. Errors name the file and key: a missing or malformed
// uio_config.json, a compressor made for another architecture or size, missing or misshapen tensors.
LoadedMemory load_memory(const std::string& dir, const ModelConfig& config, const torch::Device& device);

}  // namespace uio::model
