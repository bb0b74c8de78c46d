// tools/memory_options.h — the memory model's settings as config keys, shared by every command that
// builds a compressor (bench memory now; train and eval next): segment length, memory tokens (or the
// compression ratio), the LoRA sets, memory_rope. The defaults are MemoryOptions' own.
#pragma once

#include <string>

#include "model/memory.h"
#include "tools/options.h"

namespace uio::cli {

// The keys as they appear in INI files and on the command line, bound to a MemoryOptionsInput.
struct MemoryOptionsInput {
  model::MemoryOptions options;
  int64_t compression_ratio = 0;  // l / M; 0 = use num_memory_tokens
  std::string encoder_lora_targets = "q_proj,v_proj";
  std::string transfer_lora_targets = "k_proj,v_proj";
  std::string decoder_lora_targets = "q_proj,k_proj,v_proj,o_proj";
  std::string memory_rope = model::rope_kind_name(model::MemoryOptions().memory_rope);
};

void add_memory_options(Schema& schema, MemoryOptionsInput& input);
// Resolves ratio and target lists; throws OptionError naming the key on inconsistent values.
model::MemoryOptions resolve_memory_options(const MemoryOptionsInput& input);

}  // namespace uio::cli
