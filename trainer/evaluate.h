// trainer/evaluate.h — long-context evaluation of one base model under several methods on the same
// tokens: `uio` (a trained memory compressor), `truncate` (the base model seeing only the last window of
// tokens), `truncate_lora` (the same window read through a memory export's decoder LoRA, without memory:
// the control that separates what memory adds from what the decoder's adaptation adds), and full attention
// over the whole context with the base model's RoPE rescaled for the length (`linear` = position
// interpolation, `ntk` = NTK-aware base change, `dynamic` = dynamic NTK, `yarn`).
// Owns scoring and greedy answers; which documents, lengths and prompts is `uio eval`'s (tools/eval.cpp).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/llama.h"
#include "model/memory.h"
#include "model/memory_pass.h"
#include "model/rope.h"

namespace uio::trainer {

enum class EvalMethod { uio, truncate, truncate_lora, linear, ntk, dynamic, yarn };
EvalMethod parse_eval_method(const std::string& name);  // throws naming the valid ones
const char* eval_method_name(EvalMethod method);

struct Evaluator {
  model::CausalLM base{nullptr};
  model::MemoryCompressor compressor{nullptr};  // needed by `uio`, and its decoder adapters by `truncate_lora`
  int64_t truncate_window = 0;  // tokens `truncate` sees; 0: the base model's trained window
  int64_t chunk = model::kDefaultChunk;  // segments per batched call when reading with memory

  // The window `truncate` and `truncate_lora` see, and the base model's trained window (RoPE scaling starts past it).
  int64_t window() const;
  int64_t trained_window() const { return base->config().max_position; }

  // Summed cross-entropy (nats) and count of the last `scored` predictions of `prefix` ([L] token ids):
  // tokens L - scored .. L - 1, each predicted from what the method sees before it. Needs L > scored.
  std::pair<double, int64_t> score_tail(EvalMethod method, const torch::Tensor& prefix, int64_t scored);

  // Greedy continuation of `prompt`: up to `max_new` new ids, stopping at EOS.
  std::vector<int64_t> greedy(EvalMethod method, const std::vector<int64_t>& prompt, int64_t max_new);
};

// RoPE for full attention over `length` tokens with `method`'s scaling: factor max(1, length / trained
// window); at or below the trained window every method is the base model's own RoPE.
model::Rope baseline_rope(const model::ModelConfig& config, EvalMethod method, int64_t length);

// Whether `method` reads a memory export (`uio`, `truncate_lora`), which `uio eval` then needs.
bool needs_memory(EvalMethod method);

}  // namespace uio::trainer
