// data/bpe_tokenizer.h — byte-level BPE (GPT-2 family: SmolLM2, Llama-3, Qwen2), described by a BpeSpec
// that is filled from HF's tokenizer.json or from GGUF metadata (tokenizer.ggml.*). Reading the GGUF
// file itself is model/gguf.h's job; this file only takes the metadata values.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace uio::data {

// GGUF token types (llama.cpp's llama_token_type), also used for tokens from tokenizer.json.
enum TokenType : int32_t {
  kTokenNormal = 1,
  kTokenUnknown = 2,
  kTokenControl = 3,  // special: matched in text only when encode(parse_special=true)
  kTokenUserDefined = 4,  // added but not special: always matched whole in text
  kTokenUnused = 5,
  kTokenByte = 6,
};

struct BpeSpec {
  // Token strings by id. Normal tokens are spelled in GPT-2's byte-to-unicode alphabet ("Ġthe");
  // control and user-defined tokens are their literal text ("<|im_start|>").
  std::vector<std::string> tokens;
  // Merge rules, best first: "Ġ t" (the two token spellings joined by one space).
  std::vector<std::string> merges;
  // One TokenType per token, or empty: all normal.
  std::vector<int32_t> token_types;
  // llama.cpp's pre-tokenizer name (tokenizer.ggml.pre: "smollm", "gpt2", "llama-bpe", "qwen2", ...);
  // used only when split_regexes is empty.
  std::string pre;
  // Split regexes applied in order, each to the pieces the previous left (HF Sequence of Split/Isolated).
  std::vector<std::string> split_regexes;
  // A word that is itself a token is not merged (HF BPE ignore_merges; Llama-3).
  bool ignore_merges = false;
  int32_t bos = -1, eos = -1, unk = -1;
  bool add_bos = false;
  std::string chat_template;
};

std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeSpec spec);

// HF tokenizer.json (model BPE, pre_tokenizer Sequence/Split/Digits/ByteLevel, added_tokens,
// post_processor TemplateProcessing for BOS). BOS/EOS names and the chat template come from the
// tokenizer_config.json beside it when there is one. Errors name the file, the key and the fix.
BpeSpec bpe_spec_from_tokenizer_json(const std::string& path);

// The GGUF keys tokenizer.ggml.{tokens, merges, token_type, pre, bos_token_id, eos_token_id,
// add_bos_token} and tokenizer.chat_template, as read from the file (absent ids: -1, absent
// token_type: empty). Resolves `pre` to its regexes (throws for an unknown name) and sets
// ignore_merges as llama.cpp does for "llama-bpe".
BpeSpec bpe_spec_from_gguf_metadata(std::vector<std::string> tokens, std::vector<std::string> merges,
                                    std::vector<int32_t> token_types, const std::string& pre, int32_t bos_token_id,
                                    int32_t eos_token_id, bool add_bos_token, std::string chat_template);

// GPT-2's byte-to-unicode spelling of raw bytes, and back (throws on a character outside the alphabet).
std::string byte_level_spelling(std::string_view bytes);
std::string byte_level_bytes(std::string_view spelled);

}  // namespace uio::data
