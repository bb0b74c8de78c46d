// model/memory_io.h — the trained memory compressor on disk: a directory with `uio_memory.safetensors`
// (encoder LoRA, transfer LoRA, the decoder LoRA when on, <mem> embedding, uio's names) and
// `uio_config.json` (l, M, memory_rope, LoRA shapes and targets, and which base model it belongs to); or
// an export of it in PEFT's format.
// Checkpoints (trainer/) build on it; `uio generate --memory DIR` reads either.
#pragma once

#include <string>

#include "model/config.h"
#include "model/memory.h"

namespace uio::model {

// What identifies the base model a compressor was trained on.
struct BaseIdentity {
  std::string path;  // as given when training
  std::string architecture;  // llama | mistral | qwen2
  int64_t num_layers = 0, hidden_size = 0, vocab_size = 0, num_kv_heads = 0, head_dim = 0;
  std::string fingerprint;  // model/fingerprint.h; empty when unknown
};
// The identity of the model at `path` (its fingerprint computed when the path exists).
BaseIdentity identify(const std::string& path, const ModelConfig& config);
// Throws naming `file` (where `saved` came from) and the fix when `now` is another model: a different
// shape, or a different fingerprint when both are known.
void check_same_base(const BaseIdentity& saved, const BaseIdentity& now, const std::string& file);

// Writes the compressor directory `dir` (uio_memory.safetensors, uio_config.json); refuses a compressor
// with a non-finite parameter (throws naming it), so a diverged run never leaves NaN weights on disk.
void save_memory(const std::string& dir, MemoryCompressor& compressor, const BaseIdentity& base);

struct ExportOptions {
  // Write into a non-empty directory (files of the export's names are replaced). Never into a compressor,
  // a checkpoint or a run's out_dir, nor among a run's checkpoints, --force or not.
  bool force = false;
  // The base model as the user names it (empty: none). base_model.path in uio_config.json is only a
  // record of the path given when training: it is never opened (the file may have moved, or the record
  // been edited to name any file). A base model named here must have the fingerprint the compressor
  // records; a single-file one's checksum then goes into the export.
  std::string base_model;
};

// The memory compressor alone in formats other tools read, from a compressor directory or checkpoint
// `from`: encoder_adapter/ and transfer_adapter/ (PEFT LoRA adapter directories, model/peft.h; and
// decoder_adapter/ when the compressor has decoder adapters), memory_embedding.safetensors, and
// uio_config.json (format uio-export: l, M, memory_rope, adapter shapes and targets, the base model's
// identity and fingerprint, and its checksum when options.base_model is given). Every file is written
// whole or not at all (format/atomic_file.h). load_memory reads it back like a compressor directory.
// Throws naming `dir` for a target it may not use.
void export_memory(const std::string& from, const std::string& dir, const ExportOptions& options = {});
// The target rules of export_memory alone (throws std::runtime_error naming `dir` and the fix).
void check_export_target(const std::string& dir, bool force);

struct LoadedMemory {
  MemoryOptions options;
  BaseIdentity base;
  MemoryCompressor compressor{nullptr};
};

// Options and base identity of the compressor directory `dir` (its uio_config.json), no weights.
LoadedMemory read_memory_config(const std::string& dir);

// Copies the weights of the compressor directory `dir` into `compressor` (same options; shapes checked,
// errors name the file and tensor).
void load_memory_weights(const std::string& dir, MemoryCompressor& compressor);

// Reads a compressor for the base model `base` (config and identity) onto `device`. Errors name the
// file and key: a missing or malformed uio_config.json, a compressor made for another model, missing or
// misshapen tensors.
LoadedMemory load_memory(const std::string& dir, const ModelConfig& config, const BaseIdentity& base,
                         const torch::Device& device);

}  // namespace uio::model
