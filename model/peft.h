// model/peft.h — LoRA adapters in PEFT's on-disk format, so other tools load uio's adapters: a directory
// with adapter_config.json (peft_type LORA, r, lora_alpha, target_modules, ...) and
// adapter_model.safetensors with PEFT's key names for Llama-family models
// ("base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight", [r, in]; lora_B [out, r]).
// Translation between uio's adapter names (model/lora.h) and PEFT's lives here and nowhere else.
#pragma once

#include <map>
#include <string>

#include <torch/types.h>

#include "model/lora.h"

namespace uio::model {

// PEFT's tensor name for uio's "layers.{i}.{proj}.lora_{A,B}" (e.g. layers.3.v_proj.lora_B ->
// base_model.model.model.layers.3.self_attn.v_proj.lora_B.weight); throws for an unknown projection.
std::string peft_tensor_name(const std::string& uio_name);
std::string uio_tensor_name(const std::string& peft_name);  // the inverse; throws naming what it cannot map

// Writes one adapter set: `tensors` maps uio names (layers.{i}.{proj}.lora_{A,B}) to fp32 tensors.
void write_peft_adapter(const std::string& dir, const std::map<std::string, torch::Tensor>& tensors,
                        const LoraOptions& options, const std::string& base_model);

// Reads an adapter directory: its options (r, lora_alpha, lora_dropout, target_modules) and tensors
// under uio's names. Errors name the file and key.
struct PeftAdapter {
  LoraOptions options;
  std::map<std::string, torch::Tensor> tensors;
};
PeftAdapter read_peft_adapter(const std::string& dir);

}  // namespace uio::model
