// data/pretokenizer.h — splitting text into the words a BPE model merges within: a chain of regexes
// (PCRE2, Unicode, JIT-compiled once), each applied to every piece the previous one left, in the
// manner of HF tokenizers' Sequence of Split(Isolated) pre-tokenizers. Also the UTF-8 repair every
// tokenizer applies to its input. It knows nothing of vocabularies.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace uio::data {

// GPT-2's split regex (HF's ByteLevel pre-tokenizer with use_regex=true).
extern const char* const kGpt2SplitRegex;

// The split regexes of a llama.cpp pre-tokenizer name (GGUF `tokenizer.ggml.pre`), applied in order.
// Throws std::invalid_argument naming the known names when `pre` is not one of them.
std::vector<std::string> split_regexes_for_pre(const std::string& pre);

// `text` with every ill-formed UTF-8 sequence replaced by U+FFFD, one per maximal subpart, exactly as
// Python's bytes.decode("utf-8", errors="replace") does (HF tokenizers only ever sees such strings).
std::string repair_utf8(std::string_view text);
// Whether `text` is well-formed UTF-8.
bool is_valid_utf8(std::string_view text);

class PreTokenizer {
 public:
  // Compiles every regex (PCRE2_UTF | PCRE2_UCP) and JIT-compiles it; errors name the regex and the
  // offset PCRE2 complains about. An empty list splits nothing.
  explicit PreTokenizer(const std::vector<std::string>& regexes);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Appends to `pieces` the words of `text` (valid UTF-8, as views into it): the matches of each regex
  // and the gaps between them are kept as separate pieces ("Isolated"); empty pieces are dropped.
  // Safe to call from several threads at once.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;

 private:
  struct Regex;
  std::vector<std::unique_ptr<Regex>> regexes_;
};

}  // namespace uio::data
