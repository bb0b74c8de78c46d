// model/memory_pass.h — the one forward of a document through memory (docs/method.md §4): full segments
// are compressed a chunk of K at a time (encoders batched) and the segments asked for are decoded, each
// reading the memory of every earlier segment; the residual (< l tokens) is decoded last. Training's
// full estimator, validation, `uio eval`, the reader that generates and the tests all read documents
// through MemoryPass, and score them through ScoredDocument. How gradients route through memory is
// optim/'s (its incremental estimators reuse these pieces with their own routing).
// Dims: K decoded rows, l segment length, C model dim, V vocabulary.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <vector>

#include "model/llama.h"
#include "model/memory.h"

namespace uio::model {

// Segments per batched encoder/decoder call unless a caller chooses (training's `chunk`, eval's `chunk`):
// the one default. More is faster on a GPU and costs memory; the results do not depend on it.
constexpr int64_t kDefaultChunk = 8;

// Segment indices first, first + 1, ..., first + count - 1: the decoder's row -> segment map.
std::vector<int64_t> segment_rows(int64_t first, int64_t count);

// What a document scored: summed cross-entropy and prediction count, per segment position.
struct DocumentLoss {
  std::vector<double> segment_loss;
  std::vector<int64_t> segment_tokens;
  int64_t peak_encoder_graphs = 0;  // training: segments whose encoder graph was alive at once
  double loss() const;  // summed over the document
  int64_t tokens() const;  // predictions
};

// A document of T full segments (ids [n], n a positive multiple of l) with its next-token targets
// (model/loss.h), scored chunk by chunk into a per-segment loss record. `loss_mask` [n] (0 or 1; undefined:
// all 1) says which tokens' predictions count: answer-only loss on synthetic retrieval documents. A
// masked prediction becomes an ignored target, so it adds nothing to the loss, its gradient or the counts.
class ScoredDocument {
 public:
  ScoredDocument(int64_t segment_len, const torch::Tensor& ids, const torch::Tensor& loss_mask = {});
  int64_t segments() const { return T_; }
  const torch::Tensor& ids() const { return ids_; }
  torch::Tensor segment_ids(int64_t first, int64_t count) const;  // [count, l]
  // Scores decoded rows `hidden` [K, l, C] of segments first..first+K-1; records and returns their summed
  // loss (a scalar with the graph of `hidden`).
  torch::Tensor score(CausalLM& base, const torch::Tensor& hidden, int64_t first);
  DocumentLoss result(int64_t peak_encoder_graphs = 0) const;
  int64_t predictions() const;  // that count, in the whole document

 private:
  torch::Tensor ids_, targets_, loss_, counted_;  // counted_ [T]: predictions that count per segment
  int64_t l_, T_;
};

class MemoryPass {
 public:
  // `recompute_layers`: activation checkpointing of the decoder layers (training).
  MemoryPass(CausalLM base, MemoryCompressor compressor, int64_t chunk = kDefaultChunk, bool recompute_layers = false);

  // Called with the first segment index of a batch of decoded rows and their final hidden states [K, T, C]
  // (T = l, or the residual's length for the last call, whose segment index is the number of full segments).
  using Visitor = std::function<void(int64_t first_segment, const torch::Tensor& hidden)>;

  // Reads `ids` [n] from the start: compresses every full segment into memory() and decodes segments
  // decode_from.. and the residual, in order. Autograd follows the caller's grad mode.
  void read(const torch::Tensor& ids, const Visitor& visit, int64_t decode_from = 0);
  // Compresses whole segments [S, l] into memory() without decoding, `chunk` per batched call.
  void compress(const torch::Tensor& segments);

  const Memory& memory() const { return memory_; }
  int64_t segments() const { return segments_; }  // compressed so far
  int64_t chunk() const { return chunk_; }
  CausalLM& base() { return base_; }
  MemoryCompressor& compressor() { return compressor_; }

 private:
  CausalLM base_;
  MemoryCompressor compressor_;
  int64_t chunk_;
  bool recompute_layers_;
  Memory memory_;
  int64_t segments_ = 0;
};

// Teacher-forced logits [n, V] of a whole document `ids` [n] (T full segments plus a residual).
torch::Tensor document_logits(CausalLM& base, MemoryCompressor& compressor, const torch::Tensor& ids,
                              int64_t chunk = kDefaultChunk);

// The document's loss with memory and without gradients (validation, evaluation): the forward training
// runs. `ids` [n], n a multiple of segment_len.
DocumentLoss score_document(CausalLM& base, MemoryCompressor& compressor, const torch::Tensor& ids,
                            int64_t chunk = kDefaultChunk);

// The base model alone on each segment of `ids` [n] (each segment at positions 0..l-1, no memory), the
// same targets as score_document: what memory is compared against.
DocumentLoss score_truncated(CausalLM& base, const torch::Tensor& ids, int64_t segment_len,
                             int64_t chunk = kDefaultChunk);

}  // namespace uio::model
