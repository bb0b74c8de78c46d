// model/memory_pass.cpp — reading a document through memory chunk by chunk, and scoring it.
#include "model/memory_pass.h"

#include <numeric>

#include "data/phase.h"
#include "model/loss.h"

namespace uio::model {

std::vector<int64_t> segment_rows(int64_t first, int64_t count) {
  std::vector<int64_t> rows(static_cast<size_t>(std::max<int64_t>(count, 0)));
  std::iota(rows.begin(), rows.end(), first);
  return rows;
}

double DocumentLoss::loss() const { return std::accumulate(segment_loss.begin(), segment_loss.end(), 0.0); }
int64_t DocumentLoss::tokens() const {
  return std::accumulate(segment_tokens.begin(), segment_tokens.end(), int64_t{0});
}

ScoredDocument::ScoredDocument(int64_t segment_len, const torch::Tensor& ids, const torch::Tensor& loss_mask)
    : ids_(ids), l_(segment_len) {
  TORCH_CHECK(ids.dim() == 1 && ids.size(0) >= l_ && ids.size(0) % l_ == 0, "memory: a scored document must be ",
              "[n] with n a positive multiple of segment_len ", l_, ", got ", ids.sizes());
  T_ = ids.size(0) / l_;
  targets_ = next_token_targets(ids);
  if (loss_mask.defined()) {
    TORCH_CHECK(loss_mask.dim() == 1 && loss_mask.size(0) == ids.size(0), "memory: loss_mask must be [", ids.size(0),
                "] like the document, got ", loss_mask.sizes());
    // Checked where the mask lies (the host, as the trainer passes it: no device sync), then moved.
    TORCH_CHECK(((loss_mask == 0) | (loss_mask == 1)).all().item<bool>(), "memory: loss_mask entries must be 0 or 1");
    auto keep = loss_mask.to(ids.device());
    // Prediction i targets token i + 1: it counts when that token's mask is 1.
    auto counts = keep.narrow(0, 1, ids.size(0) - 1).to(torch::kBool);
    targets_.narrow(0, 0, ids.size(0) - 1).masked_fill_(counts.logical_not(), kIgnoreTarget);
  }
  counted_ = (targets_ != kIgnoreTarget).view({T_, l_}).sum(1);  // [T]
  loss_ = torch::zeros({T_}, torch::TensorOptions().dtype(torch::kDouble).device(ids.device()));
}

torch::Tensor ScoredDocument::segment_ids(int64_t first, int64_t count) const {
  return ids_.narrow(0, first * l_, count * l_).view({count, l_});
}

torch::Tensor ScoredDocument::score(CausalLM& base, const torch::Tensor& hidden, int64_t first) {
  const int64_t K = hidden.size(0);
  auto targets = targets_.narrow(0, first * l_, K * l_).view({K, l_});
  auto rows = row_cross_entropy(base, hidden, targets);  // [K]
  loss_.narrow(0, first, K).copy_(rows.detach());
  return rows.sum();
}

DocumentLoss ScoredDocument::result(int64_t peak_encoder_graphs) const {
  DocumentLoss out;
  out.peak_encoder_graphs = peak_encoder_graphs;
  auto host = loss_.to(torch::kCPU);
  out.segment_loss.assign(host.data_ptr<double>(), host.data_ptr<double>() + T_);
  auto counted = counted_.to(torch::kCPU, torch::kInt64);  // the document's last token predicts nothing
  out.segment_tokens.assign(counted.data_ptr<int64_t>(), counted.data_ptr<int64_t>() + T_);
  return out;
}

int64_t ScoredDocument::predictions() const { return counted_.sum().item<int64_t>(); }

MemoryPass::MemoryPass(CausalLM base, MemoryCompressor compressor, int64_t chunk, bool recompute_layers)
    : base_(std::move(base)), compressor_(std::move(compressor)), chunk_(chunk), recompute_layers_(recompute_layers) {
  TORCH_CHECK(chunk >= 1, "memory: chunk must be >= 1, got ", chunk);
}

void MemoryPass::compress(const torch::Tensor& segments) {
  TORCH_CHECK(segments.dim() == 2 && segments.size(1) == compressor_->segment_len(), "memory: compress expects [S, ",
              compressor_->segment_len(), "] segments, got ", segments.sizes());
  const int64_t sink = compressor_->options().sink_tokens;
  if (segments_ == 0 && sink > 0 && segments.size(0) > 0)  // the document's first tokens: the attention sink
    memory_ = compressor_->sink(base_, segments[0].narrow(0, 0, sink));
  for (int64_t s0 = 0; s0 < segments.size(0); s0 += chunk_) {
    const int64_t K = std::min(chunk_, segments.size(0) - s0);
    data::Phase phase("uio::compress");
    memory_.append(compressor_->compress(base_, segments.narrow(0, s0, K)));
    segments_ += K;
  }
}

void MemoryPass::read(const torch::Tensor& ids, const Visitor& visit, int64_t decode_from) {
  TORCH_CHECK(ids.dim() == 1, "memory: a document is [n] token ids, got ", ids.sizes());
  TORCH_CHECK(segments_ == 0, "memory: MemoryPass::read starts a document; this pass already holds ", segments_,
              " segments");
  const int64_t l = compressor_->segment_len(), T = ids.size(0) / l, r = ids.size(0) % l;
  for (int64_t c0 = 0; c0 < T; c0 += chunk_) {
    const int64_t K = std::min(chunk_, T - c0);
    auto segments = ids.narrow(0, c0 * l, K * l).view({K, l});  // [K, l]
    compress(segments);
    const int64_t first = std::max(c0, decode_from);
    if (first >= c0 + K) continue;
    data::Phase phase("uio::decode");
    auto rows = segments.narrow(0, first - c0, c0 + K - first);
    visit(first, compressor_->decode(base_, rows, segment_rows(first, rows.size(0)), memory_, nullptr,
                                     recompute_layers_));  // [K', l, C]
  }
  if (r > 0) {
    data::Phase phase("uio::decode");
    visit(T, compressor_->decode(base_, ids.narrow(0, T * l, r).unsqueeze(0), {T}, memory_, nullptr,
                                 recompute_layers_));  // [1, r, C]
  }
}

torch::Tensor document_logits(CausalLM& base, MemoryCompressor& compressor, const torch::Tensor& ids, int64_t chunk) {
  std::vector<torch::Tensor> logits;
  MemoryPass(base, compressor, chunk).read(ids, [&](int64_t, const torch::Tensor& hidden) {
    logits.push_back(base->logits(hidden).reshape({-1, base->config().vocab_size}));  // [K * T, V]
  });
  return torch::cat(logits);  // [n, V]
}

DocumentLoss score_document(CausalLM& base, MemoryCompressor& compressor, const torch::Tensor& ids, int64_t chunk) {
  torch::NoGradGuard no_grad;  // memory then grows in place (Memory::append)
  ScoredDocument doc(compressor->segment_len(), ids);
  MemoryPass(base, compressor, chunk).read(ids, [&](int64_t first, const torch::Tensor& hidden) {
    doc.score(base, hidden, first);
  });
  return doc.result();
}

DocumentLoss score_truncated(CausalLM& base, const torch::Tensor& ids, int64_t segment_len, int64_t chunk) {
  TORCH_CHECK(chunk >= 1, "memory: chunk must be >= 1, got ", chunk);
  torch::NoGradGuard no_grad;
  ScoredDocument doc(segment_len, ids);
  for (int64_t c0 = 0; c0 < doc.segments(); c0 += chunk) {
    const int64_t K = std::min(chunk, doc.segments() - c0);
    doc.score(base, base->hidden_states(doc.segment_ids(c0, K)), c0);  // [K, l, C]: each segment alone
  }
  return doc.result();
}

}  // namespace uio::model
