// tests/retrieval_task_test.cpp — synthetic retrieval and auto-encoding documents and the mix of sources.
// Documents are built with SmolLM2's tokenizer over a haystack of plain prose without digits, then read
// back as text: the facts are found again by pattern, the question's keys looked up among them, and the
// answer must be the masked tokens and nothing else. Shares are checked against binomial tolerances,
// resumes against the uninterrupted stream, and no document may use the evaluation's phrasings.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/passkey.h"
#include "data/retrieval_task.h"
#include "data/tokenizer.h"
#include "tests/test_util.h"

using namespace uio;

namespace {

const data::Tokenizer* smollm2_tokenizer() {
  static std::unique_ptr<data::Tokenizer> tokenizer = [] {
    std::unique_ptr<data::Tokenizer> t;
    const auto ref = uio::test::testdata("smollm2") / "reference.json";
    if (!std::filesystem::exists(ref)) return t;
    const std::string gguf = nlohmann::json::parse(std::ifstream(ref))["gguf"];
    if (std::filesystem::exists(gguf)) t = data::load_tokenizer(gguf);
    return t;
  }();
  return tokenizer.get();
}

const char* kNoModel = "no SmolLM2 GGUF under models/ (run scripts/get-model.sh)";

// Plain prose without digits and without the evaluation's phrasings.
const char* kProse =
    "The river ran slowly past the old mill, and the miller's daughter watched the boats go by. In the "
    "autumn the leaves turned and fell into the water, and the children of the village raced them under the "
    "bridge. Nobody remembered who had built the mill, though everyone had a story about it. Some said a "
    "travelling carpenter had raised it in a single summer; others said it had always been there, older than "
    "the church and older than the road. The daughter liked neither story. She kept a notebook of the boats, "
    "their colours and their cargo, and in the evenings she read it aloud to her father, who pretended to "
    "listen while he mended nets. Winter came early that year. The river froze at the edges, the boats "
    "stopped, and the notebook stayed closed on the kitchen table. When the thaw arrived, a stranger walked "
    "into the village with a heavy pack and asked for work at the mill. He could read, he said, and he could "
    "mend almost anything made of wood or iron. The miller hired him because the wheel had cracked in the "
    "frost, and because the stranger did not ask for much.";

// Natural text: windows of a cyclic token stream of the prose, each starting further on.
class ProseSource : public data::DocumentSource {
 public:
  ProseSource(const data::Tokenizer& tokenizer, int64_t length) : length_(length) {
    for (auto t : tokenizer.encode(std::string(" ") + kProse)) text_.push_back(t);
  }
  data::TrainingDocument next() override {
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < length_; ++i) ids.push_back(text_[static_cast<size_t>(offset_ + i) % text_.size()]);
    offset_ = (offset_ + 97) % static_cast<int64_t>(text_.size());
    return {torch::tensor(ids, torch::kInt64), {}};
  }
  std::string state_json() const override { return nlohmann::json{{"offset", offset_}}.dump(); }
  void restore(const std::string& json) override { offset_ = nlohmann::json::parse(json)["offset"].get<int64_t>(); }

 private:
  std::vector<int64_t> text_;
  int64_t length_, offset_ = 0;
};

// Documents whose every token is the source's tag (to see which source a mix drew).
class TagSource : public data::DocumentSource {
 public:
  explicit TagSource(int64_t tag) : tag_(tag) {}
  data::TrainingDocument next() override {
    ++drawn_;
    return {torch::full({4}, tag_, torch::kInt64), {}};
  }
  std::string state_json() const override { return nlohmann::json{{"drawn", drawn_}}.dump(); }
  void restore(const std::string& json) override { drawn_ = nlohmann::json::parse(json)["drawn"].get<int64_t>(); }

 private:
  int64_t tag_, drawn_ = 0;
};

std::string decode(const data::Tokenizer& tokenizer, const torch::Tensor& ids, int64_t begin, int64_t end) {
  std::vector<int32_t> part;
  for (int64_t i = begin; i < end; ++i) part.push_back(static_cast<int32_t>(ids[i].item<int64_t>()));
  return tokenizer.decode(part);
}

// Positions where `key` occurs with no letter or digit right before or after it.
std::vector<size_t> find_whole(const std::string& text, const std::string& key) {
  std::vector<size_t> at;
  for (size_t p = text.find(key); p != std::string::npos; p = text.find(key, p + 1)) {
    const bool open = p == 0 || !std::isalnum(static_cast<unsigned char>(text[p - 1]));
    const bool close = p + key.size() >= text.size() || !std::isalnum(static_cast<unsigned char>(text[p + key.size()]));
    if (open && close) at.push_back(p);
  }
  return at;
}

std::vector<std::string> digit_groups(const std::string& text) {
  std::vector<std::string> out;
  const std::regex number("[0-9]+");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), number); it != std::sregex_iterator(); ++it)
    out.push_back(it->str());
  return out;
}

// The facts in `text`, read back by the four patterns: (format, key as the question names it, number).
struct FoundFact {
  std::string format, key, number;
  size_t end = 0;  // one past its last character
};

std::vector<FoundFact> find_facts(const std::string& text) {
  static const std::vector<std::pair<std::string, std::regex>> patterns = {
      {"access_code", std::regex("Note: the access code for the ([A-Za-z]+ [A-Za-z]+) is ([0-9]+)\\.")},
      {"locker", std::regex("[A-Z][a-z]+ keeps ([0-9]+) in locker ([0-9]+)\\.")},
      {"id_list", std::regex("\nID ([a-z]+): ([0-9]+)\n")},
      {"tracking", std::regex("The parcel to ([A-Za-z]+) has tracking number ([0-9]+)\\.")}};
  std::vector<FoundFact> facts;
  for (const auto& [format, pattern] : patterns)
    for (auto it = std::sregex_iterator(text.begin(), text.end(), pattern); it != std::sregex_iterator(); ++it) {
      const bool locker = format == "locker";  // its number comes before its key
      facts.push_back({format, (*it)[locker ? 2 : 1].str(), (*it)[locker ? 1 : 2].str(),
                       static_cast<size_t>(it->position() + it->length())});
    }
  return facts;
}

data::RetrievalOptions retrieval_options(uint64_t seed) {
  data::RetrievalOptions o;
  o.seq_len = 1024, o.segment_len = 128, o.seed = seed;
  return o;
}

void expect_same(const data::TrainingDocument& a, const data::TrainingDocument& b, const std::string& what) {
  ASSERT_TRUE(torch::equal(a.ids, b.ids)) << what;
  ASSERT_EQ(a.loss_mask.defined(), b.loss_mask.defined()) << what;
  if (a.loss_mask.defined()) ASSERT_TRUE(torch::equal(a.loss_mask, b.loss_mask)) << what;
}

// A fresh source from `make(seed)` draws 3 documents; another restored from the first's state then gives
// exactly the 5 documents the first gives next. The same seed gives the same stream; another seed another.
void expect_exact_resume(const std::function<std::shared_ptr<data::DocumentSource>(uint64_t)>& make) {
  auto a = make(7);
  std::vector<data::TrainingDocument> first;
  for (int i = 0; i < 3; ++i) first.push_back(a->next());
  const auto state = a->state_json();
  std::vector<data::TrainingDocument> uninterrupted;
  for (int i = 0; i < 5; ++i) uninterrupted.push_back(a->next());
  auto b = make(7);
  b->restore(state);
  for (int i = 0; i < 5; ++i) expect_same(b->next(), uninterrupted[i], "resumed document " + std::to_string(i));
  auto c = make(7);
  for (int i = 0; i < 3; ++i) expect_same(c->next(), first[i], "same seed, document " + std::to_string(i));
  auto d = make(8);
  int differ = 0;
  for (int i = 0; i < 3; ++i) differ += !torch::equal(d->next().ids, first[i].ids);
  EXPECT_GT(differ, 0) << "another seed must give other documents";
}

template <typename F>
void expect_error_naming(F&& build, const std::string& option) {
  try {
    build();
    ADD_FAILURE() << "no error; expected one naming " << option;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(option), std::string::npos) << e.what();
  }
}

}  // namespace

// The document has exactly seq_len tokens; the loss mask is 1 on the answer's tokens and 0 everywhere else;
// and the answer, read from the masked tokens, gives the numbers of the facts the question names, found by
// pattern in the text before the question, in the order the question names them.
TEST(RetrievalDocuments, MaskCoversExactlyTheAnswerWhichGivesTheAskedFactsNumbers) {
  const auto* tokenizer = smollm2_tokenizer();
  if (!tokenizer) GTEST_SKIP() << kNoModel;
  const auto o = retrieval_options(11);
  data::RetrievalDocuments source(std::make_shared<ProseSource>(*tokenizer, o.seq_len), *tokenizer, o);
  std::map<std::string, int> formats;
  std::map<size_t, int> asked_counts, fact_counts;
  for (int d = 0; d < 200; ++d) {
    const auto doc = source.make();
    const auto& ids = doc.document.ids;
    const auto& mask = doc.document.loss_mask;
    ASSERT_EQ(ids.size(0), o.seq_len);
    ASSERT_EQ(ids.scalar_type(), torch::kInt64);
    ASSERT_EQ(mask.size(0), o.seq_len);
    const auto kept = mask.nonzero().flatten();  // the positions whose prediction counts
    ASSERT_GT(kept.size(0), 0);
    const int64_t first = kept[0].item<int64_t>();
    EXPECT_EQ(kept.size(0), o.seq_len - first) << "one contiguous answer that runs to the end";
    EXPECT_EQ(mask.sum().item<double>(), static_cast<double>(o.seq_len - first)) << "entries are 0 or 1";

    const auto answer = decode(*tokenizer, ids, first, o.seq_len);
    const auto before_answer = decode(*tokenizer, ids, 0, first);
    const auto facts = find_facts(before_answer);
    ASSERT_GE(facts.size(), 1u) << before_answer;
    ASSERT_LE(facts.size(), 4u);
    std::set<std::string> kinds;
    for (const auto& f : facts) kinds.insert(f.format);
    ASSERT_EQ(kinds.size(), 1u) << "one format per document";
    ++formats[*kinds.begin()], ++fact_counts[facts.size()];
    // The question lies after the last fact (the prose between holds no key). The keys it names, in the
    // order it names them, must give the answer's numbers.
    size_t last_fact_end = 0;
    for (const auto& f : facts) last_fact_end = std::max(last_fact_end, f.end);
    const auto question = before_answer.substr(last_fact_end);
    std::vector<std::pair<size_t, std::string>> named;  // (position in the question, number)
    for (const auto& f : facts) {
      const auto at = find_whole(question, f.format == "access_code" ? "the " + f.key : f.key);
      EXPECT_LE(at.size(), 1u) << f.key << " named twice: " << question;
      if (!at.empty()) named.emplace_back(at.front(), f.number);
    }
    ASSERT_FALSE(named.empty()) << "the question names no planted fact: " << question;
    std::sort(named.begin(), named.end());
    std::vector<std::string> expected;
    for (const auto& [at, number] : named) expected.push_back(number);
    EXPECT_EQ(digit_groups(answer), expected) << "question:" << question << "\nanswer:" << answer;
    EXPECT_TRUE(answer.back() == '.' || answer.back() == '\n') << answer;
    ++asked_counts[expected.size()];
    ASSERT_EQ(doc.questions.size(), 1u);
    const auto& q = doc.questions.front();
    EXPECT_EQ(answer, q.answer);
    // The recorded positions agree with the text.
    ASSERT_EQ(doc.facts.size(), facts.size());
    for (const auto& f : doc.facts) {
      EXPECT_LE(f.end, q.question_begin);
      EXPECT_EQ(find_whole(decode(*tokenizer, ids, f.begin, f.end), f.number).size(), 1u);
    }
    EXPECT_EQ(q.answer_begin, first);
    EXPECT_EQ(q.answer_end, o.seq_len);
  }
  EXPECT_EQ(formats.size(), 4u) << "every fact format occurs";
  EXPECT_EQ(fact_counts.size(), 4u) << "1 to 4 facts";
  EXPECT_GE(asked_counts.size(), 3u) << "questions about one fact and about several";
}

// With several questions per document: the mask is 1 exactly on the answers' tokens; each answer, decoded,
// gives the numbers that the facts its question names hold, found by pattern in the text before that question;
// the last answer ends the document; and the questions lie at many distances from their facts (some within a
// segment, some many segments back), which is what makes one document train several recalls.
TEST(RetrievalDocuments, SeveralQuestionsEachAnswerFactsPlantedBeforeIt) {
  const auto* tokenizer = smollm2_tokenizer();
  if (!tokenizer) GTEST_SKIP() << kNoModel;
  auto o = retrieval_options(23);
  o.questions = 6, o.max_facts = 6;
  data::RetrievalDocuments source(std::make_shared<ProseSource>(*tokenizer, o.seq_len), *tokenizer, o);
  int64_t near = 0, far = 0;
  for (int d = 0; d < 80; ++d) {
    const auto doc = source.make();
    const auto& ids = doc.document.ids;
    ASSERT_EQ(ids.size(0), o.seq_len);
    ASSERT_EQ(doc.questions.size(), 6u);
    auto expected_mask = torch::zeros({o.seq_len}, torch::kFloat);
    int64_t previous_end = 0;
    for (const auto& q : doc.questions) {
      ASSERT_GE(q.question_begin, previous_end) << "questions in document order, not overlapping";
      ASSERT_LT(q.question_begin, q.answer_begin);
      ASSERT_LT(q.answer_begin, q.answer_end);
      previous_end = q.answer_end;
      expected_mask.narrow(0, q.answer_begin, q.answer_end - q.answer_begin).fill_(1.0f);
      const auto answer = decode(*tokenizer, ids, q.answer_begin, q.answer_end);
      EXPECT_EQ(answer, q.answer);
      // The facts found in the text before this question, by pattern; the ones it names give its answer.
      const auto facts = find_facts(decode(*tokenizer, ids, 0, q.question_begin));
      const auto question = decode(*tokenizer, ids, q.question_begin, q.answer_begin);
      std::vector<std::pair<size_t, std::string>> named;
      for (const auto& f : facts) {
        const auto at = find_whole(question, f.format == "access_code" ? "the " + f.key : f.key);
        if (!at.empty()) named.emplace_back(at.front(), f.number);
      }
      std::sort(named.begin(), named.end());
      std::vector<std::string> expected;
      for (const auto& [at, number] : named) expected.push_back(number);
      EXPECT_EQ(digit_groups(answer), expected) << "question:" << question << "\nanswer:" << answer;
      ASSERT_EQ(expected.size(), q.asked.size());
      for (auto i : q.asked) {
        const auto& f = doc.facts.at(static_cast<size_t>(i));
        ASSERT_LE(f.end, q.question_begin) << "a question asks only about facts planted before it";
        const int64_t distance = q.answer_begin - f.end;
        near += distance < o.segment_len, far += distance >= 4 * o.segment_len;
      }
    }
    EXPECT_EQ(doc.questions.back().answer_end, o.seq_len);
    ASSERT_TRUE(torch::equal(doc.document.loss_mask, expected_mask)) << "the mask is the answers' tokens, no more";
  }
  EXPECT_GT(near, 20) << "answers within a segment of their fact";
  EXPECT_GT(far, 20) << "answers 4 or more segments after their fact";
}

// questions = 1 is the single question at the end; more questions than the document can hold fail naming
// the option.
TEST(RetrievalDocuments, TooManyQuestionsForTheDocumentFailNamingThem) {
  const auto* tokenizer = smollm2_tokenizer();
  if (!tokenizer) GTEST_SKIP() << kNoModel;
  auto o = retrieval_options(1);
  o.questions = 0;
  expect_error_naming(
      [&] { data::RetrievalDocuments(std::make_shared<ProseSource>(*tokenizer, o.seq_len), *tokenizer, o); },
      "questions");
  o.questions = 40;
  expect_error_naming(
      [&] { data::RetrievalDocuments(std::make_shared<ProseSource>(*tokenizer, o.seq_len), *tokenizer, o); },
      "questions");
}

// Across many documents the facts lie early, in the middle and late, and in the last segment too.
TEST(RetrievalDocuments, PlantsFactsAtDepthsAcrossTheWholeDocument) {
  const auto* tokenizer = smollm2_tokenizer();
  if (!tokenizer) GTEST_SKIP() << kNoModel;
  const auto o = retrieval_options(5);
  data::RetrievalDocuments source(std::make_shared<ProseSource>(*tokenizer, o.seq_len), *tokenizer, o);
  std::vector<int> tenths(10, 0);
  int total = 0, last_segment = 0;
  for (int d = 0; d < 300; ++d) {
    const auto doc = source.make();
    for (const auto& f : doc.facts) {
      ++tenths[static_cast<size_t>(10 * f.begin / o.seq_len)], ++total;
      last_segment += f.begin >= o.seq_len - o.segment_len;
    }
  }
  // Uniform over the text: every tenth holds about 10% (the last tenth less: the question sits there).
  for (int t = 0; t < 9; ++t) EXPECT_GT(tenths[t], total / 20) << "tenth " << t << " of " << total << " facts";
  EXPECT_GT(last_segment, total / 20) << "facts in the last segment, beside the question";
}

// min_distance keeps every fact that far from the document's end (with several questions spliced in too),
// so that with the segment length every fact lies before the last segment; the facts still spread over the
// rest, the answers stay right, and a distance the document cannot hold fails naming the option.
TEST(RetrievalDocuments, MinDistanceKeepsEveryFactBeforeTheLastSegment) {
  const auto* tokenizer = smollm2_tokenizer();
  if (!tokenizer) GTEST_SKIP() << kNoModel;
  for (int64_t questions : {1, 4}) {
    auto o = retrieval_options(31 + questions);
    o.min_distance = o.segment_len, o.questions = questions;
    data::RetrievalDocuments source(std::make_shared<ProseSource>(*tokenizer, o.seq_len), *tokenizer, o);
    int64_t closest = o.seq_len, just_before = 0;
    std::vector<int> halves(2, 0);
    for (int d = 0; d < 150; ++d) {
      const auto doc = source.make();
      const auto& last = doc.questions.back();
      EXPECT_EQ(decode(*tokenizer, doc.document.ids, last.answer_begin, last.answer_end), last.answer);
      for (const auto& f : doc.facts) {
        ASSERT_LE(f.end, o.seq_len - o.min_distance) << "questions " << questions;
        closest = std::min(closest, o.seq_len - f.end);
        just_before += f.end > o.seq_len - 2 * o.segment_len;
        ++halves[static_cast<size_t>(2 * f.begin / o.seq_len)];
      }
    }
    EXPECT_LT(closest, o.min_distance + o.segment_len / 2) << "the bound is reached, not overshot by a margin";
    EXPECT_GT(just_before, 5) << "facts in the segment before the last";
    EXPECT_GT(halves[0], 50);
    EXPECT_GT(halves[1], 50);
  }
  // Distance 0 gives exactly the documents the option's absence gave.
  auto o = retrieval_options(7);
  data::RetrievalDocuments a(std::make_shared<ProseSource>(*tokenizer, o.seq_len), *tokenizer, o);
  o.min_distance = 0;
  data::RetrievalDocuments b(std::make_shared<ProseSource>(*tokenizer, o.seq_len), *tokenizer, o);
  for (int d = 0; d < 5; ++d) expect_same(a.next(), b.next(), "document " + std::to_string(d));
  for (int64_t bad : {int64_t{-1}, o.seq_len, o.seq_len - 8}) {
    o.min_distance = bad;
    expect_error_naming(
        [&] { data::RetrievalDocuments(std::make_shared<ProseSource>(*tokenizer, o.seq_len), *tokenizer, o); },
        "min_distance");
  }
}

// With cue, every question asks one fact and ends with that fact's own words up to its number, so the
// answer (the fact's number) completes a phrase the text holds; every format has its cue.
TEST(RetrievalDocuments, CuedQuestionsEndWithTheFactsOwnWordsBeforeItsNumber) {
  const auto* tokenizer = smollm2_tokenizer();
  if (!tokenizer) GTEST_SKIP() << kNoModel;
  auto o = retrieval_options(41);
  o.cue = true, o.questions = 3;
  data::RetrievalDocuments source(std::make_shared<ProseSource>(*tokenizer, o.seq_len), *tokenizer, o);
  std::set<std::string> formats;
  for (int d = 0; d < 120; ++d) {
    const auto doc = source.make();
    const auto& ids = doc.document.ids;
    for (const auto& q : doc.questions) {
      ASSERT_EQ(q.asked.size(), 1u) << "a cued question asks one fact";
      const auto& fact = doc.facts.at(static_cast<size_t>(q.asked[0]));
      const auto fact_text = decode(*tokenizer, ids, fact.begin, fact.end);
      const auto at = find_whole(fact_text, fact.number);
      ASSERT_EQ(at.size(), 1u) << fact_text;
      std::string before_number = fact_text.substr(0, at[0]);
      while (!before_number.empty() && before_number.back() == ' ') before_number.pop_back();
      const auto words = before_number.substr(before_number.size() - std::min<size_t>(before_number.size(), 30));
      const auto prompt = decode(*tokenizer, ids, q.question_begin, q.answer_begin);
      ASSERT_GE(prompt.size(), words.size());
      EXPECT_EQ(prompt.substr(prompt.size() - words.size()), words) << "fact:" << fact_text << "\nprompt:" << prompt;
      EXPECT_EQ(digit_groups(q.answer), std::vector<std::string>{fact.number});
      EXPECT_EQ(decode(*tokenizer, ids, q.answer_begin, q.answer_end), q.answer);
      for (const auto& f : find_facts(fact_text)) formats.insert(f.format);
    }
  }
  EXPECT_EQ(formats.size(), 4u) << "every format has its cue";
}

TEST(RetrievalDocuments, AreDeterministicAndResumeExactly) {
  const auto* tokenizer = smollm2_tokenizer();
  if (!tokenizer) GTEST_SKIP() << kNoModel;
  expect_exact_resume([&](uint64_t seed) {
    const auto o = retrieval_options(seed);
    return std::make_shared<data::RetrievalDocuments>(std::make_shared<ProseSource>(*tokenizer, o.seq_len), *tokenizer,
                                                      o);
  });
}

// Segment s + 1 starts with the marker and repeats segment s's head; the text after it continues where
// segment s ended; the mask is 1 on the copy only.
TEST(AutoencodeDocuments, RepeatTheSegmentBeforeTheMarkerWithTheMaskOnTheCopy) {
  const auto* tokenizer = smollm2_tokenizer();
  if (!tokenizer) GTEST_SKIP() << kNoModel;
  data::AutoencodeOptions o;
  o.seq_len = 512, o.segment_len = 64, o.seed = 3;
  const int64_t l = o.segment_len, T = o.seq_len / l;
  data::AutoencodeDocuments source(std::make_shared<ProseSource>(*tokenizer, o.seq_len), *tokenizer, o);
  ProseSource text(*tokenizer, o.seq_len);  // the same haystack documents, side by side
  std::vector<int32_t> marker_ids;
  for (auto t : tokenizer->encode("\nRepeat the previous passage:\n")) marker_ids.push_back(t);
  const auto m = static_cast<int64_t>(marker_ids.size());
  std::set<int64_t> repeated;
  for (int d = 0; d < 60; ++d) {
    const auto doc = source.make();
    const auto hay = text.next().ids;
    const auto& ids = doc.document.ids;
    ASSERT_EQ(ids.size(0), o.seq_len);
    const int64_t s = doc.segment;
    ASSERT_GE(s, 0);
    ASSERT_LT(s, T - 1);
    repeated.insert(s);
    const int64_t b = (s + 1) * l;
    EXPECT_EQ(decode(*tokenizer, ids, b, b + m), "\nRepeat the previous passage:\n");
    EXPECT_TRUE(torch::equal(ids.narrow(0, 0, b), hay.narrow(0, 0, b)));
    EXPECT_TRUE(torch::equal(ids.narrow(0, b + m, l - m), hay.narrow(0, s * l, l - m))) << "the copy";
    EXPECT_TRUE(torch::equal(ids.narrow(0, b + l, o.seq_len - b - l), hay.narrow(0, b, o.seq_len - b - l)))
        << "the text resumes after segment s";
    auto want = torch::zeros({o.seq_len}, torch::kFloat);
    want.narrow(0, b + m, l - m).fill_(1);
    EXPECT_TRUE(torch::equal(doc.document.loss_mask, want));
    EXPECT_EQ(doc.copy_begin, b + m);
    EXPECT_EQ(doc.copy_len, l - m);
  }
  EXPECT_EQ(static_cast<int64_t>(repeated.size()), T - 1) << "every segment but the last is repeated sometimes";
}

TEST(AutoencodeDocuments, AreDeterministicAndResumeExactly) {
  const auto* tokenizer = smollm2_tokenizer();
  if (!tokenizer) GTEST_SKIP() << kNoModel;
  expect_exact_resume([&](uint64_t seed) {
    data::AutoencodeOptions o;
    o.seq_len = 512, o.segment_len = 64, o.seed = seed;
    return std::make_shared<data::AutoencodeDocuments>(std::make_shared<ProseSource>(*tokenizer, o.seq_len), *tokenizer,
                                                       o);
  });
}

// 2,000 draws with shares 0.7, 0.2, 0.1 and 0: each count within 4.5 standard deviations of its
// binomial mean, the zero share never drawn.
TEST(MixedSource, DrawsEachSourceWithItsShare) {
  const std::vector<double> shares = {0.7, 0.2, 0.0, 0.1};
  std::vector<data::MixedShare> entries;
  for (size_t i = 0; i < shares.size(); ++i)
    entries.push_back({"source" + std::to_string(i), shares[i], std::make_shared<TagSource>(static_cast<int64_t>(i))});
  data::MixedSource mix(entries, uio::test::test_seed());
  const int n = 2000;
  std::vector<int> counts(shares.size(), 0);
  for (int d = 0; d < n; ++d) {
    const auto tag = mix.next().ids[0].item<int64_t>();
    ASSERT_EQ(tag, mix.last_kind());
    ++counts[static_cast<size_t>(tag)];
  }
  for (size_t i = 0; i < shares.size(); ++i) {
    const double mean = n * shares[i], sd = std::sqrt(n * shares[i] * (1 - shares[i]));
    EXPECT_LE(std::abs(counts[i] - mean), 4.5 * sd + 1e-9) << "source " << i << ": " << counts[i] << " of " << n;
  }
  EXPECT_EQ(counts[2], 0);
}

// The training job's mix: natural text, retrieval and auto-encoding documents, all three reading one
// natural-text source.
TEST(MixedSource, ResumesExactlyWithEveryInnerSource) {
  const auto* tokenizer = smollm2_tokenizer();
  if (!tokenizer) GTEST_SKIP() << kNoModel;
  expect_exact_resume([&](uint64_t seed) {
    auto natural = std::make_shared<ProseSource>(*tokenizer, 1024);
    const auto ro = retrieval_options(seed + 1);
    data::AutoencodeOptions ao;
    ao.seq_len = 1024, ao.segment_len = 128, ao.seed = seed + 2;
    return std::make_shared<data::MixedSource>(
        std::vector<data::MixedShare>{
            {"natural", 0.4, natural},
            {"retrieval", 0.3, std::make_shared<data::RetrievalDocuments>(natural, *tokenizer, ro)},
            {"autoencode", 0.3, std::make_shared<data::AutoencodeDocuments>(natural, *tokenizer, ao)}},
        seed);
  });
}

// The evaluation's prompts (data/passkey.h) hold these phrases; no training document may.
TEST(RetrievalTask, TrainingDocumentsNeverUseTheEvaluationsPhrasings) {
  const auto* tokenizer = smollm2_tokenizer();
  if (!tokenizer) GTEST_SKIP() << kNoModel;
  const std::vector<std::string> phrases = {
      "pass key",       "passkey",       "magic number", "remember it", "mentioned in the text",
      "important info", "grass is green"};
  auto lower = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  auto phrases_in = [&](const std::string& text) {
    std::vector<std::string> found;
    for (const auto& p : phrases)
      if (lower(text).find(p) != std::string::npos) found.push_back(p);
    return found;
  };
  // The list is the evaluation's: every phrase but the spelling variant is in one of its prompts.
  const auto passkey = data::make_passkey_prompt(*tokenizer, 400, 0.5, 5, 1);
  const auto needle = data::make_needle_prompt(*tokenizer, passkey.ids, 400, 0.5, 5, 1);
  std::vector<int32_t> p(passkey.ids.begin(), passkey.ids.end()), n(needle.ids.begin(), needle.ids.end());
  EXPECT_EQ(phrases_in(tokenizer->decode(p) + tokenizer->decode(n)).size(), phrases.size() - 1);

  const auto haystack = std::make_shared<ProseSource>(*tokenizer, 1024);
  ASSERT_TRUE(phrases_in(kProse).empty());
  auto o = retrieval_options(17);
  o.max_facts = 12, o.max_digits = 9;  // every key and number length (their question and answer need a longer segment)
  o.segment_len = 256;
  data::RetrievalDocuments retrieval(haystack, *tokenizer, o);
  o.cue = true, o.seed = 18;
  data::RetrievalDocuments cued(haystack, *tokenizer, o);
  data::AutoencodeOptions ao;
  ao.seq_len = 1024, ao.segment_len = 128, ao.seed = 17;
  data::AutoencodeDocuments autoencode(haystack, *tokenizer, ao);
  for (int d = 0; d < 300; ++d) {
    const auto ids = (d % 3 == 2 ? autoencode.next() : d % 3 == 1 ? cued.next() : retrieval.next()).ids;
    const auto text = decode(*tokenizer, ids, 0, ids.size(0));
    const auto found = phrases_in(text);
    ASSERT_TRUE(found.empty()) << "document " << d << " holds '" << found.front() << "'";
  }
}

TEST(RetrievalTask, ImpossibleOptionsAreErrorsThatNameTheOption) {
  const auto* tokenizer = smollm2_tokenizer();
  if (!tokenizer) GTEST_SKIP() << kNoModel;
  auto haystack = std::make_shared<ProseSource>(*tokenizer, 1024);
  auto retrieval = [&](auto change) {
    return [&, change] {
      auto o = retrieval_options(1);
      change(o);
      data::RetrievalDocuments source(haystack, *tokenizer, o);
    };
  };
  // 4 facts of 7 digits and a question about all four do not fit one segment of 128 tokens.
  expect_error_naming(retrieval([](data::RetrievalOptions& o) { o.seq_len = 128; }), "seq_len");
  expect_error_naming(retrieval([](data::RetrievalOptions& o) { o.segment_len = 16, o.seq_len = 1024; }),
                      "segment_len");
  expect_error_naming(retrieval([](data::RetrievalOptions& o) { o.seq_len = 1000; }), "seq_len");
  expect_error_naming(retrieval([](data::RetrievalOptions& o) { o.max_facts = 0; }), "max_facts");
  expect_error_naming(retrieval([](data::RetrievalOptions& o) { o.max_facts = 13; }), "max_facts");
  expect_error_naming(retrieval([](data::RetrievalOptions& o) { o.min_digits = 0; }), "min_digits");
  // Fitting options build.
  auto fits = retrieval_options(1);
  data::RetrievalDocuments ok(haystack, *tokenizer, fits);
  EXPECT_LE(ok.longest_facts() + ok.longest_question(), fits.seq_len);

  auto autoencode = [&](int64_t seq_len, int64_t segment_len) {
    return [&, seq_len, segment_len] {
      data::AutoencodeOptions o;
      o.seq_len = seq_len, o.segment_len = segment_len;
      data::AutoencodeDocuments source(haystack, *tokenizer, o);
    };
  };
  expect_error_naming(autoencode(64, 64), "seq_len");
  expect_error_naming(autoencode(16, 4), "segment_len");  // the marker alone is longer than a segment

  auto mixed = [](std::vector<double> shares) {
    return [shares] {
      std::vector<data::MixedShare> entries;
      const std::vector<std::string> names = {"natural", "retrieval", "autoencode"};
      for (size_t i = 0; i < shares.size(); ++i)
        entries.push_back({names[i], shares[i], std::make_shared<TagSource>(static_cast<int64_t>(i))});
      data::MixedSource mix(entries, 0);
    };
  };
  expect_error_naming(mixed({0.7, 0.2}), "sum to 0.9");
  expect_error_naming(mixed({0.7, 0.2, 0.2}), "sum to 1.1");
  expect_error_naming(mixed({1.2, -0.2, 0.0}), "share of 'retrieval'");
}
