// trainer/perplexity.cpp — held-out perplexity with memory and truncated.
#include "trainer/perplexity.h"

#include <cmath>
#include <limits>

#include "model/loss.h"

namespace uio::trainer {

void SegmentScores::add(const optim::DocumentLoss& d) {
  if (loss.size() < d.segment_loss.size()) loss.resize(d.segment_loss.size(), 0.0), tokens.resize(d.segment_loss.size(), 0);
  for (size_t t = 0; t < d.segment_loss.size(); ++t) loss[t] += d.segment_loss[t], tokens[t] += d.segment_tokens[t];
}

double SegmentScores::perplexity(int64_t from_segment) const {
  double sum = 0;
  int64_t count = 0;
  for (size_t t = static_cast<size_t>(std::max<int64_t>(0, from_segment)); t < loss.size(); ++t) sum += loss[t], count += tokens[t];
  return count ? std::exp(sum / static_cast<double>(count)) : std::numeric_limits<double>::quiet_NaN();
}

std::vector<double> SegmentScores::perplexity_by_segment() const {
  std::vector<double> out;
  for (size_t t = 0; t < loss.size(); ++t) out.push_back(tokens[t] ? std::exp(loss[t] / static_cast<double>(tokens[t])) : NAN);
  return out;
}

optim::DocumentLoss score_truncated(model::CausalLM& base, const torch::Tensor& ids, int64_t l, int64_t chunk) {
  TORCH_CHECK(ids.dim() == 1 && ids.size(0) >= l && ids.size(0) % l == 0, "perplexity: a document must be [n] with n ",
              "a positive multiple of segment_len ", l, ", got ", ids.sizes());
  torch::NoGradGuard no_grad;
  const int64_t T = ids.size(0) / l;
  auto targets = model::next_token_targets(ids).view({T, l});
  optim::DocumentLoss out;
  for (int64_t c0 = 0; c0 < T; c0 += chunk) {
    const int64_t K = std::min(chunk, T - c0);
    auto hidden = base->hidden_states(ids.narrow(0, c0 * l, K * l).view({K, l}));  // [K, l, C]
    auto rows = model::row_cross_entropy(base, hidden, targets.narrow(0, c0, K)).to(torch::kCPU, torch::kDouble);
    for (int64_t k = 0; k < K; ++k) out.segment_loss.push_back(rows[k].item<double>());
  }
  out.segment_tokens.assign(static_cast<size_t>(T), l);
  out.segment_tokens.back() = l - 1;
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
    out.memory.add(optim::score_document(base, compressor, ids, chunk));
    out.truncated.add(score_truncated(base, ids, compressor->segment_len(), chunk));
  }
  compressor->train(was_training);
  return out;
}

}  // namespace uio::trainer
