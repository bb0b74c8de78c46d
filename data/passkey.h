// data/passkey.h — retrieval prompts for evaluating long context, as token ids of an exact length:
// the standard passkey test (a preamble, repeated filler "The grass is green. The sky is blue. ...",
// "The pass key is NNNNN. Remember it. NNNNN is the pass key." at a chosen depth, then "What is the pass
// key? The pass key is") and the needle-in-a-haystack test (a sentence with a number hidden at a depth
// in real text, then a question). The answer is the number's digits; scoring is the caller's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace uio::data {

struct RetrievalPrompt {
  std::vector<int64_t> ids;  // exactly the requested length
  std::string answer;  // the number to retrieve, e.g. "40821"
  int64_t needle_begin = 0;  // first token of the sentence that holds it
  int64_t needle_end = 0;  // one past its last token
};

// `length` tokens in all; the key sentence starts at round(depth * room), where room is what the filler
// fills (depth 0: right after the preamble, 1: right before the question). `digits` random digits from
// `seed`. Throws std::invalid_argument when `length` cannot hold preamble, key and question.
RetrievalPrompt make_passkey_prompt(const Tokenizer& tokenizer, int64_t length, double depth, int digits,
                                    uint64_t seed);

// The same with `haystack` (token ids of real text, repeated when too short) as the filler, the needle
// "The special magic number is NNNNN." and the question "What is the special magic number mentioned in
// the text above? The special magic number is".
RetrievalPrompt make_needle_prompt(const Tokenizer& tokenizer, const std::vector<int64_t>& haystack, int64_t length,
                                   double depth, int digits, uint64_t seed);

}  // namespace uio::data
