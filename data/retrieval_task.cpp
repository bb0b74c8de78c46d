// data/retrieval_task.cpp — retrieval and auto-encoding documents, and the mix of sources.
#include "data/retrieval_task.h"
#include "data/format/json_file.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <tuple>

namespace uio::data {
namespace {

// Small word lists; a fact's key is one or two words (or a locker number), distinct within a document.
enum WordList { kColors, kAnimals, kNames, kTags, kCities, kWordLists };

const std::vector<std::string>& words(WordList list) {
  static const std::vector<std::vector<std::string>> lists = {
      {"red", "blue", "green", "yellow", "purple", "orange", "silver", "golden", "brown", "white"},
      {"fox", "owl", "otter", "heron", "badger", "falcon", "lynx", "beaver", "turtle", "rabbit"},
      {"Maria", "Tomas", "Aiko", "Lena", "Omar", "Priya", "Jonas", "Chen", "Sofia", "Emeka"},
      {"amber",   "basalt", "cedar",  "delta",  "ember", "fjord",   "garnet", "harbor", "indigo",  "juniper",
       "kestrel", "lagoon", "meadow", "nickel", "onyx",  "prairie", "quartz", "raven",  "saffron", "tundra"},
      {"Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Quito", "Dublin", "Perth", "Tunis", "Riga", "Porto", "Accra"}};
  return lists[list];
}

constexpr int64_t kMaxLocker = 999;  // lockers are numbered 1..999

// The fact formats. None is the evaluation's ("The pass key is ...", "The special magic number is ...").
enum class FactFormat { access_code, locker, id_list, tracking };
constexpr int kFormats = 4;

struct Key {
  int64_t first = 0;  // access_code: colour; locker: name; id_list: tag; tracking: city
  int64_t second = 0;  // access_code: animal; locker: the locker's number
};

// Token ids built piece by piece, each piece encoded alone, so that a text's length is the sum of its
// pieces' and the longest possible text is known before any is drawn. A measuring Text builds no ids: a
// word counts as the longest of its list, a number as one token per digit and two for its leading space
// (byte-level and byte-fallback tokenizers never need more tokens than bytes; SentencePiece may add a
// dummy prefix to each piece).
class Text {
 public:
  Text(const Tokenizer& tokenizer, const std::vector<int64_t>& longest_word, bool measure)
      : tokenizer_(tokenizer), longest_word_(longest_word), measure_(measure) {}
  void literal(const std::string& s) {
    if (measure_) {
      tokens_ += static_cast<int64_t>(tokenizer_.encode(s).size());
    } else {
      append(s);
    }
  }
  void word(WordList list, int64_t index) {  // " word"
    if (measure_) {
      tokens_ += longest_word_[list];
    } else {
      append(" " + words(list)[static_cast<size_t>(index)]);
    }
  }
  void number(const std::string& digits) {  // " 40821"
    if (measure_) {
      tokens_ += static_cast<int64_t>(digits.size()) + 2;
    } else {
      append(" " + digits);
    }
  }
  int64_t size() const { return tokens_; }
  const std::vector<int64_t>& ids() const { return ids_; }

 private:
  void append(const std::string& s) {
    for (auto t : tokenizer_.encode(s)) ids_.push_back(t);
    tokens_ = static_cast<int64_t>(ids_.size());
  }
  const Tokenizer& tokenizer_;
  const std::vector<int64_t>& longest_word_;
  bool measure_;
  std::vector<int64_t> ids_;
  int64_t tokens_ = 0;
};

void write_fact(Text& t, FactFormat format, const Key& key, const std::string& number) {
  switch (format) {
    case FactFormat::access_code:  // " Note: the access code for the red fox is 40821."
      t.literal(" Note: the access code for the");
      t.word(kColors, key.first), t.word(kAnimals, key.second);
      t.literal(" is"), t.number(number), t.literal(".");
      break;
    case FactFormat::locker:  // " Maria keeps 40821 in locker 17."
      t.word(kNames, key.first);
      t.literal(" keeps"), t.number(number), t.literal(" in locker"), t.number(std::to_string(key.second));
      t.literal(".");
      break;
    case FactFormat::id_list:  // "\nID cedar: 40821\n"
      t.literal("\nID"), t.word(kTags, key.first), t.literal(":"), t.number(number), t.literal("\n");
      break;
    case FactFormat::tracking:  // " The parcel to Oslo has tracking number 40821."
      t.literal(" The parcel to"), t.word(kCities, key.first), t.literal(" has tracking number"), t.number(number);
      t.literal(".");
      break;
  }
}

// Before the i-th of m names in a list: "", ",", " and".
void list_separator(Text& t, size_t i, size_t m, const std::string& after = "") {
  if (i == 0) return;
  t.literal((i + 1 == m ? " and" : ",") + after);
}

// The cue of RetrievalOptions::cue: the fact's own words up to its number, so that the answer completes
// a phrase the text already holds (one fact).
void write_cue(Text& t, FactFormat format, const Key& key) {
  switch (format) {
    case FactFormat::access_code:  // " Answer: the access code for the red fox is"
      t.literal(" Answer: the access code for the"), t.word(kColors, key.first), t.word(kAnimals, key.second);
      t.literal(" is");
      break;
    case FactFormat::locker:  // " Maria keeps"
      t.word(kNames, key.first), t.literal(" keeps");
      break;
    case FactFormat::id_list:  // "\nID cedar:"
      t.literal("\nID"), t.word(kTags, key.first), t.literal(":");
      break;
    case FactFormat::tracking:  // " The parcel to Oslo has tracking number"
      t.literal(" The parcel to"), t.word(kCities, key.first), t.literal(" has tracking number");
      break;
  }
}

// The question about `keys` (in the order the answer gives them); with `cue` (one key) it ends with the
// fact's own words up to the number.
void write_question(Text& t, FactFormat format, const std::vector<Key>& keys, bool cue) {
  const size_t m = keys.size();
  if (cue) {
    if (m != 1) throw std::logic_error("retrieval documents: a cued question asks about one fact");
    switch (format) {
      case FactFormat::access_code:
        t.literal(" Question: what is the access code for the"), t.word(kColors, keys[0].first);
        t.word(kAnimals, keys[0].second), t.literal("?");
        break;
      case FactFormat::locker:
        t.literal(" Which number is in locker"), t.number(std::to_string(keys[0].second)), t.literal("?");
        break;
      case FactFormat::id_list: break;  // the list's own line is the question
      case FactFormat::tracking:
        t.literal(" Tracking number of the parcel to"), t.word(kCities, keys[0].first), t.literal("?");
        break;
    }
    write_cue(t, format, keys[0]);
    return;
  }
  switch (format) {
    case FactFormat::access_code:
      t.literal(m == 1 ? " Question: what is the access code for the" : " Question: what are the access codes for the");
      for (size_t i = 0; i < m; ++i) {
        list_separator(t, i, m, " the");
        t.word(kColors, keys[i].first), t.word(kAnimals, keys[i].second);
      }
      t.literal(m == 1 ? "? Answer:" : ", in that order? Answer:");
      break;
    case FactFormat::locker:
      t.literal(m == 1 ? " Which number is in locker" : " Which numbers are in lockers");
      for (size_t i = 0; i < m; ++i) {
        list_separator(t, i, m);
        t.number(std::to_string(keys[i].second));
      }
      t.literal(m == 1 ? "?" : ", in that order?");
      break;
    case FactFormat::id_list:
      t.literal(m == 1 ? "\nID" : "\nIDs");
      for (size_t i = 0; i < m; ++i) {
        if (i > 0) t.literal(",");
        t.word(kTags, keys[i].first);
      }
      t.literal(" ->");
      break;
    case FactFormat::tracking:
      t.literal(m == 1 ? " Tracking number of the parcel to" : " Tracking numbers of the parcels to");
      for (size_t i = 0; i < m; ++i) {
        list_separator(t, i, m);
        t.word(kCities, keys[i].first);
      }
      t.literal(m == 1 ? ":" : ", in that order:");
      break;
  }
}

// " 40821." or " 40821, 7731, 902114." (the id list ends its line instead).
void write_answer(Text& t, FactFormat format, const std::vector<std::string>& numbers) {
  for (size_t i = 0; i < numbers.size(); ++i) {
    if (i > 0) t.literal(",");
    t.number(numbers[i]);
  }
  t.literal(format == FactFormat::id_list ? "\n" : ".");
}

// Each document draws from its own generator, so a source's state is how many documents it has made.
uint64_t document_seed(uint64_t seed, uint64_t document) {
  return SplitMix64(seed ^ (document * 0xd1b54a32d192ed03ULL)).next();
}

int64_t uniform(SplitMix64& rng, int64_t lo, int64_t hi) {  // in [lo, hi]
  return lo + static_cast<int64_t>(rng.below(static_cast<uint64_t>(hi - lo + 1)));
}

// The first `count` token ids of a haystack document, as a vector.
std::vector<int64_t> haystack_tokens(DocumentSource& haystack, int64_t count, const char* who) {
  auto ids = haystack.next().ids;
  if (!ids.defined() || ids.dim() != 1 || ids.size(0) < count)
    throw std::runtime_error(std::string(who) + ": a haystack document has " +
                             (ids.defined() ? std::to_string(ids.numel()) : std::string("no")) +
                             " tokens, fewer than seq_len " + std::to_string(count));
  auto head = ids.narrow(0, 0, count).to(torch::kInt64).contiguous();
  return std::vector<int64_t>(head.data_ptr<int64_t>(), head.data_ptr<int64_t>() + count);
}

TrainingDocument training_document(const std::vector<int64_t>& ids, int64_t mask_begin, int64_t mask_end) {
  auto mask = torch::zeros({static_cast<int64_t>(ids.size())}, torch::kFloat);
  mask.narrow(0, mask_begin, mask_end - mask_begin).fill_(1.0f);
  return {torch::tensor(ids, torch::kInt64), mask};
}

std::string counted_state(uint64_t documents, const DocumentSource& haystack) {
  return nlohmann::json{{"documents", documents}, {"haystack", nlohmann::json::parse(haystack.state_json())}}.dump();
}

uint64_t restore_counted_state(const std::string& json, DocumentSource& haystack, const std::string& who) {
  auto j = format::parse_json(json, who + " state");
  if (!j.contains("documents") || !j["documents"].is_number_unsigned())
    throw std::invalid_argument(who + ": state lacks an unsigned 'documents'");
  if (!j.contains("haystack")) throw std::invalid_argument(who + ": state lacks 'haystack'");
  haystack.restore(j["haystack"].dump());
  return j["documents"].get<uint64_t>();
}

}  // namespace

std::string digit_range_error(const std::string& min_key, const std::string& max_key, int64_t min_digits,
                              int64_t max_digits) {
  if (min_digits >= 1 && min_digits <= max_digits && max_digits <= kRetrievalMaxDigits) return "";
  return min_key + " and " + max_key + " must satisfy 1 <= " + min_key + " <= " + max_key +
         " <= " + std::to_string(kRetrievalMaxDigits) + ", got " + std::to_string(min_digits) + " and " +
         std::to_string(max_digits);
}

RetrievalDocuments::RetrievalDocuments(std::shared_ptr<DocumentSource> haystack, const Tokenizer& tokenizer,
                                       const RetrievalOptions& o)
    : haystack_(std::move(haystack)), tokenizer_(tokenizer), options_(o) {
  auto fail = [](const std::string& what) { throw std::invalid_argument("retrieval documents: " + what); };
  if (!haystack_) fail("no haystack source");
  if (o.segment_len < 1) fail("segment_len must be >= 1, got " + std::to_string(o.segment_len));
  if (o.seq_len < o.segment_len || o.seq_len % o.segment_len != 0)
    fail("seq_len " + std::to_string(o.seq_len) + " must be a positive multiple of segment_len " +
         std::to_string(o.segment_len));
  if (o.min_facts < 1 || o.max_facts < o.min_facts || o.max_facts > kRetrievalMaxFacts)
    fail("min_facts and max_facts must satisfy 1 <= min_facts <= max_facts <= " + std::to_string(kRetrievalMaxFacts) +
         ", got " + std::to_string(o.min_facts) + " and " + std::to_string(o.max_facts));
  if (const auto e = digit_range_error("min_digits", "max_digits", o.min_digits, o.max_digits); !e.empty()) fail(e);
  if (o.questions < 1) fail("questions must be >= 1, got " + std::to_string(o.questions));
  if (o.max_digits == 1 && o.max_facts > 9)
    fail("max_digits 1 gives 9 distinct numbers, fewer than max_facts " + std::to_string(o.max_facts));
  std::vector<int64_t> longest(kWordLists, 0);
  for (int list = 0; list < kWordLists; ++list)
    for (const auto& w : words(static_cast<WordList>(list)))
      longest[list] = std::max(longest[list], static_cast<int64_t>(tokenizer.encode(" " + w).size()));
  longest_word_ = longest;
  // The longest facts and question: every word its list's longest, every number max_digits long.
  const std::string widest(static_cast<size_t>(o.max_digits), '9');
  const Key worst{0, kMaxLocker};
  for (int f = 0; f < kFormats; ++f) {
    const auto format = static_cast<FactFormat>(f);
    Text fact(tokenizer, longest, true);
    write_fact(fact, format, worst, widest);
    longest_facts_ = std::max(longest_facts_, o.max_facts * fact.size());
    for (int64_t m = 1; m <= (o.cue ? 1 : o.max_facts); ++m) {
      Text qa(tokenizer, longest, true);
      write_question(qa, format, std::vector<Key>(static_cast<size_t>(m), worst), o.cue);
      write_answer(qa, format, std::vector<std::string>(static_cast<size_t>(m), widest));
      longest_question_ = std::max(longest_question_, qa.size());
    }
  }
  const std::string fix =
      "; lower max_facts (" + std::to_string(o.max_facts) + ") or max_digits (" + std::to_string(o.max_digits) + ")";
  if (longest_question_ > o.segment_len)
    fail("a question and its answer take up to " + std::to_string(longest_question_) +
         " tokens, more than segment_len " + std::to_string(o.segment_len) + " (they must fit one segment)" + fix);
  if (o.min_distance < 0 || o.min_distance >= o.seq_len)
    fail("min_distance must lie in [0, seq_len " + std::to_string(o.seq_len) + "), got " +
         std::to_string(o.min_distance));
  const int64_t document_longest = longest_facts_ + o.questions * longest_question_ + o.min_distance;
  if (document_longest > o.seq_len)
    fail("seq_len " + std::to_string(o.seq_len) + " cannot hold " + std::to_string(o.max_facts) + " facts and " +
         std::to_string(o.questions) + " question(s) with their answers (up to " + std::to_string(document_longest) +
         " tokens" + (o.min_distance > 0 ? ", " + std::to_string(o.min_distance) + " of them after the facts" : "") +
         ")" + fix + ", fewer questions, a smaller min_distance, or raise seq_len");
}

RetrievalDocument RetrievalDocuments::make() {
  const auto& o = options_;
  SplitMix64 rng(document_seed(o.seed, documents_++));
  const auto format = static_cast<FactFormat>(rng.below(kFormats));
  const int64_t k = uniform(rng, o.min_facts, o.max_facts);
  // k distinct keys and k distinct numbers (no leading zero).
  std::vector<Key> keys;
  std::vector<std::string> numbers;
  auto same_key = [&](const Key& a, const Key& b) {
    return format == FactFormat::access_code ? a.first == b.first && a.second == b.second
           : format == FactFormat::locker    ? a.second == b.second
                                             : a.first == b.first;
  };
  const WordList first_list = format == FactFormat::access_code ? kColors
                              : format == FactFormat::locker    ? kNames
                              : format == FactFormat::id_list   ? kTags
                                                                : kCities;
  while (static_cast<int64_t>(keys.size()) < k) {
    Key key{uniform(rng, 0, static_cast<int64_t>(words(first_list).size()) - 1),
            format == FactFormat::access_code ? uniform(rng, 0, static_cast<int64_t>(words(kAnimals).size()) - 1)
            : format == FactFormat::locker    ? uniform(rng, 1, kMaxLocker)
                                              : 0};
    if (std::none_of(keys.begin(), keys.end(), [&](const Key& other) { return same_key(key, other); }))
      keys.push_back(key);
  }
  while (static_cast<int64_t>(numbers.size()) < k) {
    const int64_t digits = uniform(rng, o.min_digits, o.max_digits);
    std::string n(1, static_cast<char>('1' + rng.below(9)));
    while (static_cast<int64_t>(n.size()) < digits) n += static_cast<char>('0' + rng.below(10));
    if (std::find(numbers.begin(), numbers.end(), n) == numbers.end()) numbers.push_back(n);
  }
  // Each question asks about one fact or several, in a random order; the last question (at the document's
  // end) is drawn first, so that questions = 1 draws exactly what it drew before the option existed.
  auto draw_asked = [&]() {
    std::vector<int64_t> asked;
    if (k == 1 || o.cue || rng.below(2) == 0) {
      asked.push_back(uniform(rng, 0, k - 1));
    } else {
      const int64_t m = uniform(rng, 2, k);
      std::vector<int64_t> order(static_cast<size_t>(k));
      for (int64_t i = 0; i < k; ++i) order[i] = i;
      for (int64_t i = 0; i < m; ++i) std::swap(order[i], order[i + uniform(rng, 0, k - 1 - i)]);
      asked.assign(order.begin(), order.begin() + m);
    }
    return asked;
  };
  const auto q = static_cast<size_t>(o.questions);
  std::vector<std::vector<int64_t>> asked(q);
  asked[q - 1] = draw_asked();
  for (size_t j = 0; j + 1 < q; ++j) asked[j] = draw_asked();
  std::vector<Text> facts;
  facts.reserve(static_cast<size_t>(k));
  int64_t fact_tokens = 0;
  for (int64_t i = 0; i < k; ++i) {
    facts.emplace_back(tokenizer_, longest_word_, false);
    write_fact(facts.back(), format, keys[i], numbers[i]);
    fact_tokens += facts.back().size();
  }
  std::vector<Text> questions, answers;  // questions[j], answers[j]
  int64_t qa_tokens = 0;
  for (size_t j = 0; j < q; ++j) {
    std::vector<Key> asked_keys;
    std::vector<std::string> asked_numbers;
    for (auto i : asked[j]) asked_keys.push_back(keys[i]), asked_numbers.push_back(numbers[i]);
    questions.emplace_back(tokenizer_, longest_word_, false), answers.emplace_back(tokenizer_, longest_word_, false);
    write_question(questions.back(), format, asked_keys, o.cue);
    write_answer(answers.back(), format, asked_numbers);
    const int64_t size = questions.back().size() + answers.back().size();
    if (size > longest_question_)
      throw std::logic_error("retrieval documents: a question outgrew the bound computed from its options");
    qa_tokens += size;
  }
  // Natural text takes what the facts, questions and answers leave; the facts go in at sorted random points,
  // each question but the last at a random point after the latest fact it asks about, the last at the end.
  const int64_t text_len = o.seq_len - fact_tokens - qa_tokens;
  if (text_len < 0 || fact_tokens > longest_facts_)
    throw std::logic_error("retrieval documents: a document outgrew the bound computed from its options");
  const auto text = haystack_tokens(*haystack_, o.seq_len, "retrieval documents");
  // A fact at text point p ends at most fact_tokens + (the other questions' tokens) later in the document,
  // and the last question with its answer follows all of the text: so p <= text_len + that question's
  // tokens - min_distance keeps every fact min_distance from the end (0: anywhere in the text).
  const int64_t last_qa = questions[q - 1].size() + answers[q - 1].size();
  const int64_t latest = std::min(text_len, text_len + last_qa - o.min_distance);
  if (latest < 0)
    throw std::logic_error("retrieval documents: min_distance outgrew the bound computed from its options");
  std::vector<int64_t> points(static_cast<size_t>(k));
  for (auto& p : points) p = uniform(rng, 0, latest);
  std::sort(points.begin(), points.end());
  // Facts keep their order (fact i lies at the i-th point); a question's point is drawn after its facts.
  struct Event {
    int64_t point, kind, index;  // kind 0: fact, 1: question (a fact at the same point goes first)
    bool operator<(const Event& e) const { return std::tie(point, kind, index) < std::tie(e.point, e.kind, e.index); }
  };
  std::vector<Event> events;
  for (int64_t i = 0; i < k; ++i) events.push_back({points[i], 0, i});
  for (size_t j = 0; j + 1 < q; ++j) {
    int64_t after = 0;
    for (auto i : asked[j]) after = std::max(after, points[i]);
    events.push_back({uniform(rng, after, text_len), 1, static_cast<int64_t>(j)});
  }
  events.push_back({text_len, 1, static_cast<int64_t>(q - 1)});
  std::sort(events.begin(), events.end());

  RetrievalDocument doc;
  doc.questions.resize(q);
  std::vector<int64_t> ids;
  ids.reserve(static_cast<size_t>(o.seq_len));
  auto mask = torch::zeros({o.seq_len}, torch::kFloat);
  int64_t from = 0;
  for (const auto& e : events) {
    ids.insert(ids.end(), text.begin() + from, text.begin() + e.point);
    from = e.point;
    const auto begin = static_cast<int64_t>(ids.size());
    if (e.kind == 0) {
      ids.insert(ids.end(), facts[e.index].ids().begin(), facts[e.index].ids().end());
      doc.facts.push_back({begin, static_cast<int64_t>(ids.size()), numbers[e.index]});
      continue;
    }
    auto& question = doc.questions[static_cast<size_t>(e.index)];
    const auto& asked_here = asked[static_cast<size_t>(e.index)];
    question.asked = asked_here;
    question.question_begin = begin;
    ids.insert(ids.end(), questions[e.index].ids().begin(), questions[e.index].ids().end());
    question.answer_begin = static_cast<int64_t>(ids.size());
    ids.insert(ids.end(), answers[e.index].ids().begin(), answers[e.index].ids().end());
    question.answer_end = static_cast<int64_t>(ids.size());
    mask.narrow(0, question.answer_begin, question.answer_end - question.answer_begin).fill_(1.0f);
    for (size_t i = 0; i < asked_here.size(); ++i) question.answer += (i > 0 ? ", " : " ") + numbers[asked_here[i]];
    question.answer += format == FactFormat::id_list ? "\n" : ".";
  }
  if (static_cast<int64_t>(ids.size()) != o.seq_len || doc.questions.back().answer_end != o.seq_len)
    throw std::logic_error("retrieval documents: a document's pieces do not add up to seq_len");
  // Questions in document order (their draw order put the last first).
  std::sort(doc.questions.begin(), doc.questions.end(),
            [](const RetrievalQuestion& a, const RetrievalQuestion& b) { return a.question_begin < b.question_begin; });
  doc.document = {torch::tensor(ids, torch::kInt64), mask};
  return doc;
}

std::string RetrievalDocuments::state_json() const { return counted_state(documents_, *haystack_); }

void RetrievalDocuments::restore(const std::string& json) {
  documents_ = restore_counted_state(json, *haystack_, "retrieval documents");
}

AutoencodeDocuments::AutoencodeDocuments(std::shared_ptr<DocumentSource> haystack, const Tokenizer& tokenizer,
                                         const AutoencodeOptions& o)
    : haystack_(std::move(haystack)), options_(o) {
  auto fail = [](const std::string& what) { throw std::invalid_argument("autoencode documents: " + what); };
  if (!haystack_) fail("no haystack source");
  if (o.segment_len < 1) fail("segment_len must be >= 1, got " + std::to_string(o.segment_len));
  if (o.seq_len < 2 * o.segment_len || o.seq_len % o.segment_len != 0)
    fail("seq_len " + std::to_string(o.seq_len) + " must be a multiple of segment_len " +
         std::to_string(o.segment_len) + " with at least 2 segments (one to repeat, one to repeat it in)");
  for (auto t : tokenizer.encode("\nRepeat the previous passage:\n")) marker_.push_back(t);
  if (marker_len() >= o.segment_len)
    fail("segment_len " + std::to_string(o.segment_len) + " leaves no room for a copy after the marker (" +
         std::to_string(marker_len()) + " tokens)");
}

AutoencodeDocument AutoencodeDocuments::make() {
  const auto& o = options_;
  const int64_t l = o.segment_len, T = o.seq_len / l;
  SplitMix64 rng(document_seed(o.seed, documents_++));
  AutoencodeDocument doc;
  doc.segment = static_cast<int64_t>(rng.below(static_cast<uint64_t>(T - 1)));
  doc.copy_begin = (doc.segment + 1) * l + marker_len();
  doc.copy_len = l - marker_len();
  const auto text = haystack_tokens(*haystack_, o.seq_len, "autoencode documents");
  // Segments 0..s, then the marker and the copy of segment s's head, then the text that followed segment s.
  const auto cut = text.begin() + (doc.segment + 1) * l;
  std::vector<int64_t> ids(text.begin(), cut);
  ids.insert(ids.end(), marker_.begin(), marker_.end());
  ids.insert(ids.end(), text.begin() + doc.segment * l, text.begin() + doc.segment * l + doc.copy_len);
  ids.insert(ids.end(), cut, text.begin() + (o.seq_len - l));
  doc.document = training_document(ids, doc.copy_begin, doc.copy_begin + doc.copy_len);
  return doc;
}

std::string AutoencodeDocuments::state_json() const { return counted_state(documents_, *haystack_); }

void AutoencodeDocuments::restore(const std::string& json) {
  documents_ = restore_counted_state(json, *haystack_, "autoencode documents");
}

MixedSource::MixedSource(std::vector<MixedShare> shares, uint64_t seed) : shares_(std::move(shares)), rng_(seed) {
  auto fail = [](const std::string& what) { throw std::invalid_argument("mixed source: " + what); };
  if (shares_.empty()) fail("no sources");
  double sum = 0;
  std::string listed;
  for (size_t i = 0; i < shares_.size(); ++i) {
    const auto& s = shares_[i];
    if (s.name.empty()) fail("source " + std::to_string(i) + " has no name");
    for (size_t j = 0; j < i; ++j)
      if (shares_[j].name == s.name) fail("the name '" + s.name + "' is used twice");
    if (!s.source) fail("'" + s.name + "' has no source");
    if (!(s.share >= 0) || !std::isfinite(s.share))
      fail("the share of '" + s.name + "' is " + std::to_string(s.share) + "; shares must be >= 0");
    sum += s.share;
    listed += (i > 0 ? ", " : "") + s.name + " " + std::to_string(s.share);
  }
  if (std::abs(sum - 1.0) > 1e-9) fail("the shares (" + listed + ") sum to " + std::to_string(sum) + ", not 1");
}

TrainingDocument MixedSource::next() {
  const double u = static_cast<double>(rng_.next() >> 11) * 0x1.0p-53;  // uniform in [0, 1)
  double below = 0;
  last_ = -1;
  for (size_t i = 0; i < shares_.size(); ++i) {
    if (shares_[i].share <= 0) continue;
    last_ = static_cast<int64_t>(i);  // the last source with a share, should rounding leave u past the sum
    below += shares_[i].share;
    if (u < below) break;
  }
  return shares_[static_cast<size_t>(last_)].source->next();
}

std::vector<std::string> MixedSource::kinds() const {
  std::vector<std::string> names;
  for (const auto& s : shares_) names.push_back(s.name);
  return names;
}

std::string MixedSource::state_json() const {
  nlohmann::json sources = nlohmann::json::object();
  for (const auto& s : shares_) sources[s.name] = nlohmann::json::parse(s.source->state_json());
  return nlohmann::json{{"mix_state", rng_.state()}, {"sources", sources}}.dump();
}

void MixedSource::restore(const std::string& json) {
  auto j = format::parse_json(json, "mixed source state");
  if (!j.contains("mix_state") || !j["mix_state"].is_number_unsigned())
    throw std::invalid_argument("mixed source: state lacks an unsigned 'mix_state'");
  if (!j.contains("sources") || !j["sources"].is_object())
    throw std::invalid_argument("mixed source: state lacks a 'sources' object");
  for (const auto& s : shares_)
    if (!j["sources"].contains(s.name))
      throw std::invalid_argument("mixed source: state has no entry for source '" + s.name +
                                  "' (was it written with other shares?)");
  for (const auto& s : shares_) s.source->restore(j["sources"][s.name].dump());
  rng_.set_state(j["mix_state"].get<uint64_t>());
  last_ = -1;
}

}  // namespace uio::data
