// trainer/perplexity.cpp — held-out perplexity with memory and truncated.
#include "trainer/perplexity.h"

#include <cmath>
#include <limits>

namespace uio::trainer {

void SegmentScores::add(const model::DocumentLoss& d) {
  if (loss.size() < d.segment_loss.size())
    loss.resize(d.segment_loss.size(), 0.0), tokens.resize(d.segment_loss.size(), 0);
  for (size_t t = 0; t < d.segment_loss.size(); ++t) loss[t] += d.segment_loss[t], tokens[t] += d.segment_tokens[t];
}

double SegmentScores::perplexity(int64_t from_segment) const {
  double sum = 0;
  int64_t count = 0;
  for (size_t t = static_cast<size_t>(std::max<int64_t>(0, from_segment)); t < loss.size(); ++t)
    sum += loss[t], count += tokens[t];
  return count ? std::exp(sum / static_cast<double>(count)) : std::numeric_limits<double>::quiet_NaN();
}

std::vector<double> SegmentScores::perplexity_by_segment() const {
  std::vector<double> out;
  for (size_t t = 0; t < loss.size(); ++t)
    out.push_back(tokens[t] ? std::exp(loss[t] / static_cast<double>(tokens[t])) : NAN);
  return out;
}

Perplexity evaluate_perplexity(model::CausalLM& base, model::MemoryCompressor& compressor,
                               const std::vector<torch::Tensor>& documents, int64_t chunk) {
  const auto device = base->output_weight().device();
  const bool was_training = compressor->is_training();
  compressor->eval();
  Perplexity out;
  for (const auto& doc : documents) {
    auto ids = doc.to(device);
    out.memory.add(model::score_document(base, compressor, ids, chunk));
    out.truncated.add(model::score_truncated(base, ids, compressor->segment_len(), chunk));
  }
  compressor->train(was_training);
  return out;
}

}  // namespace uio::trainer
