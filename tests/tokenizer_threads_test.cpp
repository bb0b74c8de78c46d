// tests/tokenizer_threads_test.cpp — the BPE tokenizer called from several threads at once (as
// prepare_corpus does): threads on different texts and on the same text give HF's ids
// (tests/reference/tokenizer_ref.py), and a word cache that fills and empties under concurrent use
// gives the ids of a single-threaded run.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <random>
#include <thread>

#include "data/tokenizer.h"
#include "tests/test_util.h"
#include "tests/tokenizer_ref.h"

namespace {

namespace fs = std::filesystem;

constexpr int kThreads = 8;

fs::path ref_path(const std::string& name) { return uio::test::tokenizer_ref(name); }
using uio::test::read_docs;
using uio::test::read_ids;

// Runs `body(t)` on kThreads threads released together, so their calls overlap.
template <class Body>
void run_together(Body body) {
  std::atomic<int> ready{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t)
    pool.emplace_back([&, t] {
      ++ready;
      while (ready.load() < kThreads) std::this_thread::yield();
      body(t);
    });
  for (auto& th : pool) th.join();
}

// Text of `words` random words (3-9 letters, some with digits or a non-ASCII letter) and spaces,
// nearly all distinct, so each fills a new word-cache entry.
std::string random_words(std::mt19937_64& rng, int words) {
  static const std::vector<std::string> letters = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k",
                                                   "l", "m", "n", "o", "p", "q", "r", "s", "t", "u", "v",
                                                   "w", "x", "y", "z", "é", "ß", "ø", "7", "3"};
  std::string s;
  for (int w = 0; w < words; ++w) {
    const int len = 3 + static_cast<int>(rng() % 7);
    s += rng() % 8 == 0 ? "\n" : " ";
    for (int k = 0; k < len; ++k) s += letters[rng() % letters.size()];
  }
  return s;
}

}  // namespace

TEST(TokenizerThreads, ManyThreadsOnDifferentAndOnTheSameTextsGiveHuggingFacesIds) {
  const auto docs = read_docs(ref_path("corpus.bin"));
  for (const std::string name : {"smollm", "llama3"}) {
    SCOPED_TRACE(name);
    const auto want = read_ids(ref_path(name + ".plain.ids"), docs.size());
    const auto tokenizer = uio::data::load_tokenizer(ref_path(name).string());  // fresh: its word cache is empty

    // Different texts at once: thread t takes every kThreads-th document from t.
    std::vector<std::vector<int32_t>> got(docs.size());
    run_together([&](int t) {
      for (size_t i = static_cast<size_t>(t); i < docs.size(); i += kThreads) got[i] = tokenizer->encode(docs[i]);
    });
    size_t mismatches = 0;
    for (size_t i = 0; i < docs.size(); ++i) mismatches += got[i] != want[i];
    EXPECT_EQ(mismatches, 0u) << "documents whose ids differ from HF's when encoded on " << kThreads << " threads";

    // The same text at once: every thread encodes each of the 8 longest documents.
    std::vector<size_t> longest(docs.size());
    for (size_t i = 0; i < docs.size(); ++i) longest[i] = i;
    std::partial_sort(longest.begin(), longest.begin() + 8, longest.end(),
                      [&](size_t a, size_t b) { return docs[a].size() > docs[b].size(); });
    std::vector<int> wrong(kThreads, 0);
    const auto fresh = uio::data::load_tokenizer(ref_path(name).string());
    run_together([&](int t) {
      for (int k = 0; k < 8; ++k) wrong[t] += fresh->encode(docs[longest[k]]) != want[longest[k]];
    });
    for (int t = 0; t < kThreads; ++t) EXPECT_EQ(wrong[t], 0) << "thread " << t << " on the shared documents";
  }
}

TEST(TokenizerThreads, WordCacheEmptiedWhileOtherThreadsReadItKeepsIdsExact) {
  // 8 threads x 20,000 new words > the cache's 131,072 entries: it is cleared while others look up.
  std::mt19937_64 rng(uio::test::test_seed());
  std::vector<std::string> texts;
  for (int t = 0; t < kThreads; ++t) texts.push_back(random_words(rng, 20000));
  const auto single = uio::data::load_tokenizer(ref_path("smollm").string());
  std::vector<std::vector<int32_t>> want;
  for (const auto& text : texts) want.push_back(single->encode(text));

  const auto shared = uio::data::load_tokenizer(ref_path("smollm").string());
  std::vector<std::vector<int32_t>> got(kThreads), again(kThreads);
  run_together([&](int t) {
    got[t] = shared->encode(texts[t]);
    again[t] = shared->encode(texts[(t + 1) % kThreads]);  // words other threads just cached (or evicted)
  });
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(got[t], want[t]) << "thread " << t;
    EXPECT_EQ(again[t], want[(t + 1) % kThreads]) << "thread " << t << ", second text";
  }
}
