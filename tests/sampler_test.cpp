// tests/sampler_test.cpp — the training-sequence sampler: determinism, exact resume, disjoint rank
// shares, EOS between joined documents, and the errors for too little text.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "data/sampler.h"
#include "data/token_store.h"
#include "tests/test_util.h"

using uio::data::Sampler;
using uio::data::SamplerMode;
using uio::data::SamplerOptions;
using uio::data::SamplerState;
using uio::data::Sequence;
using uio::data::Split;
using uio::data::TokenStore;

namespace {

namespace fs = std::filesystem;

constexpr int64_t kVocab = 1 << 20;
constexpr int32_t kEos = kVocab - 1;

// Documents whose tokens are all distinct (a random permutation of ids), so every token tells
// where it came from: the reference the sampler's output is checked against.
struct Corpus {
  fs::path dir;
  std::vector<std::vector<int32_t>> docs;
  std::vector<Split> splits;
  std::map<int32_t, std::pair<size_t, int64_t>> where;  // token -> (document, position)
};

Corpus make_corpus(const std::vector<int64_t>& lengths, std::vector<Split> splits = {}) {
  std::mt19937_64 rng(uio::test::test_seed());
  Corpus c;
  c.dir = uio::test::scratch_dir() / "store";
  int64_t total = 0;
  for (auto n : lengths) total += n;
  std::vector<int32_t> ids(static_cast<size_t>(total));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  if (splits.empty()) splits.assign(lengths.size(), Split::train);
  c.splits = splits;
  uio::data::TokenStoreWriter w(c.dir.string(), {kVocab, kEos, "distinct ids"});
  size_t next = 0;
  for (size_t d = 0; d < lengths.size(); ++d) {
    std::vector<int32_t> doc(ids.begin() + next, ids.begin() + next + lengths[d]);
    next += lengths[d];
    for (int64_t p = 0; p < lengths[d]; ++p) c.where[doc[p]] = {d, p};
    w.add("doc" + std::to_string(d), splits[d], doc);
    c.docs.push_back(doc);
  }
  w.finish();
  return c;
}

std::vector<int64_t> to_vector(const Sequence& s) {
  return std::vector<int64_t>(s.tokens.data_ptr<int64_t>(), s.tokens.data_ptr<int64_t>() + s.tokens.numel());
}

std::vector<std::vector<int64_t>> draw(Sampler& s, int n) {
  std::vector<std::vector<int64_t>> out;
  for (int i = 0; i < n; ++i) out.push_back(to_vector(s.next()));
  return out;
}

SamplerOptions opts(int64_t len, SamplerMode mode, uint64_t seed, int rank = 0, int world = 1) {
  SamplerOptions o;
  o.seq_len = len;
  o.mode = mode;
  o.seed = seed;
  o.rank = rank;
  o.world_size = world;
  return o;
}

}  // namespace

TEST(Sampler, LongOnlyWindowsAreWholeSlicesOfLongTrainDocumentsWithoutOverlap) {
  std::mt19937_64 rng(uio::test::test_seed());
  std::vector<int64_t> lengths;
  std::vector<Split> splits;
  for (int i = 0; i < 30; ++i) {
    lengths.push_back(10 + static_cast<int64_t>(rng() % 400));
    splits.push_back(i % 7 == 3 ? Split::heldout : Split::train);
  }
  const auto c = make_corpus(lengths, splits);
  TokenStore store(c.dir.string());
  const int64_t L = 64;
  int64_t expected = 0;
  for (size_t d = 0; d < lengths.size(); ++d)
    if (splits[d] == Split::train) expected += lengths[d] / L;
  Sampler sampler(store, opts(L, SamplerMode::long_only, 5));
  ASSERT_EQ(sampler.sequences_per_epoch(), expected);

  std::set<int64_t> seen;
  for (int64_t k = 0; k < expected; ++k) {
    const auto s = sampler.next();
    EXPECT_EQ(s.epoch, 0);
    EXPECT_EQ(s.index, k);
    const auto t = to_vector(s);
    ASSERT_EQ(static_cast<int64_t>(t.size()), L);
    const auto [doc, pos] = c.where.at(static_cast<int32_t>(t[0]));
    EXPECT_EQ(splits[doc], Split::train);
    EXPECT_GE(lengths[doc], L);
    for (int64_t i = 0; i < L; ++i) {
      ASSERT_EQ(c.where.at(static_cast<int32_t>(t[i])), std::make_pair(doc, pos + i)) << "not one slice";
      EXPECT_TRUE(seen.insert(t[i]).second) << "windows overlap within an epoch";
    }
  }
  EXPECT_EQ(sampler.next().epoch, 1);
}

TEST(Sampler, SameSeedSameStreamOtherSeedOtherStream) {
  const auto c = make_corpus({500, 800, 300, 1200, 64, 900});
  TokenStore store(c.dir.string());
  for (auto mode : {SamplerMode::long_only, SamplerMode::join}) {
    Sampler a(store, opts(50, mode, 42)), b(store, opts(50, mode, 42)), other(store, opts(50, mode, 43));
    const auto n = a.sequences_per_epoch();
    const int count = static_cast<int>(2 * n + 5);  // past two epochs
    const auto sa = draw(a, count), sb = draw(b, count), so = draw(other, count);
    EXPECT_EQ(sa, sb);
    EXPECT_NE(sa, so);
    // Epochs differ from each other.
    EXPECT_NE(std::vector<std::vector<int64_t>>(sa.begin(), sa.begin() + n),
              std::vector<std::vector<int64_t>>(sa.begin() + n, sa.begin() + 2 * n));
  }
}

TEST(Sampler, RestoredStateGivesExactlyTheSameSequences) {
  const auto c = make_corpus({700, 333, 1000, 257, 900});
  TokenStore store(c.dir.string());
  for (auto mode : {SamplerMode::long_only, SamplerMode::join}) {
    Sampler a(store, opts(40, mode, 9));
    const auto per_epoch = a.sequences_per_epoch();
    for (int skip : {0, 7, static_cast<int>(per_epoch) - 1, static_cast<int>(per_epoch) + 3}) {
      Sampler s(store, opts(40, mode, 9));
      draw(s, skip);
      const std::string saved = s.state().to_json();
      const auto expected = draw(s, 2 * static_cast<int>(per_epoch));
      Sampler r(store, opts(40, mode, 1234));  // the state's seed wins
      r.restore(SamplerState::from_json(saved));
      EXPECT_EQ(draw(r, 2 * static_cast<int>(per_epoch)), expected)
          << "mode " << sampler_mode_name(mode) << " skip " << skip;
    }
  }
  SamplerState st;
  st.seed = 18446744073709551615ULL;
  st.epoch = 3;
  st.position = 17;
  EXPECT_EQ(SamplerState::from_json(st.to_json()), st);
}

TEST(Sampler, StateJsonErrorsNameTheKey) {
  try {
    SamplerState::from_json(R"({"seed":1,"epoch":2})");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("missing key 'position'"), std::string::npos) << e.what();
  }
  try {
    SamplerState::from_json(R"({"seed":1,"epoch":"2","position":0})");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'epoch' is \"2\", expected an integer"), std::string::npos) << e.what();
  }
  EXPECT_THROW(SamplerState::from_json("{"), std::invalid_argument);
}

TEST(Sampler, RanksSeeDisjointSharesWhoseUnionIsTheSingleRankStream) {
  std::mt19937_64 rng(uio::test::test_seed());
  std::vector<int64_t> lengths;
  for (int i = 0; i < 25; ++i) lengths.push_back(30 + static_cast<int64_t>(rng() % 300));
  const auto c = make_corpus(lengths);
  TokenStore store(c.dir.string());
  const int world = 3;
  for (auto mode : {SamplerMode::long_only, SamplerMode::join}) {
    Sampler single(store, opts(32, mode, 77));
    const int64_t n = single.sequences_per_epoch();
    const int64_t steps = n / world;
    std::map<int64_t, std::vector<int64_t>> by_index;  // single-rank stream of epochs 0 and 1
    for (int64_t k = 0; k < 2 * n; ++k) {
      const auto s = single.next();
      by_index[s.epoch * n + s.index] = to_vector(s);
    }
    std::map<int64_t, std::vector<int64_t>> from_ranks;
    for (int r = 0; r < world; ++r) {
      Sampler rank(store, opts(32, mode, 77, r, world));
      EXPECT_EQ(rank.steps_per_epoch(), steps);
      for (int64_t k = 0; k < 2 * steps; ++k) {
        const auto s = rank.next();
        EXPECT_EQ(s.index % world, r);
        EXPECT_TRUE(from_ranks.emplace(s.epoch * n + s.index, to_vector(s)).second)
            << "two ranks got sequence " << s.index;
      }
    }
    for (int64_t e = 0; e < 2; ++e)
      for (int64_t k = 0; k < steps * world; ++k)
        EXPECT_EQ(from_ranks.at(e * n + k), by_index.at(e * n + k)) << "epoch " << e << " sequence " << k;
    EXPECT_EQ(static_cast<int64_t>(from_ranks.size()), 2 * steps * world);
  }
}

TEST(Sampler, JoinModeConcatenatesEveryTrainDocumentOnceWithEosBetween) {
  std::mt19937_64 rng(uio::test::test_seed());
  std::vector<int64_t> lengths;
  std::vector<Split> splits;
  for (int i = 0; i < 40; ++i) {
    lengths.push_back(1 + static_cast<int64_t>(rng() % 90));
    splits.push_back(i % 5 == 2 ? Split::heldout : Split::train);
  }
  const auto c = make_corpus(lengths, splits);
  TokenStore store(c.dir.string());
  const int64_t L = 37;
  Sampler sampler(store, opts(L, SamplerMode::join, 3));
  int64_t total = 0;
  for (size_t d = 0; d < lengths.size(); ++d)
    if (splits[d] == Split::train) total += lengths[d] + 1;
  ASSERT_EQ(sampler.sequences_per_epoch(), total / L);

  std::vector<int64_t> stream;
  for (int64_t k = 0; k < sampler.sequences_per_epoch(); ++k) {
    const auto t = to_vector(sampler.next());
    stream.insert(stream.end(), t.begin(), t.end());
  }
  // Cut at EOS: every complete piece is one whole train document, each at most once.
  std::set<size_t> used;
  std::vector<int64_t> piece;
  int pieces = 0;
  for (auto t : stream) {
    if (t != kEos) {
      piece.push_back(t);
      continue;
    }
    ASSERT_FALSE(piece.empty()) << "two EOS in a row";
    const size_t doc = c.where.at(static_cast<int32_t>(piece[0])).first;
    EXPECT_EQ(splits[doc], Split::train);
    EXPECT_EQ(piece, std::vector<int64_t>(c.docs[doc].begin(), c.docs[doc].end()));
    EXPECT_TRUE(used.insert(doc).second);
    piece.clear();
    ++pieces;
  }
  int train_docs = 0;
  for (auto s : splits) train_docs += s == Split::train;
  EXPECT_GE(pieces, train_docs - 1);  // at most the last one is cut off by the final partial sequence
}

TEST(Sampler, LongOnlyErrorNamesTheLengthAndTheLongestDocument) {
  const auto c = make_corpus({100, 250, 180, 900}, {Split::train, Split::train, Split::train, Split::heldout});
  TokenStore store(c.dir.string());
  try {
    Sampler s(store, opts(300, SamplerMode::long_only, 1));
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("no document has seq_len = 300 tokens; the longest is 'doc1' with 250 tokens"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("join mode"), std::string::npos) << msg;
  }
  EXPECT_NO_THROW(Sampler(store, opts(250, SamplerMode::long_only, 1)));
  try {
    Sampler s(store, opts(200, SamplerMode::long_only, 1, 0, 2));  // one window, two ranks
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("an epoch holds 1 sequences of 200 tokens, fewer than the 2 ranks"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(Sampler(store, opts(10, SamplerMode::join, 1, 2, 2)), std::invalid_argument);
}

TEST(Sampler, LongOnlyShiftsWindowsSoTailsAreReachedAcrossEpochs) {
  const auto c = make_corpus({250});
  TokenStore store(c.dir.string());
  Sampler s(store, opts(100, SamplerMode::long_only, 8));
  std::set<int64_t> starts;
  for (int i = 0; i < 60; ++i) starts.insert(c.where.at(static_cast<int32_t>(to_vector(s.next())[0])).second);
  for (auto p : starts) EXPECT_LE(p, 150);
  EXPECT_GT(starts.size(), 10u);  // shifts in [0, 50] vary by epoch
  EXPECT_GT(*starts.rbegin(), 100) << "the shift never moved the second window";
}
