// tests/prepare_test.cpp — corpus preparation: file discovery and order, document splitting, binary
// files, the empty-corpus error, the held-out rule and its stability, the summary's histogram.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>
#include <sstream>

#include "data/prepare.h"
#include "data/token_store.h"
#include "tests/test_util.h"

using uio::data::prepare_corpus;
using uio::data::PrepareOptions;
using uio::data::Split;
using uio::data::TokenStore;

namespace {

namespace fs = std::filesystem;

// Test double: one id per byte (id = byte + offset), EOS the last id. Independent of the real
// tokenizers, so a stored document can be compared with its file's bytes.
class ByteTokenizer : public uio::data::Tokenizer {
 public:
  explicit ByteTokenizer(int64_t vocab = 257) : vocab_(vocab), offset_(static_cast<int32_t>(vocab - 257)) {}
  std::vector<int32_t> encode(std::string_view text, bool = false) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c + offset_);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids, bool = false) const override {
    std::string s;
    for (auto id : ids) s += token_bytes(id);
    return s;
  }
  std::string token_bytes(int32_t id) const override {
    return id >= offset_ && id < offset_ + 256 ? std::string(1, static_cast<char>(id - offset_)) : "";
  }
  int64_t vocab_size() const override { return vocab_; }
  int32_t bos_id() const override { return -1; }
  int32_t eos_id() const override { return static_cast<int32_t>(vocab_ - 1); }
  bool add_bos() const override { return false; }
  bool is_special(int32_t id) const override { return id == eos_id(); }
  int32_t token_id(std::string_view) const override { return -1; }

 private:
  int64_t vocab_;
  int32_t offset_;
};

std::string random_text(std::mt19937_64& rng, size_t n) {
  static const std::string letters = "abcdefghijklmnopqrstuvwxyz ,.\n";
  std::string s;
  for (size_t i = 0; i < n; ++i) s += letters[rng() % letters.size()];
  return s;
}

std::string decode_doc(const TokenStore& store, int64_t i) {
  return ByteTokenizer(store.meta().vocab_size).decode(store.tokens(i));
}

PrepareOptions options_for(const fs::path& in, const fs::path& out, int threads = 2) {
  PrepareOptions o;
  o.inputs = {in.string()};
  o.out_dir = out.string();
  o.threads = threads;
  o.seed = 11;
  return o;
}

}  // namespace

TEST(Prepare, StoresEveryFileAsOneRawDocumentInPathOrder) {
  std::mt19937_64 rng(uio::test::test_seed());
  const auto root = uio::test::scratch_dir();
  const auto in = root / "corpus";
  std::map<std::string, std::string> files;  // sorted by relative path, as the store should be
  for (int i = 0; i < 37; ++i) {
    const std::string folder = i % 3 ? "sub" + std::to_string(i % 4) + "/" : "";
    const std::string rel = folder + "f" + std::to_string(rng() % 1000000) + ".txt";
    fs::create_directories((in / rel).parent_path());
    files[rel] = random_text(rng, 1 + rng() % 400);
    uio::test::write_file(in / rel, files[rel]);
  }
  uio::test::write_file(in / ".stamp", "hidden files are not documents");
  fs::create_directories(in / ".git");
  uio::test::write_file(in / ".git" / "HEAD", "neither are hidden folders");

  std::ostringstream log;
  const auto summary = prepare_corpus(options_for(in, root / "store", 4), ByteTokenizer(), log);
  TokenStore store((root / "store").string());
  ASSERT_EQ(store.num_documents(), static_cast<int64_t>(files.size())) << log.str();
  int64_t i = 0, bytes = 0;
  for (const auto& [rel, text] : files) {
    EXPECT_EQ(store.document(i).source, rel);
    EXPECT_EQ(decode_doc(store, i), text) << rel;  // no BOS, no EOS
    bytes += static_cast<int64_t>(text.size());
    ++i;
  }
  EXPECT_EQ(summary.documents, store.num_documents());
  EXPECT_EQ(summary.tokens, bytes);
  EXPECT_EQ(summary.files, static_cast<int64_t>(files.size()));
  EXPECT_EQ(store.meta().eos_id, 256);
  EXPECT_NE(store.meta().tokenizer.find("vocab=257"), std::string::npos);
  EXPECT_NE(log.str().find("prepare 100.0% 0."), std::string::npos) << log.str();  // the progress bar's last line
}

TEST(Prepare, ThreadCountDoesNotChangeTheStore) {
  std::mt19937_64 rng(uio::test::test_seed());
  const auto root = uio::test::scratch_dir();
  fs::create_directories(root / "in");
  for (int i = 0; i < 60; ++i)
    uio::test::write_file(root / "in" / ("f" + std::to_string(1000 + i)), random_text(rng, rng() % 3000));
  std::ostringstream log;
  prepare_corpus(options_for(root / "in", root / "one", 1), ByteTokenizer(), log);
  prepare_corpus(options_for(root / "in", root / "many", 7), ByteTokenizer(), log);
  EXPECT_EQ(uio::test::read_file(root / "one" / "tokens.bin"), uio::test::read_file(root / "many" / "tokens.bin"));
  EXPECT_EQ(uio::test::read_file(root / "one" / "index.bin"), uio::test::read_file(root / "many" / "index.bin"));
}

TEST(Prepare, SeparatorSplitsFilesIntoNumberedParts) {
  const auto root = uio::test::scratch_dir();
  fs::create_directories(root / "in");
  uio::test::write_file(root / "in" / "a.txt", "first\npart\n<|doc|>\nsecond\r\n<|doc|>\r\n<|doc|> not alone\nthird");
  auto o = options_for(root / "in", root / "store");
  o.separator = "<|doc|>";
  std::ostringstream log;
  const auto summary = prepare_corpus(o, ByteTokenizer(), log);
  TokenStore store((root / "store").string());
  ASSERT_EQ(store.num_documents(), 3);
  EXPECT_EQ(store.document(0).source, "a.txt#0");
  EXPECT_EQ(decode_doc(store, 0), "first\npart\n");
  EXPECT_EQ(store.document(1).source, "a.txt#1");
  EXPECT_EQ(decode_doc(store, 1), "second\r\n");
  EXPECT_EQ(decode_doc(store, 2), "<|doc|> not alone\nthird");
  EXPECT_EQ(summary.empty_documents, 0);
}

TEST(Prepare, BinaryFilesAreSkippedNamedAndCounted) {
  std::mt19937_64 rng(uio::test::test_seed());
  const auto root = uio::test::scratch_dir();
  fs::create_directories(root / "in");
  uio::test::write_file(root / "in" / "text.txt", "caf\xc3\xa9 is valid UTF-8, and so is this: \xe2\x82\xac");
  uio::test::write_file(root / "in" / "nul.bin", "looks like text" + std::string(1, '\0') + "but is not");
  // The threshold is 1% of bytes outside valid UTF-8: 11 lone Latin-1 bytes in 1,000 are too many,
  // 9 (say, a few stray bytes in a text file) are let through.
  std::string latin1 = random_text(rng, 1000), mostly_ok = random_text(rng, 1000);
  for (int i = 0; i < 11; ++i) latin1[50 * i + rng() % 40] = static_cast<char>(0xE9);
  for (int i = 0; i < 9; ++i) mostly_ok[50 * i + rng() % 40] = static_cast<char>(0xFF);
  uio::test::write_file(root / "in" / "latin1.txt", latin1);
  uio::test::write_file(root / "in" / "few_bad_bytes.txt", mostly_ok);

  std::ostringstream log;
  const auto summary = prepare_corpus(options_for(root / "in", root / "store"), ByteTokenizer(), log);
  EXPECT_EQ(summary.skipped_files, 2);
  EXPECT_EQ(summary.documents, 2);
  const std::string nul_warning =
      "skipping " + (root / "in" / "nul.bin").string() + ", it looks binary (a NUL byte at offset 15)";
  EXPECT_NE(log.str().find(nul_warning), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("latin1.txt, it looks binary ("), std::string::npos) << log.str();
  TokenStore store((root / "store").string());
  EXPECT_EQ(store.document(0).source, "few_bad_bytes.txt");
  EXPECT_EQ(store.document(1).source, "text.txt");
}

TEST(Prepare, EmptyCorpusIsAnErrorNamingTheInputs) {
  const auto root = uio::test::scratch_dir();
  fs::create_directories(root / "in");
  std::ostringstream log;
  try {
    prepare_corpus(options_for(root / "in", root / "store"), ByteTokenizer(), log);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no documents found in " + (root / "in").string()), std::string::npos)
        << e.what();
  }
  uio::test::write_file(root / "in" / "empty.txt", "");
  uio::test::write_file(root / "in" / "nul.txt", std::string(3, '\0'));
  try {
    prepare_corpus(options_for(root / "in", root / "store"), ByteTokenizer(), log);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no documents found"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("1 binary"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(root / "store" / "index.bin"));
  EXPECT_FALSE(fs::exists(root / "store" / "tokens.bin.tmp"));
  auto missing = options_for(root / "nowhere", root / "store");
  EXPECT_THROW(prepare_corpus(missing, ByteTokenizer(), log), std::runtime_error);
}

TEST(Prepare, HeldOutSplitFollowsNamesAndSurvivesAddingDocuments) {
  std::mt19937_64 rng(uio::test::test_seed());
  const auto root = uio::test::scratch_dir();
  fs::create_directories(root / "in");
  const int n = 400;
  for (int i = 0; i < n; ++i)
    uio::test::write_file(root / "in" / ("doc" + std::to_string(rng()) + ".txt"), random_text(rng, 20));
  auto o = options_for(root / "in", root / "before");
  o.heldout_fraction = 0.25;
  std::ostringstream log;
  const auto summary = prepare_corpus(o, ByteTokenizer(), log);
  // Binomial(400, 0.25): mean 100, sd 8.7; +-5 sd.
  EXPECT_GT(summary.heldout_documents, 56);
  EXPECT_LT(summary.heldout_documents, 144);
  TokenStore before((root / "before").string());
  std::map<std::string, Split> split_before;
  for (int64_t i = 0; i < before.num_documents(); ++i) {
    const auto& d = before.document(i);
    split_before[d.source] = d.split;
    EXPECT_EQ(d.split, uio::data::heldout_split(d.source, 0.25, 11));
  }

  for (int i = 0; i < 50; ++i)
    uio::test::write_file(root / "in" / ("new" + std::to_string(rng()) + ".txt"), random_text(rng, 20));
  o.out_dir = (root / "after").string();
  prepare_corpus(o, ByteTokenizer(), log);
  TokenStore after((root / "after").string());
  ASSERT_EQ(after.num_documents(), n + 50);
  int kept = 0;
  for (int64_t i = 0; i < after.num_documents(); ++i) {
    const auto& d = after.document(i);
    if (auto it = split_before.find(d.source); it != split_before.end()) {
      EXPECT_EQ(d.split, it->second) << d.source;
      ++kept;
    }
  }
  EXPECT_EQ(kept, n);

  // Another seed draws another split; fraction 0 and 1 are all-train and all-held-out.
  int differ = 0;
  for (const auto& [name, split] : split_before) differ += uio::data::heldout_split(name, 0.25, 12) != split;
  EXPECT_GT(differ, 20);
  EXPECT_EQ(uio::data::heldout_split("x", 0.0, 1), Split::train);
  EXPECT_EQ(uio::data::heldout_split("x", 1.0, 1), Split::heldout);
}

TEST(Prepare, SummaryCountsLengthBucketsAndLongDocuments) {
  std::mt19937_64 rng(uio::test::test_seed());
  const auto root = uio::test::scratch_dir();
  fs::create_directories(root / "in");
  const std::vector<size_t> lengths = {1023, 1024, 8191, 8192, 32767, 32768, 99999, 100000, 150000, 5};
  for (size_t i = 0; i < lengths.size(); ++i)
    uio::test::write_file(root / "in" / ("d" + std::to_string(i)), random_text(rng, lengths[i]));
  std::ostringstream log;
  const auto s = prepare_corpus(options_for(root / "in", root / "store"), ByteTokenizer(), log);
  EXPECT_EQ(s.length_histogram, (std::array<int64_t, 5>{2, 2, 2, 2, 2}));
  EXPECT_EQ(s.documents_32k, 4);
  EXPECT_EQ(s.documents_100k, 2);
  EXPECT_EQ(s.tokens, 1023 + 1024 + 8191 + 8192 + 32767 + 32768 + 99999 + 100000 + 150000 + 5);
  EXPECT_GT(s.tokens_per_second, 0);
  EXPECT_NE(log.str().find("lengths: <1K 2, 1K-8K 2, 8K-32K 2, 32K-100K 2, >=100K 2"), std::string::npos) << log.str();
}

TEST(Prepare, GlobsAndFilesNameDocumentsRelativeToTheirRoot) {
  const auto root = uio::test::scratch_dir();
  fs::create_directories(root / "in" / "a");
  fs::create_directories(root / "in" / "b");
  uio::test::write_file(root / "in" / "a" / "x.txt", "ax");
  uio::test::write_file(root / "in" / "b" / "y.txt", "by");
  uio::test::write_file(root / "in" / "b" / "z.md", "bz");
  PrepareOptions o = options_for(root / "in", root / "store");
  o.inputs = {(root / "in" / "*" / "*.txt").string(), (root / "in" / "b" / "z.md").string(),
              (root / "in" / "a").string()};  // a/x.txt again: read once
  std::ostringstream log;
  prepare_corpus(o, ByteTokenizer(70000), log);
  TokenStore store((root / "store").string());
  ASSERT_EQ(store.num_documents(), 3);
  EXPECT_EQ(store.document(0).source, "a/x.txt");
  EXPECT_EQ(store.document(1).source, "b/y.txt");
  EXPECT_EQ(store.document(2).source, "z.md");
  EXPECT_EQ(store.bytes_per_token(), 4);
  EXPECT_EQ(decode_doc(store, 1), "by");
}

// A pattern in --inputs that matches no file is an error naming it (a typo would otherwise drop part of
// the corpus without a word), even when the other inputs hold documents.
TEST(Prepare, AGlobThatMatchesNothingIsAnErrorNamingThePattern) {
  const auto root = uio::test::scratch_dir();
  fs::create_directories(root / "in" / "sub.txt");  // a directory that the pattern matches: still no file
  uio::test::write_file(root / "in" / "a.txt", "some text to keep");
  auto options = options_for(root / "in", root / "store");
  for (const auto& pattern : {(root / "in" / "*.md").string(), (root / "in" / "sub*").string()}) {
    options.inputs = {(root / "in" / "a.txt").string(), pattern};
    std::ostringstream log;
    try {
      prepare_corpus(options, ByteTokenizer(), log);
      ADD_FAILURE() << pattern << " was skipped without a word";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("the pattern '" + pattern + "' matches no file"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_FALSE(fs::exists(root / "store" / "index.bin"));
}
