// data/format/fingerprint.h — telling weight files apart without trusting their names: a full 64-bit checksum
// of a file's bytes (checkpoint manifests, exports), and a fast fingerprint of a base model's weights
// (size plus the checksums of the first and last MiB of each weight file) that travels with every
// compressor, so a checkpoint or export is never silently used with another base model.
#pragma once

#include <cstdint>
#include <string>

namespace uio::format {

// FNV-1a over the file's 8-byte words, then its tail bytes. Detects truncation and damage, not an
// adversary. Throws std::runtime_error naming the file when it cannot be read.
uint64_t file_checksum(const std::string& path);

// A .gguf or .safetensors file, or an HF directory (config.json and every *.safetensors in it):
// "<bytes>:<hex>" over those files; "" when `path` does not exist (a model built in memory).
std::string weights_fingerprint(const std::string& path);

}  // namespace uio::format
