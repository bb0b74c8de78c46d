// optim/estimator.h — the gradient of a document's loss through memory (docs/method.md §8-11): given the
// frozen base model and the compressor, one call reads a training document segment by segment,
// scores every next-token prediction, and accumulates into the compressor's .grad the gradient of
// `loss_scale` * (summed cross-entropy) as the chosen estimator defines it. The optimiser step and
// the loop over documents belong to the trainer.
//
//   full         backpropagation through every memory (plain autograd; memory grows with T)
//   tbptt_naive  window S, each loss's window of encoders recomputed (reference for tests)
//   tbptt        incremental TBPTT (Eq. 6-9): memories are leaves, each encoder graph back-propagated
//                once, when its segment leaves the window
//   unbiased     reservoir sampling of the memories that keep their encoder graph, loss t's gradient
//                into them scaled by max(1, t/S); expected gradient = full (§3.3.3)
// Every estimator reads the document in chunks of `chunk` segments: encoders and decoders batched
// inside a chunk, incremental across chunks. For a given plan, every chunk size gives the same
// gradient; chunk 1 is the paper's sequential algorithm.
// Only the encoder's gradient (encoder LoRA, <mem>) is cut or scaled by a plan: the transfer head and the
// decoder adapters (when the compressor has them; with the attention sink they compute) take the plain
// gradient of the loss under every estimator.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/llama.h"
#include "model/memory.h"
#include "model/memory_pass.h"
#include "optim/gradient_plan.h"

namespace uio::optim {

enum class EstimatorKind { full, tbptt_naive, tbptt, unbiased };
EstimatorKind parse_estimator_kind(const std::string& name);  // throws naming the valid ones
const char* estimator_kind_name(EstimatorKind kind);

struct EstimatorOptions {
  EstimatorKind kind = EstimatorKind::unbiased;
  int64_t window = 2;  // S
  int64_t chunk = model::kDefaultChunk;  // K: segments per batched chunk
  // Activation checkpointing: keep no encoder activations between a chunk's forward and its backward
  // (recompute the encoder, with the same dropout draws, when its gradient is complete), and keep
  // only each decoder layer's inputs (recompute the layer in the backward pass). Trades one more
  // forward per segment for most of the activation memory.
  bool activation_checkpointing = false;
  uint64_t seed = 0;  // the reservoir's generator
};

// The estimator chosen by config, with its reservoir generator (state saved by checkpoints).
class GradientEstimator {
 public:
  explicit GradientEstimator(const EstimatorOptions& options);
  // `ids` [n] on the model's device, n a multiple of the segment length; `loss_mask` [n] (optional, 0/1):
  // which tokens' predictions count (model/memory_pass.h ScoredDocument). Gradients accumulate.
  model::DocumentLoss backward(model::CausalLM& base, model::MemoryCompressor& compressor, const torch::Tensor& ids,
                               double loss_scale, const torch::Tensor& loss_mask = {});
  // The plan for a document of T segments (draws from the reservoir generator for `unbiased`).
  GradientPlan next_plan(int64_t segments);
  const EstimatorOptions& options() const { return options_; }
  uint64_t rng_state() const { return rng_.state(); }
  void set_rng_state(uint64_t state) { rng_.set_state(state); }

 private:
  EstimatorOptions options_;
  ReservoirRng rng_;
};

// The three ways of running a plan, public for tests.
// `recompute_decoder`: activation checkpointing of the decoder layers (every encoder graph is kept: that
// is what full backpropagation costs).
model::DocumentLoss backward_full(model::CausalLM& base, model::MemoryCompressor& compressor, const torch::Tensor& ids,
                                  int64_t chunk, double loss_scale, bool recompute_decoder = false,
                                  const torch::Tensor& loss_mask = {});
model::DocumentLoss backward_naive(model::CausalLM& base, model::MemoryCompressor& compressor, const torch::Tensor& ids,
                                   const GradientPlan& plan, int64_t chunk, double loss_scale,
                                   const torch::Tensor& loss_mask = {});
model::DocumentLoss backward_incremental(model::CausalLM& base, model::MemoryCompressor& compressor,
                                         const torch::Tensor& ids, const GradientPlan& plan, int64_t chunk,
                                         bool activation_checkpointing, double loss_scale,
                                         const torch::Tensor& loss_mask = {});

}  // namespace uio::optim
