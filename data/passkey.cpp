// data/passkey.cpp — passkey and needle prompts.
#include "data/passkey.h"

#include <cmath>
#include <stdexcept>

#include "data/splitmix.h"

namespace uio::data {
namespace {

std::vector<int64_t> encode(const Tokenizer& tokenizer, const std::string& text) {
  std::vector<int64_t> out;
  for (auto t : tokenizer.encode(text)) out.push_back(t);
  return out;
}

std::string random_number(int digits, uint64_t seed) {
  if (digits < 1 || digits > 18) throw std::invalid_argument("retrieval prompt: digits must be in [1, 18]");
  SplitMix64 rng(seed);
  std::string s(1, static_cast<char>('1' + rng.below(9)));  // no leading zero
  while (static_cast<int>(s.size()) < digits) s += static_cast<char>('0' + rng.below(10));
  return s;
}

// preamble, filler cut to fill the room with the needle at depth, question: exactly `length` tokens.
RetrievalPrompt assemble(const std::vector<int64_t>& preamble, const std::vector<int64_t>& filler,
                         const std::vector<int64_t>& needle, const std::vector<int64_t>& question, int64_t length,
                         double depth, const std::string& answer) {
  if (!(depth >= 0.0 && depth <= 1.0)) throw std::invalid_argument("retrieval prompt: depth must be in [0, 1]");
  if (filler.empty()) throw std::invalid_argument("retrieval prompt: the filler is empty");
  const int64_t fixed = static_cast<int64_t>(preamble.size() + needle.size() + question.size());
  const int64_t room = length - fixed;
  if (room < 0)
    throw std::invalid_argument("retrieval prompt: " + std::to_string(length) +
                                " tokens cannot hold the preamble, the " + "needle and the question (" +
                                std::to_string(fixed) + " tokens)");
  const auto before = static_cast<int64_t>(std::llround(depth * static_cast<double>(room)));
  RetrievalPrompt p;
  p.answer = answer;
  p.ids = preamble;
  size_t f = 0;
  auto fill = [&](int64_t n) {
    for (int64_t i = 0; i < n; ++i, f = (f + 1) % filler.size()) p.ids.push_back(filler[f]);
  };
  fill(before);
  p.needle_begin = static_cast<int64_t>(p.ids.size());
  p.ids.insert(p.ids.end(), needle.begin(), needle.end());
  p.needle_end = static_cast<int64_t>(p.ids.size());
  fill(room - before);
  p.ids.insert(p.ids.end(), question.begin(), question.end());
  return p;
}

}  // namespace

RetrievalPrompt make_passkey_prompt(const Tokenizer& tokenizer, int64_t length, double depth, int digits,
                                    uint64_t seed) {
  const auto key = random_number(digits, seed);
  return assemble(encode(tokenizer,
                         "There is an important info hidden inside a lot of irrelevant text. Find it and "
                         "memorize it. I will quiz you about the important information there."),
                  encode(tokenizer,
                         " The grass is green. The sky is blue. The sun is yellow. Here we go. There and "
                         "back again."),
                  encode(tokenizer, " The pass key is " + key + ". Remember it. " + key + " is the pass key."),
                  encode(tokenizer, " What is the pass key? The pass key is"), length, depth, key);
}

RetrievalPrompt make_needle_prompt(const Tokenizer& tokenizer, const std::vector<int64_t>& haystack, int64_t length,
                                   double depth, int digits, uint64_t seed) {
  const auto number = random_number(digits, seed);
  return assemble({}, haystack, encode(tokenizer, " The special magic number is " + number + ". "),
                  encode(tokenizer,
                         " What is the special magic number mentioned in the text above? The special "
                         "magic number is"),
                  length, depth, number);
}

}  // namespace uio::data
