// data/recall_task.h — a synthetic key/value recall task that only memory can solve, in plain text for
// a real model: the first segment lists pairs (" apple 38. river 74. ..."), the last segment asks for
// them again in another order, and filler text ("The grass is green. ...") pads every segment. A
// model that reads one segment at a time can only guess the numbers; one that remembers the first
// segment can copy them. Documents are token ids cut at exact segment boundaries.
#pragma once

#include <cstdint>
#include <vector>

#include "data/document_source.h"
#include "data/splitmix.h"
#include "data/tokenizer.h"

namespace uio::data {

struct RecallTaskOptions {
  int64_t segment_len = 0;
  int64_t segments = 2;  // >= 2: pairs in the first, queries in the last
  int64_t pairs = 4;  // must fit one segment
  int64_t digits = 2;  // of each value
  uint64_t seed = 0;
};

struct RecallDocument {
  torch::Tensor ids;  // [segments * segment_len] int64
  std::vector<int64_t> answer_positions;  // the queried numbers' tokens (each predicted from the one before)
};

class RecallTask : public DocumentSource {
 public:
  // Throws std::invalid_argument when the pairs do not fit one segment or sizes are bad.
  RecallTask(const Tokenizer& tokenizer, const RecallTaskOptions& options);
  RecallDocument make();
  TrainingDocument next() override { return {make().ids, {}}; }
  std::string state_json() const override;
  void restore(const std::string& json) override;

 private:
  int64_t uniform(int64_t n);
  const Tokenizer& tokenizer_;
  RecallTaskOptions options_;
  SplitMix64 rng_;
  std::vector<int32_t> filler_;
};

}  // namespace uio::data
