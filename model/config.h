// model/config.h — the architecture of a Llama-family base model (Llama-2/3, Mistral, Qwen2, SmolLM2)
// in uio's own terms. Loaders (HF config.json here, GGUF metadata in model/gguf.h) translate into it;
// the forward pass never asks where the weights came from.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace uio::model {

// RoPE frequency scaling, as HF's `rope_scaling` / `rope_parameters` describe it.
// RoPE frequency scaling: none, linear (position interpolation), ntk (NTK-aware base change; uio's
// memory_rope only), dynamic (dynamic NTK), yarn, llama3. Parsed from text once, at the edge.
enum class RopeKind { none, linear, ntk, dynamic, yarn, llama3 };
RopeKind parse_rope_kind(const std::string& name);  // throws std::invalid_argument naming the valid ones
const char* rope_kind_name(RopeKind kind);

struct RopeScaling {
  RopeKind type = RopeKind::none;
  double factor = 1.0;
  int64_t original_max_position = 0;  // yarn, llama3, dynamic: the pretrained window (0 = max_position)
  double low_freq_factor = 1.0;  // llama3
  double high_freq_factor = 4.0;  // llama3
  double beta_fast = 32.0;  // yarn
  double beta_slow = 1.0;  // yarn
  std::optional<double> attention_factor;  // yarn: scale of cos/sin (default from factor, mscale)
  double mscale = 0.0;  // yarn (DeepSeek-style), 0 = unset
  double mscale_all_dim = 0.0;  // yarn, 0 = unset
  bool truncate = true;  // yarn: floor/ceil the correction range
};

struct ModelConfig {
  std::string architecture = "llama";  // llama | mistral | qwen2 (all share one forward)
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;  // C
  int64_t intermediate_size = 0;  // SwiGLU inner width
  int64_t num_layers = 0;
  int64_t num_heads = 0;  // H
  int64_t num_kv_heads = 0;  // G (grouped-query attention)
  int64_t head_dim = 0;  // D
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position = 2048;  // the base model's trained window (max_position_embeddings)
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2, Llama with attention_bias)
  bool attention_output_bias = false;  // an o_proj bias too (Llama with attention_bias; not Qwen2)
  std::optional<int64_t> sliding_window;  // Mistral: a token sees the last `sliding_window` tokens
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  std::string torch_dtype = "float32";  // the dtype the weights were saved in

  // Parameter count of the base model (embeddings counted once when tied).
  int64_t num_parameters() const;
  // Throws std::invalid_argument naming `source` and the offending key when sizes do not fit together.
  void validate(const std::string& source) const;
};

// Reads an HF `config.json` (old `rope_scaling` + `rope_theta` and transformers-5 `rope_parameters`
// forms). Errors name the file, the key, what was found and what was expected.
ModelConfig load_hf_config(const std::string& path);

}  // namespace uio::model
