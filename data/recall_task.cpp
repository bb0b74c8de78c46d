// data/recall_task.cpp — generating key/value recall documents.
#include "data/recall_task.h"
#include "data/format/json_file.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace uio::data {
namespace {

const std::vector<std::string>& key_words() {
  static const std::vector<std::string> words = {
      "apple",  "river",  "stone",  "cloud",  "tiger",  "piano",  "lemon",  "candle", "forest", "bridge",
      "garden", "window", "rocket", "silver", "planet", "castle", "dragon", "pencil", "ocean",  "mirror",
      "orange", "jacket", "island", "violin", "basket", "winter", "desert", "button", "rabbit", "anchor"};
  return words;
}

}  // namespace

RecallTask::RecallTask(const Tokenizer& tokenizer, const RecallTaskOptions& o)
    : tokenizer_(tokenizer), options_(o), rng_(o.seed) {
  if (o.segments < 2)
    throw std::invalid_argument("recall task: needs at least 2 segments, got " + std::to_string(o.segments));
  if (o.pairs < 1 || o.pairs > static_cast<int64_t>(key_words().size()))
    throw std::invalid_argument("recall task: pairs must be in [1, " + std::to_string(key_words().size()) + "]");
  if (o.digits < 1 || o.digits > 9) throw std::invalid_argument("recall task: digits must be in [1, 9]");
  for (const auto& t :
       tokenizer.encode(" The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."))
    filler_.push_back(t);
  // The longest possible pair list must fit one segment.
  int64_t worst = 0;
  for (int64_t i = 0; i < o.pairs; ++i)
    worst +=
        static_cast<int64_t>(tokenizer.encode(" " + key_words()[i] + " " + std::string(o.digits, '8') + ".").size()) +
        2;
  if (worst > o.segment_len)
    throw std::invalid_argument("recall task: " + std::to_string(o.pairs) + " pairs take about " +
                                std::to_string(worst) + " tokens, more than segment_len " +
                                std::to_string(o.segment_len));
}

int64_t RecallTask::uniform(int64_t n) { return static_cast<int64_t>(rng_.below(static_cast<uint64_t>(n))); }

RecallDocument RecallTask::make() {
  const auto& o = options_;
  const int64_t l = o.segment_len;
  // Distinct keys (a partial Fisher-Yates shuffle), each with a random number.
  std::vector<int64_t> keys(key_words().size());
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = static_cast<int64_t>(i);
  for (int64_t i = 0; i < o.pairs; ++i) std::swap(keys[i], keys[i + uniform(static_cast<int64_t>(keys.size()) - i)]);
  std::vector<std::string> values;
  for (int64_t i = 0; i < o.pairs; ++i) {
    std::string v;
    for (int64_t d = 0; d < o.digits; ++d) v += static_cast<char>('0' + uniform(10));
    values.push_back(v);
  }
  std::vector<int64_t> order(static_cast<size_t>(o.pairs));
  for (int64_t i = 0; i < o.pairs; ++i) order[i] = i;

  RecallDocument doc;
  std::vector<int64_t> ids;
  auto append = [&](const std::string& text) {
    for (auto t : tokenizer_.encode(text)) ids.push_back(t);
  };
  auto pad_segment = [&] {  // filler text up to the next segment boundary
    for (size_t f = 0; static_cast<int64_t>(ids.size()) % l != 0; f = (f + 1) % filler_.size())
      ids.push_back(filler_[f]);
  };
  auto list_pairs = [&](bool record) {
    for (int64_t i : order) {
      append(" " + key_words()[keys[i]]);
      const size_t before = ids.size();
      append(" " + values[i]);
      if (record)  // the digits' tokens (a tokenizer may give the leading space its own)
        for (size_t p = before; p < ids.size(); ++p)
          if (tokenizer_.decode({static_cast<int32_t>(ids[p])}).find_first_of("0123456789") != std::string::npos)
            doc.answer_positions.push_back(static_cast<int64_t>(p));
      append(".");
    }
  };
  list_pairs(false);
  pad_segment();
  for (int64_t s = 1; s + 1 < o.segments; ++s) {
    ids.push_back(filler_[0]);
    pad_segment();
  }
  for (int64_t i = o.pairs - 1; i > 0; --i) std::swap(order[i], order[uniform(i + 1)]);
  list_pairs(true);
  pad_segment();
  if (static_cast<int64_t>(ids.size()) != o.segments * l)
    throw std::logic_error("recall task: a pair list overflowed its segment");
  doc.ids = torch::tensor(ids, torch::kInt64);
  return doc;
}

std::string RecallTask::state_json() const { return nlohmann::json{{"recall_state", rng_.state()}}.dump(); }

void RecallTask::restore(const std::string& json) {
  auto j = format::parse_json(json, "recall task state");
  if (!j.contains("recall_state") || !j["recall_state"].is_number_unsigned())
    throw std::invalid_argument("recall task: state lacks an unsigned 'recall_state'");
  rng_.set_state(j["recall_state"].get<uint64_t>());
}

}  // namespace uio::data
