// data/pretokenizer.cpp — PCRE2 regex splitting and UTF-8 repair (see pretokenizer.h).
#include "data/pretokenizer.h"

#include <map>
#include <stdexcept>

#include <pcre2.h>

namespace uio::data {

const char* const kGpt2SplitRegex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

// Llama-3's split (its tokenizer.json Split pre-tokenizer; llama.cpp "llama-bpe").
const char* const kLlama3SplitRegex = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
                                      R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2's split: Llama-3's with single digits.
const char* const kQwen2SplitRegex = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
                                     R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// HF's Digits(individual_digits=true) pre-tokenizer: every numeric character on its own.
const char* const kSingleDigitRegex = R"(\p{N})";

// llama.cpp's pre-tokenizer names (llama-vocab.cpp) and the splits of the HF tokenizers they stand for.
// "smollm" is SmolLM/SmolLM2: Sequence[Digits(individual_digits), ByteLevel(use_regex)] in its tokenizer.json.
const std::map<std::string, std::vector<std::string>>& pre_table() {
  static const std::map<std::string, std::vector<std::string>> table = {
      {"gpt2", {kGpt2SplitRegex}},
      {"mpt", {kGpt2SplitRegex}},
      {"olmo", {kGpt2SplitRegex}},
      {"jais", {kGpt2SplitRegex}},
      {"smollm", {kSingleDigitRegex, kGpt2SplitRegex}},
      {"starcoder", {kSingleDigitRegex, kGpt2SplitRegex}},
      {"refact", {kSingleDigitRegex, kGpt2SplitRegex}},
      {"codeshell", {kSingleDigitRegex, kGpt2SplitRegex}},
      {"llama-bpe", {kLlama3SplitRegex}},
      {"llama3", {kLlama3SplitRegex}},
      {"llama-v3", {kLlama3SplitRegex}},
      {"smaug-bpe", {kLlama3SplitRegex}},
      {"dbrx", {kLlama3SplitRegex}},
      {"falcon3", {kLlama3SplitRegex}},
      {"qwen2", {kQwen2SplitRegex}},
      {"deepseek-r1-qwen", {kQwen2SplitRegex}},
      {"megrez", {kQwen2SplitRegex}},
  };
  return table;
}

// Length of the well-formed UTF-8 sequence at s[i], or, when ill-formed, -(length of its maximal
// subpart), at least 1 (Unicode 15 §3.9, "U+FFFD substitution of maximal subparts", as CPython does).
int utf8_sequence(std::string_view s, size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return 1;
  int need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int k = 1; k <= need; ++k) {
    if (i + k >= s.size()) return -k;
    const auto c = static_cast<unsigned char>(s[i + k]);
    const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (c < l || c > h) return -k;
  }
  return need + 1;
}

}  // namespace

std::vector<std::string> split_regexes_for_pre(const std::string& pre) {
  const auto& table = pre_table();
  auto it = table.find(pre);
  if (it == table.end()) {
    std::string known;
    for (const auto& [name, _] : table) known += (known.empty() ? "" : ", ") + name;
    throw std::invalid_argument("tokenizer.ggml.pre: unknown pre-tokenizer '" + pre + "' (known: " + known +
                                "); give BpeSpec.split_regexes explicitly for this model");
  }
  return it->second;
}

bool is_valid_utf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    int n = utf8_sequence(text, i);
    if (n < 0) return false;
    i += n;
  }
  return true;
}

std::string repair_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    // Copy the longest well-formed run in one go.
    size_t start = i;
    int n;
    while (i < text.size() && (n = utf8_sequence(text, i)) > 0) i += n;
    out.append(text.data() + start, i - start);
    if (i < text.size()) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      i += -utf8_sequence(text, i);
    }
  }
  return out;
}

struct PreTokenizer::Regex {
  std::string pattern;
  pcre2_code* code = nullptr;
  ~Regex() {
    if (code) pcre2_code_free(code);
  }
};

PreTokenizer::PreTokenizer(const std::vector<std::string>& regexes) {
  for (const auto& pattern : regexes) {
    auto re = std::make_unique<Regex>();
    re->pattern = pattern;
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                             &err_offset, nullptr);
    if (!re->code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw std::invalid_argument("pre-tokenizer regex '" + pattern + "' does not compile at offset " +
                                  std::to_string(err_offset) + ": " + reinterpret_cast<const char*>(msg));
    }
    int rc = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);
    if (rc != 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw std::runtime_error("pre-tokenizer regex '" + pattern +
                               "': PCRE2 JIT compilation failed: " + reinterpret_cast<const char*>(msg));
    }
    regexes_.push_back(std::move(re));
  }
}

PreTokenizer::~PreTokenizer() = default;

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  if (text.empty()) return;
  std::vector<std::string_view> current{text}, next;
  for (size_t r = 0; r < regexes_.size(); ++r) {
    const Regex& re = *regexes_[r];
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re.code, nullptr);
    pcre2_match_context* mctx = nullptr;
    pcre2_jit_stack* jit_stack = nullptr;
    auto cleanup = [&] {
      pcre2_match_data_free(md);
      if (mctx) pcre2_match_context_free(mctx);
      if (jit_stack) pcre2_jit_stack_free(jit_stack);
    };
    next.clear();
    for (std::string_view piece : current) {
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
      size_t pos = 0, last = 0;  // search from pos; the gap not yet emitted starts at last
      while (pos < piece.size()) {
        int rc = pcre2_match(re.code, subject, piece.size(), pos, PCRE2_NO_UTF_CHECK, md, mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !jit_stack) {
          // Long runs under a lookahead can outgrow JIT's default 32 KiB stack; retry with 64 MiB.
          jit_stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
          mctx = pcre2_match_context_create(nullptr);
          pcre2_jit_stack_assign(mctx, nullptr, jit_stack);
          continue;
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          PCRE2_UCHAR msg[256];
          pcre2_get_error_message(rc, msg, sizeof msg);
          cleanup();
          throw std::runtime_error("pre-tokenizer regex '" + re.pattern + "' failed on a " +
                                   std::to_string(piece.size()) + "-byte piece: " + reinterpret_cast<const char*>(msg));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        size_t begin = ov[0], end = ov[1];
        if (end == begin) {  // an empty match splits nothing: step over one character
          pos = begin + 1;
          while (pos < piece.size() && (static_cast<unsigned char>(piece[pos]) & 0xC0) == 0x80) ++pos;
          continue;
        }
        if (begin > last) next.push_back(piece.substr(last, begin - last));
        next.push_back(piece.substr(begin, end - begin));
        last = pos = end;
      }
      if (last < piece.size()) next.push_back(piece.substr(last));
    }
    cleanup();
    current.swap(next);
  }
  pieces.insert(pieces.end(), current.begin(), current.end());
}

}  // namespace uio::data
