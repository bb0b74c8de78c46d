// model/gguf_names.h — llama.cpp's GGUF conventions translated to uio's: metadata keys -> ModelConfig,
// tensor names -> Hugging Face Llama names (uio's own), and the undoing of the Q/K row permutation
// llama.cpp's converter applies for its RoPE layout. The container itself is model/gguf.h.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "model/config.h"
#include "data/format/gguf.h"

namespace uio::model {

// One row of the tensor-name table; "{bid}" stands for the layer index.
struct GgufTensorName {
  const char* gguf;  // "blk.{bid}.attn_q.weight"
  const char* hf;  // "model.layers.{bid}.self_attn.q_proj.weight"
};
const std::vector<GgufTensorName>& gguf_tensor_names();

// "blk.3.attn_q.weight" <-> "model.layers.3.self_attn.q_proj.weight"; nullopt when not in the table.
std::optional<std::string> hf_name_from_gguf(const std::string& gguf_name);
std::optional<std::string> gguf_name_from_hf(const std::string& hf_name);

// The ModelConfig a GGUF file describes (architectures llama and qwen2), from `{arch}.*` and
// `tokenizer.ggml.*` keys; tie_word_embeddings = the file has no output.weight; a Llama-3
// `rope_freqs.weight` is recognised as llama3 RoPE scaling. Errors name the file and the key.
ModelConfig config_from_gguf(const format::GgufFile& file);

// The HF tensor names a model of this config has (lm_head.weight only when untied).
std::vector<std::string> hf_tensor_names(const ModelConfig& config);
// The shape the config gives the HF tensor `hf_name` (one of hf_tensor_names), without building anything.
std::vector<int64_t> hf_tensor_shape(const ModelConfig& config, const std::string& hf_name);

// The tensor HF calls `hf_name`, dequantised, cast to `dtype`, with llama's Q/K rows restored to HF
// order (qwen2 files are not permuted). Shape checked against `config`.
torch::Tensor load_gguf_tensor_as_hf(const format::GgufFile& file, const std::string& hf_name,
                                     const ModelConfig& config, torch::ScalarType dtype = torch::kFloat);

// llama.cpp's converter reorders each head's rows of q_proj/k_proj (weights or biases) from HF's
// [first half | second half] rotary layout to interleaved pairs: row h*D + 2i + s <- row h*D + s*D/2 + i.
// `permute_qk_rows` does that (HF -> GGUF), `unpermute_qk_rows` undoes it (GGUF -> HF).
// `n_heads` is num_heads for q, num_kv_heads for k; dim 0 has n_heads * D rows.
torch::Tensor permute_qk_rows(const torch::Tensor& w, int64_t n_heads);
torch::Tensor unpermute_qk_rows(const torch::Tensor& w, int64_t n_heads);

}  // namespace uio::model
