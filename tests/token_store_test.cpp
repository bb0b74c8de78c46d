// tests/token_store_test.cpp — the token store's file format: round trips at both token widths, and
// the errors for index/token-file mismatches, truncation and damaged ids.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "data/token_store.h"
#include "tests/test_util.h"

using uio::data::Split;
using uio::data::TokenStore;
using uio::data::TokenStoreWriter;

namespace {

namespace fs = std::filesystem;

struct Doc {
  std::string source;
  Split split;
  std::vector<int32_t> tokens;
};

std::vector<Doc> random_docs(std::mt19937_64& rng, int64_t vocab, int count) {
  std::vector<Doc> docs;
  for (int i = 0; i < count; ++i) {
    Doc d{"dir/doc_" + std::to_string(rng() % 100000) + ".txt", rng() % 3 == 0 ? Split::heldout : Split::train, {}};
    d.tokens.resize(rng() % 300);
    for (auto& t : d.tokens) t = static_cast<int32_t>(rng() % vocab);
    docs.push_back(d);
  }
  return docs;
}

void write_store(const fs::path& dir, int64_t vocab, const std::vector<Doc>& docs) {
  TokenStoreWriter w(dir.string(), {vocab, static_cast<int32_t>(vocab - 1), "test tokenizer"});
  for (const auto& d : docs) w.add(d.source, d.split, d.tokens);
  w.finish();
}

void expect_round_trip(int64_t vocab, int expected_width) {
  std::mt19937_64 rng(uio::test::test_seed());
  const auto dir = uio::test::scratch_dir() / "store";
  const auto docs = random_docs(rng, vocab, 40);
  write_store(dir, vocab, docs);

  TokenStore store(dir.string());
  ASSERT_EQ(store.num_documents(), static_cast<int64_t>(docs.size()));
  EXPECT_EQ(store.bytes_per_token(), expected_width);
  EXPECT_EQ(store.meta().vocab_size, vocab);
  EXPECT_EQ(store.meta().eos_id, vocab - 1);
  EXPECT_EQ(store.meta().tokenizer, "test tokenizer");
  int64_t total = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    const auto& d = store.document(static_cast<int64_t>(i));
    EXPECT_EQ(d.source, docs[i].source);
    EXPECT_EQ(d.split, docs[i].split);
    EXPECT_EQ(d.offset, total);
    EXPECT_EQ(store.tokens(static_cast<int64_t>(i)), docs[i].tokens) << "document " << i;
    total += static_cast<int64_t>(docs[i].tokens.size());
  }
  EXPECT_EQ(store.num_tokens(), total);
  EXPECT_EQ(static_cast<int64_t>(fs::file_size(dir / "tokens.bin")), total * expected_width);
  // A slice in the middle, read as int64 too.
  const auto& longest = *std::max_element(docs.begin(), docs.end(),
                                          [](const Doc& a, const Doc& b) { return a.tokens.size() < b.tokens.size(); });
  const auto li = std::distance(docs.data(), &longest);
  std::vector<int64_t> slice(50);
  store.read(li, 7, 50, slice.data());
  for (int k = 0; k < 50; ++k) EXPECT_EQ(slice[k], longest.tokens[7 + k]);
}

std::string error_of(const fs::path& dir) {
  try {
    TokenStore store(dir.string());
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(TokenStore, RoundTripsDocumentsWithSixteenBitTokens) { expect_round_trip(256 + 17, 2); }

TEST(TokenStore, UsesSixteenBitsUpToExactly65536Ids) { expect_round_trip(65536, 2); }

TEST(TokenStore, RoundTripsDocumentsWithThirtyTwoBitTokens) { expect_round_trip(70000, 4); }

TEST(TokenStore, IndexAndTokenFileMismatchNamesBothFilesAndCounts) {
  std::mt19937_64 rng(uio::test::test_seed());
  const auto dir = uio::test::scratch_dir() / "store";
  write_store(dir, 1000, random_docs(rng, 1000, 10));
  const auto n = static_cast<int64_t>(fs::file_size(dir / "tokens.bin")) / 2;
  fs::resize_file(dir / "tokens.bin", (n - 5) * 2);
  const auto msg = error_of(dir);
  EXPECT_NE(msg.find("index.bin says " + std::to_string(n) + " tokens but tokens.bin holds " + std::to_string(n - 5)),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find(dir.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("re-run uio prepare"), std::string::npos) << msg;

  fs::resize_file(dir / "tokens.bin", (n + 3) * 2);  // too long is as wrong as too short
  EXPECT_NE(error_of(dir).find("tokens.bin holds " + std::to_string(n + 3)), std::string::npos) << error_of(dir);
  fs::resize_file(dir / "tokens.bin", n * 2 + 1);  // a torn last token
  EXPECT_NE(error_of(dir).find("index.bin says"), std::string::npos) << error_of(dir);
}

TEST(TokenStore, EveryTruncationOfTheIndexIsRejected) {
  std::mt19937_64 rng(uio::test::test_seed());
  const auto dir = uio::test::scratch_dir() / "store";
  write_store(dir, 500, random_docs(rng, 500, 4));
  const std::string full = uio::test::read_file(dir / "index.bin");
  for (size_t cut = 0; cut < full.size(); ++cut) {
    uio::test::write_file(dir / "index.bin", full.substr(0, cut));
    EXPECT_FALSE(error_of(dir).empty()) << "index cut to " << cut << " of " << full.size() << " bytes was accepted";
  }
  uio::test::write_file(dir / "index.bin", full.substr(0, 30));
  EXPECT_NE(error_of(dir).find("index.bin is truncated"), std::string::npos) << error_of(dir);
  uio::test::write_file(dir / "index.bin", full + "x");
  EXPECT_NE(error_of(dir).find("1 bytes after its last document"), std::string::npos) << error_of(dir);
  uio::test::write_file(dir / "index.bin", full);
  EXPECT_NO_THROW(TokenStore(dir.string()));
}

TEST(TokenStore, MissingStoreAndForeignFileAreExplained) {
  const auto dir = uio::test::scratch_dir();
  EXPECT_NE(error_of(dir / "nowhere").find("cannot open"), std::string::npos);
  uio::test::write_file(dir / "index.bin", "GGUF and other things, long enough to read a header from");
  EXPECT_NE(error_of(dir).find("not a uio token index"), std::string::npos) << error_of(dir);
}

TEST(TokenStore, DamagedTokenIdIsReportedOnRead) {
  std::mt19937_64 rng(uio::test::test_seed());
  const auto dir = uio::test::scratch_dir() / "store";
  auto docs = random_docs(rng, 300, 3);
  docs[1].tokens.assign(20, 5);
  write_store(dir, 300, docs);
  std::string bytes = uio::test::read_file(dir / "tokens.bin");
  const size_t at = 2 * (docs[0].tokens.size() + 4);
  bytes[at] = '\xff';
  bytes[at + 1] = '\xff';
  uio::test::write_file(dir / "tokens.bin", bytes);
  TokenStore store(dir.string());
  try {
    store.tokens(1);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("holds id 65535"), std::string::npos) << e.what();
  }
  EXPECT_EQ(store.tokens(1, 0, 4), std::vector<int32_t>(4, 5));
  EXPECT_THROW(store.tokens(1, 15, 6), std::out_of_range);
  EXPECT_THROW(store.document(3), std::out_of_range);
}

TEST(TokenStore, WriterRejectsIdsOutsideTheVocabulary) {
  TokenStoreWriter w((uio::test::scratch_dir() / "store").string(), {100, 99, "t"});
  try {
    w.add("a.txt", Split::train, {3, 100});
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'a.txt' has token id 100 at position 1"), std::string::npos) << e.what();
  }
}

TEST(TokenStore, UnfinishedWriterLeavesTheEarlierStoreIntact) {
  std::mt19937_64 rng(uio::test::test_seed());
  const auto dir = uio::test::scratch_dir() / "store";
  const auto docs = random_docs(rng, 400, 5);
  write_store(dir, 400, docs);
  {
    TokenStoreWriter w(dir.string(), {400, 399, "t"});
    w.add("other.txt", Split::train, {1, 2, 3});
  }
  EXPECT_FALSE(fs::exists(dir / "tokens.bin.tmp"));
  EXPECT_FALSE(fs::exists(dir / "index.bin.tmp"));
  TokenStore store(dir.string());
  ASSERT_EQ(store.num_documents(), 5);
  EXPECT_EQ(store.tokens(4), docs[4].tokens);
}

// A directory where index.bin or tokens.bin should be, or a file given as the store: the message names
// the path and what a store is (no "truncated" for an unreadable directory, no path left out).
TEST(TokenStore, ADirectoryInPlaceOfItsFilesOrAFileAsTheStoreIsNamed) {
  std::mt19937_64 rng(uio::test::test_seed());
  const auto dir = uio::test::scratch_dir() / "store";
  write_store(dir, 500, random_docs(rng, 500, 4));
  const auto index = uio::test::read_file(dir / "index.bin");
  fs::remove(dir / "index.bin");
  fs::create_directories(dir / "index.bin");
  EXPECT_NE(error_of(dir).find((dir / "index.bin").string() + " is not a regular file"), std::string::npos)
      << error_of(dir);
  fs::remove(dir / "index.bin");
  uio::test::write_file(dir / "index.bin", index);
  fs::remove(dir / "tokens.bin");
  fs::create_directories(dir / "tokens.bin");
  EXPECT_NE(error_of(dir).find((dir / "tokens.bin").string()), std::string::npos) << error_of(dir);
  EXPECT_NE(error_of(dir / "index.bin").find((dir / "index.bin").string() + " is a file; pass the directory"),
            std::string::npos)
      << error_of(dir / "index.bin");
}

// The EOS id the join sampler puts between documents is checked against the vocabulary when the store
// opens (index.bin: magic 8, version 4, width 4, vocabulary 8, then the EOS id as int64).
TEST(TokenStore, AnEosIdOutsideTheVocabularyIsRefusedWhenTheStoreOpens) {
  std::mt19937_64 rng(uio::test::test_seed());
  const auto dir = uio::test::scratch_dir() / "store";
  write_store(dir, 500, random_docs(rng, 500, 4));
  auto index = uio::test::read_file(dir / "index.bin");
  for (const int64_t eos : {int64_t{500}, int64_t{-7}, int64_t{1} << 40}) {
    std::memcpy(&index[24], &eos, 8);
    uio::test::write_file(dir / "index.bin", index);
    EXPECT_NE(error_of(dir).find("EOS id is " + std::to_string(eos) + ", outside the vocabulary [0, 500)"),
              std::string::npos)
        << error_of(dir);
  }
}

// check_ids scans the whole store against a model's vocabulary: the first id past it is named with
// its document and position.
TEST(TokenStore, CheckIdsNamesTheFirstIdPastTheModelsVocabulary) {
  const auto dir = uio::test::scratch_dir() / "store";
  TokenStoreWriter w(dir.string(), {1000, 999, "t"});
  w.add("a.txt", Split::train, {1, 2, 3});
  w.add("b.txt", Split::heldout, {4, 700, 5});
  w.finish();
  TokenStore store(dir.string());
  EXPECT_NO_THROW(store.check_ids(701, "model.gguf"));
  try {
    store.check_ids(700, "model.gguf");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("id 700 at token 1 of document 'b.txt', outside the vocabulary of 700 ids "
                                         "of model.gguf"),
              std::string::npos)
        << e.what();
  }
}
