// data/document_source.h — where training documents come from, as the trainer sees it: fixed-length
// token sequences one after another, and a small state that a checkpoint saves to continue the same
// stream. The token-store sampler and synthetic tasks both implement it.
#pragma once

#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "data/sampler.h"
#include "data/splitmix.h"

namespace uio::data {

// One training document: its tokens and, for synthetic tasks, which tokens' predictions count.
struct TrainingDocument {
  torch::Tensor ids;  // [seq_len] int64 on the CPU
  torch::Tensor loss_mask;  // [seq_len] float 0/1 (1: predicting this token counts); undefined: every token
};

class DocumentSource {
 public:
  virtual ~DocumentSource() = default;
  virtual TrainingDocument next() = 0;
  virtual std::string state_json() const = 0;
  virtual void restore(const std::string& json) = 0;
  // The kinds of document a mixed source gives (its sources' names; empty for a source of one kind), and
  // which of them gave the last document (an index into kinds(); -1 before the first or without kinds).
  virtual std::vector<std::string> kinds() const { return {}; }
  virtual int64_t last_kind() const { return -1; }
};

// A token store's split through data/sampler.h.
class SamplerSource : public DocumentSource {
 public:
  SamplerSource(std::shared_ptr<const TokenStore> store, const SamplerOptions& options)
      : store_(std::move(store)), sampler_(*store_, options) {}
  TrainingDocument next() override { return {sampler_.next().tokens, {}}; }
  std::string state_json() const override { return sampler_.state().to_json(); }
  void restore(const std::string& json) override { sampler_.restore(SamplerState::from_json(json)); }
  const Sampler& sampler() const { return sampler_; }

 private:
  std::shared_ptr<const TokenStore> store_;
  Sampler sampler_;
};

// Documents of uniformly random token ids (benchmarks and tests: the work of a step does not depend
// on which tokens it reads). Its generator is its own (splitmix64), so its state is one number.
class RandomDocuments : public DocumentSource {
 public:
  RandomDocuments(int64_t vocab_size, int64_t length, uint64_t seed = 0);
  TrainingDocument next() override;
  std::string state_json() const override;
  void restore(const std::string& json) override;

 private:
  int64_t vocab_size_, length_;
  SplitMix64 rng_;
};

}  // namespace uio::data
