// data/retrieval_task.h — synthetic documents that ask memory to keep text verbatim, mixed into training
// beside natural text (beyond the paper's recipe, which trains on natural text only): retrieval documents
// (numbers planted in natural text, a question at the end, loss on the answer only), the paper's
// auto-encoding task (Table 1: a segment repeated after a marker, loss on the copy only), and a source that
// draws from several sources by share. None of them uses the evaluation's phrasings (data/passkey.h), so
// the passkey and needle tests measure generalisation, not a memorised template.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/document_source.h"
#include "data/splitmix.h"
#include "data/tokenizer.h"

namespace uio::data {

constexpr int64_t kRetrievalMaxFacts = 12;  // distinct keys of the smallest word list
constexpr int64_t kRetrievalMaxDigits = 18;  // of a planted number

// Empty when 1 <= min_digits <= max_digits <= kRetrievalMaxDigits; otherwise what is wrong, naming the two
// settings as the caller calls them ("min_digits" here, "retrieval_min_digits" in uio train and uio eval).
std::string digit_range_error(const std::string& min_key, const std::string& max_key, int64_t min_digits,
                              int64_t max_digits);

struct RetrievalOptions {
  int64_t seq_len = 0;  // tokens per document
  int64_t segment_len = 0;  // l: the question and its answer fit in one segment
  int64_t min_facts = 1, max_facts = 4;  // facts planted per document
  int64_t questions = 1;  // per document: the last at its end, the others at random points after their facts
  int64_t min_digits = 4, max_digits = 7;  // of each planted number
  // Every fact ends at least this many tokens before the document does (0: anywhere). With the segment
  // length l, and seq_len a multiple of it, every fact lies in an earlier segment than the last question:
  // its answer can come through memory only.
  int64_t min_distance = 0;
  // Every question asks about one fact and ends with that fact's own words up to its number ("... Answer:
  // the access code for the red fox is" -> " 40821."), as a reader completes a phrase it has seen; the
  // plain model does that in its window, so what is left to learn is carrying the fact through memory.
  // Off: a question may ask several facts, answered in order, after "Answer:" or a list's arrow.
  bool cue = false;
  uint64_t seed = 0;
};

struct PlantedFact {
  int64_t begin = 0, end = 0;  // its tokens: [begin, end)
  std::string number;  // the digits it holds
};

struct RetrievalQuestion {
  std::vector<int64_t> asked;  // indices into facts, in the order the question names them (and the answer gives them)
  int64_t question_begin = 0;  // first token of the question (every fact it asks about lies before it)
  int64_t answer_begin = 0, answer_end = 0;  // the answer's tokens: [answer_begin, answer_end)
  std::string answer;  // the answer's text, e.g. " 40821, 7731." (the decoded masked tokens)
};

struct RetrievalDocument {
  TrainingDocument document;  // [seq_len] ids; loss_mask 1 on the answers' tokens only
  std::vector<PlantedFact> facts;  // in document order
  std::vector<RetrievalQuestion> questions;  // in document order; the last one's answer ends the document
};

// Natural text of exactly seq_len tokens (the first seq_len tokens of one `haystack` document) with
// min_facts..max_facts facts spliced in at uniformly random token positions (anywhere: early, late, in the
// last segment, so local copying is trained too; min_distance keeps them that far from the end) and the text after them
// trimmed, then a question about one fact or several (answered in the order asked) and its answer at the very end. With
// `questions` > 1 the other questions (each about facts planted before it) are spliced in at random points after the
// latest fact they ask about, natural text resuming after each answer: one document then trains `questions` answers
// instead of one, at every distance from their facts. Each document takes one format for its facts (an access code for
// a coloured animal, a number in a numbered locker, an "ID word: number" list, a parcel's tracking number). Every
// document draws from its own generator, seeded by (seed, document number), so the state is a count and the haystack's
// state; with questions = 1 a seed gives the documents it gave before the option existed.
class RetrievalDocuments : public DocumentSource {
 public:
  // `tokenizer` must outlive this source. Throws std::invalid_argument naming the option when the facts and
  // the question cannot fit (seq_len, segment_len, max_facts, max_digits) or a range is empty.
  RetrievalDocuments(std::shared_ptr<DocumentSource> haystack, const Tokenizer& tokenizer,
                     const RetrievalOptions& options);
  RetrievalDocument make();
  TrainingDocument next() override { return make().document; }
  std::string state_json() const override;  // {"documents": made so far, "haystack": its state}
  void restore(const std::string& json) override;

  // The most tokens a document's facts, and one question with its answer, can take (from the options).
  int64_t longest_facts() const { return longest_facts_; }
  int64_t longest_question() const { return longest_question_; }

 private:
  std::shared_ptr<DocumentSource> haystack_;
  const Tokenizer& tokenizer_;
  RetrievalOptions options_;
  std::vector<int64_t> longest_word_;  // per word list: the most tokens one of its words takes
  int64_t longest_facts_ = 0, longest_question_ = 0;
  uint64_t documents_ = 0;
};

struct AutoencodeOptions {
  int64_t seq_len = 0;  // tokens per document, a multiple of segment_len with at least 2 segments
  int64_t segment_len = 0;  // l
  uint64_t seed = 0;
};

struct AutoencodeDocument {
  TrainingDocument document;  // [seq_len] ids; loss_mask 1 on the copy only
  int64_t segment = 0;  // s: the segment repeated (s < T - 1)
  int64_t copy_begin = 0;  // first token of the copy: (s + 1) * l + the marker's length
  int64_t copy_len = 0;  // l - the marker's length
};

// The paper's auto-encoding task (Table 1): natural text in which segment s + 1 starts with the marker
// "\nRepeat the previous passage:\n" and then repeats segment s's first l - (marker length) tokens, so that
// only memory can supply them; the natural text resumes after the copy where segment s left off, to exactly
// seq_len tokens. s is uniform in [0, T - 2]; one haystack document per document.
class AutoencodeDocuments : public DocumentSource {
 public:
  // Throws std::invalid_argument naming seq_len or segment_len when they cannot hold two segments or the
  // marker leaves no room for a copy.
  AutoencodeDocuments(std::shared_ptr<DocumentSource> haystack, const Tokenizer& tokenizer,
                      const AutoencodeOptions& options);
  AutoencodeDocument make();
  TrainingDocument next() override { return make().document; }
  std::string state_json() const override;  // {"documents": made so far, "haystack": its state}
  void restore(const std::string& json) override;
  int64_t marker_len() const { return static_cast<int64_t>(marker_.size()); }

 private:
  std::shared_ptr<DocumentSource> haystack_;
  AutoencodeOptions options_;
  std::vector<int64_t> marker_;
  uint64_t documents_ = 0;
};

struct MixedShare {
  std::string name;  // its key in the state ("natural", "retrieval", ...), unique
  double share = 0;  // >= 0; the shares sum to 1
  std::shared_ptr<DocumentSource> source;
};

// Each document comes from one of several sources, drawn with the given shares by the mix's own generator
// (splitmix64). The state holds that generator and every source's state, so a restore continues exactly.
// Sources may share an inner source (the training job's natural text feeds all three kinds); their states
// then hold the same inner state, and restoring it more than once is harmless.
class MixedSource : public DocumentSource {
 public:
  // Throws std::invalid_argument naming the share when one is negative, they do not sum to 1, a name repeats
  // or a source is missing.
  MixedSource(std::vector<MixedShare> shares, uint64_t seed);
  TrainingDocument next() override;
  std::string state_json() const override;  // {"mix_state": generator, "sources": {name: state, ...}}
  void restore(const std::string& json) override;
  std::vector<std::string> kinds() const override;  // the shares' names, in order
  // Which source gave the last document (an index into the shares; -1 before the first).
  int64_t last_kind() const override { return last_; }

 private:
  std::vector<MixedShare> shares_;
  SplitMix64 rng_;
  int64_t last_ = -1;
};

}  // namespace uio::data
