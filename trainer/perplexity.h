// trainer/perplexity.h — held-out perplexity of a document set, per segment position, read with memory
// and by the base model truncated to one segment (each segment alone, at positions 0..l-1). Same
// documents and same scored tokens for both, so the gap is what memory adds. Training's validation
// and `uio train`'s before/after report use it.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "model/llama.h"
#include "model/memory.h"
#include "model/memory_pass.h"

namespace uio::trainer {

// Summed loss and prediction count per segment position over a set of documents.
struct SegmentScores {
  std::vector<double> loss;
  std::vector<int64_t> tokens;
  void add(const model::DocumentLoss& document);
  // exp(mean loss) over positions >= from_segment; NaN when nothing was scored there.
  double perplexity(int64_t from_segment = 0) const;
  std::vector<double> perplexity_by_segment() const;
};

struct Perplexity {
  SegmentScores memory, truncated;
};
// Both scores over `documents` ([n] each, on any device; moved to the model's).
Perplexity evaluate_perplexity(model::CausalLM& base, model::MemoryCompressor& compressor,
                               const std::vector<torch::Tensor>& documents, int64_t chunk);

}  // namespace uio::trainer
