// data/sentencepiece_tokenizer.h — SentencePiece models (Llama-2, Mistral: tokenizer.model) through
// libsentencepiece, behind the Tokenizer interface. Byte fallback, normalization and the dummy prefix
// are the library's; this file adds special-token parsing, UTF-8 repair and the interface mapping.
#pragma once

#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace uio::data {

// Loads `model_path` (a serialized ModelProto). `add_bos`: whether the model wants BOS at the start
// of a text (Llama-2 and Mistral do; HF's tokenizer_config.json add_bos_token says so).
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& model_path, bool add_bos = true,
                                                        std::string chat_template = "");

}  // namespace uio::data
