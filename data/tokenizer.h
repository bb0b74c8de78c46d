// data/tokenizer.h — one interface over the tokenizers of Llama-family models: byte-level BPE
// (GPT-2 family: SmolLM2, Llama-3, Qwen2; from GGUF metadata or HF tokenizer.json) and SentencePiece
// (Llama-2, Mistral; tokenizer.model through libsentencepiece). Text in, token ids out, and back.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace uio::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Ids of `text`. Special tokens written in the text (e.g. "<|im_start|>") are recognised as such
  // when `parse_special` is true, else encoded as plain text. No BOS is added: callers that want one
  // prepend bos_id() themselves (whether a model wants it is add_bos()).
  virtual std::vector<int32_t> encode(std::string_view text, bool parse_special = false) const = 0;
  // Text of `ids`; special tokens are written out unless `skip_special`.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;
  // The bytes one token stands for (for streaming output; may be a partial UTF-8 sequence).
  virtual std::string token_bytes(int32_t id) const = 0;

  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when the model has none
  virtual int32_t eos_id() const = 0;
  virtual bool add_bos() const = 0;  // whether the model expects BOS at the start of a text
  virtual bool is_special(int32_t id) const = 0;
  // Id of a token given by its text (e.g. "<|im_end|>"), or -1.
  virtual int32_t token_id(std::string_view token) const = 0;
  // A chat template's name when the model has one (e.g. "chatml"), else empty.
  virtual std::string chat_format() const { return ""; }
  // The model's chat template (Jinja text) as the file gives it, or empty.
  virtual std::string chat_template() const { return ""; }
};

// Opens the tokenizer that belongs to a model: a .gguf file (tokenizer.ggml.* metadata), or an HF
// directory with tokenizer.json or tokenizer.model. Errors name the file and what is missing.
// A .gguf file is read by the caller (model/gguf.h) and handed to bpe_spec_from_gguf_metadata
// (data/bpe_tokenizer.h); this function says so rather than guessing.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_path);

// Encoding throughput of `tokenizer` on `text` in MB/s (10^6 bytes of input per second; best of a few
// runs, parse_special off). For `uio bench tokenizer`.
double bench_tokenizer(const Tokenizer& tokenizer, const std::string& text);

}  // namespace uio::data
