// data/chat.h — wrapping a user prompt in a model's chat format (ChatML, Llama-2 [INST], Llama-3
// headers), as its chat template would render one user turn plus the assistant's opening. uio does
// not run Jinja: it recognises these formats and reproduces them.
#pragma once

#include <string>

#include "data/tokenizer.h"

namespace uio::data {

// The text to encode (with special tokens parsed) for one user turn. Throws when the model has no
// chat format uio knows, naming what it found.
std::string chat_prompt(const Tokenizer& tokenizer, const std::string& user_message);

}  // namespace uio::data
