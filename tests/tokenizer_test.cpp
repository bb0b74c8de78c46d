// tests/tokenizer_test.cpp — tokenizer parity with HF tokenizers / sentencepiece / transformers' GGUF
// loader on a few MB of mixed text (tests/reference/tokenizer_ref.py), round trips, and errors.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "data/bpe_tokenizer.h"
#include "data/pretokenizer.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/tokenizer.h"
#include "tests/test_util.h"
#include "tests/tokenizer_ref.h"

using namespace uio::data;
namespace fs = std::filesystem;

namespace {

fs::path ref(const std::string& name) { return uio::test::tokenizer_ref(name); }
using uio::test::read_docs;
using uio::test::read_ids;

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> docs = read_docs(ref("corpus.bin"));
  return docs;
}

std::string preview(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 120)) {
    if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

// Encodes every document and compares with the reference ids; returns the number of mismatching
// documents (the first few are reported in full) and prints the throughput.
size_t count_mismatches(const Tokenizer& tok, const std::vector<std::vector<int32_t>>& expected, bool parse_special,
                        const std::string& what, bool report = true) {
  const auto& docs = corpus();
  size_t bad = 0, bytes = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < docs.size(); ++i) {
    auto ids = tok.encode(docs[i], parse_special);
    bytes += docs[i].size();
    if (ids == expected[i]) continue;
    if (report && ++bad <= 3) {
      size_t k = 0;
      while (k < ids.size() && k < expected[i].size() && ids[k] == expected[i][k]) ++k;
      ADD_FAILURE() << what << ": document " << i << " differs at id " << k << " (ours "
                    << (k < ids.size() ? ids[k] : -1) << ", reference "
                    << (k < expected[i].size() ? expected[i][k] : -1) << "; lengths " << ids.size() << " vs "
                    << expected[i].size() << ")\n  text: " << preview(docs[i]) << "\n  around: '"
                    << preview(tok.decode({ids.begin() + k, ids.begin() + std::min(ids.size(), k + 5)})) << "'";
    } else if (!report) {
      ++bad;
    }
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ tokenizer ] " << what << ": " << docs.size() << " documents, " << bytes / 1e6 << " MB, "
            << bytes / 1e6 / s << " MB/s, " << bad << " differ\n";
  return bad;
}

void expect_round_trip(const Tokenizer& tok, const std::string& what) {
  size_t checked = 0;
  for (const auto& doc : corpus()) {
    if (!is_valid_utf8(doc)) continue;
    ++checked;
    for (bool special : {false, true}) {
      auto back = tok.decode(tok.encode(doc, special));
      if (back != doc) {
        ADD_FAILURE() << what << ": decode(encode(x)) != x for " << preview(doc) << "\n  got " << preview(back);
        return;
      }
    }
  }
  EXPECT_GT(checked, 1000u);
}

// The real model's tokenizer, read by load_tokenizer from the .gguf the reference used.
std::unique_ptr<Tokenizer> gguf_tokenizer() {
  std::ifstream in(ref("gguf/source.txt"));
  std::string path((std::istreambuf_iterator<char>(in)), {});
  return load_tokenizer(path);
}

}  // namespace

TEST(Utf8, RepairMatchesPythonDecodeWithReplace) {
  auto repaired = read_docs(ref("repaired.bin"));
  ASSERT_EQ(repaired.size(), corpus().size());
  size_t invalid = 0;
  for (size_t i = 0; i < corpus().size(); ++i) {
    invalid += !is_valid_utf8(corpus()[i]);
    ASSERT_EQ(repair_utf8(corpus()[i]), repaired[i]) << "document " << i << ": " << preview(corpus()[i]);
    ASSERT_TRUE(is_valid_utf8(repaired[i]));
  }
  EXPECT_GT(invalid, 100u);
}

TEST(PreTokenizer, SplitsLikeTheLlama3RegexAndKeepsGaps) {
  PreTokenizer pre(split_regexes_for_pre("llama-bpe"));
  std::vector<std::string_view> pieces;
  pre.split("I'M here:  12345 apples\n\n  ok", pieces);
  std::vector<std::string> got(pieces.begin(), pieces.end());
  EXPECT_EQ(got,
            (std::vector<std::string>{"I", "'M", " here", ":", " ", " ", "123", "45", " apples", "\n\n", " ", " ok"}));
  PreTokenizer digits({R"(\p{N})"});  // only matches: the rest must come back as gaps
  pieces.clear();
  digits.split("ab12c", pieces);
  EXPECT_EQ(std::vector<std::string>(pieces.begin(), pieces.end()), (std::vector<std::string>{"ab", "1", "2", "c"}));
}

TEST(BpeTokenizer, Llama3StyleTokenizerJsonMatchesHfIds) {
  auto tok = load_tokenizer((ref("llama3")).string());
  EXPECT_EQ(count_mismatches(*tok, read_ids(ref("llama3.special.ids"), corpus().size()), true, "llama3 specials"), 0u);
  EXPECT_EQ(count_mismatches(*tok, read_ids(ref("llama3.plain.ids"), corpus().size()), false, "llama3 plain"), 0u);
}

TEST(BpeTokenizer, SmolLmStyleTokenizerJsonMatchesHfIds) {
  auto tok = load_tokenizer((ref("smollm") / "tokenizer.json").string());
  EXPECT_EQ(count_mismatches(*tok, read_ids(ref("smollm.special.ids"), corpus().size()), true, "smollm specials"), 0u);
  EXPECT_EQ(count_mismatches(*tok, read_ids(ref("smollm.plain.ids"), corpus().size()), false, "smollm plain"), 0u);
}

TEST(BpeTokenizer, DecodeOfEncodeIsIdentityOnValidUtf8) {
  expect_round_trip(*load_tokenizer(ref("llama3").string()), "llama3");
  expect_round_trip(*load_tokenizer(ref("smollm").string()), "smollm");
}

TEST(BpeTokenizer, SpecialTokensBosAndDecodeFollowHf) {
  auto tok = load_tokenizer(ref("llama3").string());
  std::ifstream in(ref("llama3.expect.json"));
  auto e = nlohmann::json::parse(in);
  EXPECT_EQ(tok->bos_id(), e["bos"].get<int32_t>());
  EXPECT_EQ(tok->eos_id(), e["eos"].get<int32_t>());
  EXPECT_TRUE(tok->add_bos());
  EXPECT_EQ(tok->vocab_size(), e["vocab_size"].get<int64_t>());
  EXPECT_EQ(tok->chat_format(), "chatml");
  auto ids = tok->encode("hello world");
  ids.insert(ids.begin(), tok->bos_id());
  EXPECT_EQ(ids, e["hello_with_bos"].get<std::vector<int32_t>>());
  const int32_t think = e["think"];
  EXPECT_EQ(tok->token_id("<think>"), think);
  EXPECT_FALSE(tok->is_special(think));
  EXPECT_TRUE(tok->is_special(tok->bos_id()));
  ids.push_back(think);
  EXPECT_EQ(tok->decode(ids), e["decoded_special"].get<std::string>());
  EXPECT_EQ(tok->decode(ids, /*skip_special=*/true), e["decoded_skip"].get<std::string>());
  // Special tokens are text unless parsed; non-special added tokens are always whole.
  EXPECT_EQ(tok->encode("<|im_end|>", true), std::vector<int32_t>{tok->token_id("<|im_end|>")});
  EXPECT_GT(tok->encode("<|im_end|>", false).size(), 1u);
  EXPECT_EQ(tok->encode("<think>", false), std::vector<int32_t>{think});
  EXPECT_THROW(tok->decode({static_cast<int32_t>(tok->vocab_size())}), std::out_of_range);
}

// HF BPE ignore_merges (Llama-3): a word that is itself a token is taken whole even when the merges
// never build it. Vocabulary: the 256 byte tokens, then "ab" and "abc"; the one merge makes "ab".
TEST(BpeTokenizer, IgnoreMergesTakesAWholeWordTokenAsIs) {
  BpeSpec spec;
  for (int b = 0; b < 256; ++b) spec.tokens.push_back(byte_level_spelling(std::string(1, static_cast<char>(b))));
  spec.tokens.push_back("ab");
  spec.tokens.push_back("abc");
  spec.merges = {"a b"};
  spec.split_regexes = {kGpt2SplitRegex};
  auto merged = make_bpe_tokenizer(spec);
  EXPECT_EQ(merged->encode("abc abc"), (std::vector<int32_t>{256, 'c', ' ', 256, 'c'}));
  spec.ignore_merges = true;
  auto whole = make_bpe_tokenizer(spec);
  EXPECT_EQ(whole->encode("abc abc"), (std::vector<int32_t>{257, ' ', 256, 'c'}));
}

TEST(BpeTokenizer, ByteLevelSpellingRoundTripsEveryByte) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  auto spelled = byte_level_spelling(all);
  EXPECT_EQ(byte_level_spelling(" "), "\xC4\xA0");  // "Ġ"
  EXPECT_EQ(byte_level_spelling("\n"), "\xC4\x8A");  // "Ċ"
  EXPECT_EQ(byte_level_bytes(spelled), all);
  EXPECT_THROW(byte_level_bytes("\xE4\xB8\x80"), std::invalid_argument);
}

TEST(SentencePieceTokenizer, MatchesTheSentencePieceLibrary) {
  auto tok = load_tokenizer(ref("spm").string());
  EXPECT_EQ(count_mismatches(*tok, read_ids(ref("spm.ids"), corpus().size()), false, "sentencepiece"), 0u);
  EXPECT_TRUE(tok->add_bos());
  EXPECT_EQ(tok->bos_id(), tok->token_id("<s>"));
  EXPECT_EQ(tok->eos_id(), tok->token_id("</s>"));
  EXPECT_TRUE(tok->is_special(tok->bos_id()));
  EXPECT_EQ(tok->encode("<s>hi", true).front(), tok->bos_id());
  EXPECT_NE(tok->encode("<s>hi", false).front(), tok->bos_id());
  auto ids = tok->encode("hi there");
  ids.insert(ids.begin(), tok->bos_id());
  EXPECT_EQ(tok->decode(ids), "<s>hi there");
  EXPECT_EQ(tok->decode(ids, /*skip_special=*/true), "hi there");
  EXPECT_EQ(tok->token_bytes(tok->token_id("<0x0A>")), "\n");
}

TEST(SentencePieceTokenizer, DecodeOfEncodeIsIdentityOnValidUtf8) {
  expect_round_trip(*load_tokenizer(ref("spm").string()), "sentencepiece");
}

// Where transformers' LlamaTokenizer knowingly departs from SentencePiece (text starting with a space,
// added tokens in the text: see tokenizer_ref.py) the documents are left out; elsewhere ids must agree.
TEST(SentencePieceTokenizer, AgreesWithTransformersLlamaTokenizer) {
  auto tok = load_tokenizer(ref("spm").string());
  auto hf = read_ids(ref("spm.hf.ids"), corpus().size());
  std::ifstream in(ref("spm.hf.comparable.json"));
  auto comparable = nlohmann::json::parse(in).get<std::vector<size_t>>();
  EXPECT_GT(comparable.size(), 1000u);
  size_t bad = 0;
  for (size_t i : comparable)
    if (tok->encode(corpus()[i]) != hf[i] && ++bad <= 3)
      ADD_FAILURE() << "document " << i << ": " << preview(corpus()[i]);
  EXPECT_EQ(bad, 0u);
}

TEST(GgufTokenizer, SmolLM2GgufMatchesHfIds) {
  if (!fs::exists(ref("gguf/source.txt"))) GTEST_SKIP() << "no byte-level GGUF under models/ (scripts/get-model.sh)";
  auto tok = gguf_tokenizer();
  EXPECT_EQ(count_mismatches(*tok, read_ids(ref("gguf/gguf.ids"), corpus().size()), true, "gguf"), 0u);
  expect_round_trip(*tok, "gguf");
  EXPECT_EQ(tok->chat_format(), "chatml");
  EXPECT_FALSE(tok->add_bos());
}

TEST(TokenizerErrors, UnsupportedTokenizerJsonNamesFileAndKey) {
  auto dir = uio::test::scratch_dir();
  auto j = nlohmann::json::parse(uio::test::read_file(ref("smollm/tokenizer.json")));
  j["normalizer"] = {{"type", "NFC"}};
  uio::test::write_file(dir / "tokenizer.json", j.dump());
  try {
    load_tokenizer(dir.string());
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "tokenizer.json").string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'normalizer' is 'NFC'"), std::string::npos) << e.what();
  }
  try {
    split_regexes_for_pre("no-such-pre");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown pre-tokenizer 'no-such-pre'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_tokenizer((dir / "missing").string()), std::invalid_argument);
}
