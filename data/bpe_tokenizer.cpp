// data/bpe_tokenizer.cpp — byte-level BPE: added-token splitting, regex pre-tokenization, merges by
// rank over a linked list of symbols with a min-heap, a per-word cache; and the GGUF metadata mapping.
#include "data/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <queue>
#include <stdexcept>
#include <unordered_map>

#include "data/pretokenizer.h"

namespace uio::data {

namespace {

// GPT-2's byte-to-unicode table: printable Latin-1 bytes stand for themselves, the other 68 bytes for
// the code points 256.. in byte order, so every byte has a visible, non-space character.
struct ByteAlphabet {
  std::array<std::string, 256> spelling;  // byte -> UTF-8 of its character
  std::array<int, 324> byte_of{};  // code point -> byte, -1 outside the alphabet
  ByteAlphabet() {
    byte_of.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      int cp = printable ? b : 256 + extra++;
      byte_of[cp] = b;
      std::string s;
      if (cp < 0x80) {
        s += static_cast<char>(cp);
      } else {
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
      }
      spelling[b] = s;
    }
  }
};

const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

// Raw bytes of a byte-level spelling; false when a character is outside the alphabet.
bool unspell(std::string_view spelled, std::string& out) {
  const auto& a = alphabet();
  out.clear();
  for (size_t i = 0; i < spelled.size();) {
    auto c0 = static_cast<unsigned char>(spelled[i]);
    int cp;
    if (c0 < 0x80) {
      cp = c0, i += 1;
    } else if ((c0 & 0xE0) == 0xC0 && i + 1 < spelled.size()) {
      cp = ((c0 & 0x1F) << 6) | (static_cast<unsigned char>(spelled[i + 1]) & 0x3F), i += 2;
    } else {
      return false;
    }
    if (cp >= static_cast<int>(a.byte_of.size()) || a.byte_of[cp] < 0) return false;
    out += static_cast<char>(a.byte_of[cp]);
  }
  return true;
}

std::string describe_id(int32_t id, size_t n) {
  return "token id " + std::to_string(id) + " (vocabulary of " + std::to_string(n) + ")";
}

std::string detect_chat_format(const std::string& tmpl) {
  if (tmpl.find("<|im_start|>") != std::string::npos) return "chatml";
  if (tmpl.find("<|start_header_id|>") != std::string::npos) return "llama3";
  return "";
}

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(BpeSpec spec);

  std::vector<int32_t> encode(std::string_view text, bool parse_special) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override;
  std::string token_bytes(int32_t id) const override {
    check_id(id);
    return bytes_[id];
  }
  int64_t vocab_size() const override { return static_cast<int64_t>(bytes_.size()); }
  int32_t bos_id() const override { return spec_.bos; }
  int32_t eos_id() const override { return spec_.eos; }
  bool add_bos() const override { return spec_.add_bos; }
  bool is_special(int32_t id) const override {
    check_id(id);
    return types_[id] == kTokenControl;
  }
  int32_t token_id(std::string_view token) const override {
    auto it = id_of_bytes_.find(std::string(token));
    return it == id_of_bytes_.end() ? -1 : it->second;
  }
  std::string chat_format() const override { return detect_chat_format(spec_.chat_template); }
  std::string chat_template() const override { return spec_.chat_template; }

 private:
  struct Merge {
    int32_t rank, id;
  };
  struct Added {
    std::string text;
    int32_t id;
    bool special;
  };

  void check_id(int32_t id) const {
    if (id < 0 || id >= static_cast<int32_t>(bytes_.size()))
      throw std::out_of_range("bpe tokenizer: " + describe_id(id, bytes_.size()) + " is out of range");
  }
  void encode_segment(std::string_view segment, std::vector<int32_t>& ids) const;
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;
  void merge_word(std::string_view word, std::vector<int32_t>& ids) const;

  BpeSpec spec_;
  std::vector<std::string> bytes_;  // raw bytes of each token
  std::vector<int32_t> types_;
  std::unordered_map<std::string, int32_t> id_of_bytes_;
  std::array<int32_t, 256> byte_id_{};
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> rank, merged id
  std::unique_ptr<PreTokenizer> pre_;
  std::vector<Added> added_;
  std::array<std::vector<int32_t>, 256> added_by_first_byte_;  // indices into added_, longest first

  static constexpr size_t kCacheLimit = 1 << 17;
  static constexpr size_t kCachedWordBytes = 128;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

BpeTokenizer::BpeTokenizer(BpeSpec spec) : spec_(std::move(spec)) {
  const size_t n = spec_.tokens.size();
  if (n == 0) throw std::invalid_argument("bpe tokenizer: the vocabulary is empty");
  if (!spec_.token_types.empty() && spec_.token_types.size() != n)
    throw std::invalid_argument("bpe tokenizer: " + std::to_string(spec_.token_types.size()) + " token types for " +
                                std::to_string(n) + " tokens; expected one per token");
  for (int32_t id : {spec_.bos, spec_.eos, spec_.unk})
    if (id < -1 || id >= static_cast<int32_t>(n))
      throw std::invalid_argument("bpe tokenizer: special " + describe_id(id, n) + " is out of range");
  types_ = spec_.token_types.empty() ? std::vector<int32_t>(n, kTokenNormal) : spec_.token_types;
  if (spec_.split_regexes.empty() && !spec_.pre.empty()) spec_.split_regexes = split_regexes_for_pre(spec_.pre);
  pre_ = std::make_unique<PreTokenizer>(spec_.split_regexes);

  std::unordered_map<std::string, int32_t> id_of_spelling;
  bytes_.resize(n);
  for (size_t id = 0; id < n; ++id) {
    const std::string& tok = spec_.tokens[id];
    id_of_spelling.emplace(tok, static_cast<int32_t>(id));
    bool literal = types_[id] == kTokenControl || types_[id] == kTokenUserDefined;
    // A normal token spelled outside the byte alphabet is taken as literal text, as transformers'
    // GGUF loader does.
    if (literal || !unspell(tok, bytes_[id])) bytes_[id] = tok;
    if (literal && !tok.empty()) added_.push_back({tok, static_cast<int32_t>(id), types_[id] == kTokenControl});
  }
  for (const auto& a : added_) id_of_bytes_.emplace(a.text, a.id);
  for (size_t id = 0; id < n; ++id) id_of_bytes_.emplace(bytes_[id], static_cast<int32_t>(id));
  for (int b = 0; b < 256; ++b) {
    auto it = id_of_spelling.find(alphabet().spelling[b]);
    byte_id_[b] = it == id_of_spelling.end() ? -1 : it->second;
  }
  for (size_t i = 0; i < added_.size(); ++i)
    added_by_first_byte_[static_cast<unsigned char>(added_[i].text[0])].push_back(static_cast<int32_t>(i));
  for (auto& list : added_by_first_byte_)
    std::stable_sort(list.begin(), list.end(),
                     [&](int32_t a, int32_t b) { return added_[a].text.size() > added_[b].text.size(); });

  merges_.reserve(spec_.merges.size());
  for (size_t rank = 0; rank < spec_.merges.size(); ++rank) {
    const std::string& m = spec_.merges[rank];
    size_t space = m.find(' ');
    if (space == std::string::npos || m.find(' ', space + 1) != std::string::npos)
      throw std::invalid_argument("bpe tokenizer: merge " + std::to_string(rank) + " ('" + m +
                                  "') is not two token spellings joined by one space");
    std::string left = m.substr(0, space), right = m.substr(space + 1);
    auto l = id_of_spelling.find(left), r = id_of_spelling.find(right), c = id_of_spelling.find(left + right);
    if (l == id_of_spelling.end() || r == id_of_spelling.end() || c == id_of_spelling.end())
      throw std::invalid_argument("bpe tokenizer: merge " + std::to_string(rank) + " ('" + m +
                                  "') names a token missing from the vocabulary");
    uint64_t key = (static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(r->second);
    merges_.emplace(key, Merge{static_cast<int32_t>(rank), c->second});  // the first (best) rank wins
  }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool parse_special) const {
  std::string repaired;
  if (!is_valid_utf8(text)) {
    repaired = repair_utf8(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  // Added tokens are cut out first, leftmost and then longest (HF's AddedVocabulary); the text between
  // them goes through the pre-tokenizer and the merges.
  size_t segment_start = 0;
  for (size_t i = 0; i < text.size();) {
    const auto& candidates = added_by_first_byte_[static_cast<unsigned char>(text[i])];
    const Added* hit = nullptr;
    for (int32_t c : candidates) {
      const Added& a = added_[c];
      if ((parse_special || !a.special) && text.compare(i, a.text.size(), a.text) == 0) {
        hit = &a;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    encode_segment(text.substr(segment_start, i - segment_start), ids);
    ids.push_back(hit->id);
    i += hit->text.size();
    segment_start = i;
  }
  encode_segment(text.substr(segment_start), ids);
  return ids;
}

void BpeTokenizer::encode_segment(std::string_view segment, std::vector<int32_t>& ids) const {
  if (segment.empty()) return;
  std::vector<std::string_view> words;
  pre_->split(segment, words);
  for (std::string_view w : words) encode_word(w, ids);
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (spec_.ignore_merges) {
    auto it = id_of_bytes_.find(std::string(word));
    if (it != id_of_bytes_.end() && types_[it->second] != kTokenControl && types_[it->second] != kTokenUserDefined) {
      ids.push_back(it->second);
      return;
    }
  }
  if (word.size() > kCachedWordBytes) {
    merge_word(word, ids);
    return;
  }
  std::string key(word);
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t first = ids.size();
  merge_word(word, ids);
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= kCacheLimit) cache_.clear();
  cache_.emplace(std::move(key), std::vector<int32_t>(ids.begin() + first, ids.end()));
}

// The classic BPE loop: repeatedly merge the adjacent pair of lowest rank, leftmost first. Symbols
// form a linked list; candidate pairs sit in a min-heap and are checked when popped (stale entries,
// whose symbols changed since, are dropped).
void BpeTokenizer::merge_word(std::string_view word, std::vector<int32_t>& ids) const {
  struct Symbol {
    int32_t id, prev, next;
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  for (unsigned char b : word) {
    int32_t id = byte_id_[b];
    if (id < 0) id = spec_.unk;  // HF BPE: a character outside the vocabulary is unk, or dropped
    if (id < 0) continue;
    int32_t i = static_cast<int32_t>(sym.size());
    sym.push_back({id, i - 1, -1});
    if (i > 0) sym[i - 1].next = i;
  }
  struct Candidate {
    int32_t rank, pos, left, right;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int32_t pos) {
    if (pos < 0 || sym[pos].next < 0) return;
    const int32_t l = sym[pos].id, r = sym[sym[pos].next].id;
    auto it = merges_.find((static_cast<uint64_t>(l) << 32) | static_cast<uint32_t>(r));
    if (it != merges_.end()) heap.push({it->second.rank, pos, l, r});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) push(i);
  while (!heap.empty()) {
    Candidate c = heap.top();
    heap.pop();
    Symbol& s = sym[c.pos];
    if (s.id != c.left || s.next < 0 || sym[s.next].id != c.right) continue;  // stale
    const int32_t right = s.next;
    s.id = merges_.at((static_cast<uint64_t>(c.left) << 32) | static_cast<uint32_t>(c.right)).id;
    s.next = sym[right].next;
    if (s.next >= 0) sym[s.next].prev = c.pos;
    sym[right].id = -1;  // dead
    push(s.prev);
    push(c.pos);
  }
  for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) ids.push_back(sym[i].id);
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    check_id(id);
    if (skip_special && types_[id] == kTokenControl) continue;
    out += bytes_[id];
  }
  return out;
}

}  // namespace

std::string byte_level_spelling(std::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) out += alphabet().spelling[b];
  return out;
}

std::string byte_level_bytes(std::string_view spelled) {
  std::string out;
  if (!unspell(spelled, out))
    throw std::invalid_argument("byte-level spelling '" + std::string(spelled) +
                                "' has a character outside GPT-2's byte alphabet");
  return out;
}

std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeSpec spec) { return std::make_unique<BpeTokenizer>(std::move(spec)); }

BpeSpec bpe_spec_from_gguf_metadata(std::vector<std::string> tokens, std::vector<std::string> merges,
                                    std::vector<int32_t> token_types, const std::string& pre, int32_t bos_token_id,
                                    int32_t eos_token_id, bool add_bos_token, std::string chat_template) {
  if (tokens.empty()) throw std::invalid_argument("GGUF: tokenizer.ggml.tokens is missing or empty");
  if (merges.empty())
    throw std::invalid_argument(
        "GGUF: tokenizer.ggml.merges is missing or empty; a byte-level BPE vocabulary "
        "(tokenizer.ggml.model 'gpt2') needs its merges");
  if (!token_types.empty() && token_types.size() != tokens.size())
    throw std::invalid_argument("GGUF: tokenizer.ggml.token_type has " + std::to_string(token_types.size()) +
                                " entries, tokenizer.ggml.tokens " + std::to_string(tokens.size()) +
                                "; expected one type per token");
  if (pre.empty())
    throw std::invalid_argument(
        "GGUF: tokenizer.ggml.pre is missing, so the split regex is unknown; "
        "re-convert the model with a recent llama.cpp convert_hf_to_gguf.py");
  BpeSpec spec;
  spec.tokens = std::move(tokens);
  spec.merges = std::move(merges);
  spec.token_types = std::move(token_types);
  spec.pre = pre;
  spec.split_regexes = split_regexes_for_pre(pre);
  // llama.cpp and Llama-3's tokenizer.json both take a word that is already a token as it is.
  spec.ignore_merges = pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3";
  spec.bos = bos_token_id;
  spec.eos = eos_token_id;
  spec.add_bos = add_bos_token;
  spec.chat_template = std::move(chat_template);
  return spec;
}

}  // namespace uio::data
