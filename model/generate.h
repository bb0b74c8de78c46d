// model/generate.h — autoregressive decoding over token ids with the KV cache: greedy or sampled
// (temperature, top-k, top-p), one callback per new token for streaming. Text is the caller's
// business (data/tokenizer.h); memory-augmented generation builds on the same sampler.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <stdexcept>
#include <vector>

#include "model/llama.h"
#include "model/memory.h"
#include "model/memory_reader.h"

namespace uio::model {

struct SamplingOptions {
  int64_t max_new_tokens = 128;
  double temperature = 0.0;  // 0 = greedy
  int64_t top_k = 0;  // 0 = no top-k cut
  double top_p = 1.0;  // 1 = no nucleus cut
  uint64_t seed = 0;
  int64_t eos_id = -1;  // stop after emitting this id (-1 = never)
};

// Logits that are NaN or infinite: the weights are broken (or overflow in the dtype); no text is made from them.
class NonFiniteLogitsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws std::invalid_argument naming the option ("top_p is 0, expected ...") when one is out of range:
// temperature finite and >= 0, top_p in (0, 1], top_k >= 0, max_new_tokens > 0.
void validate(const SamplingOptions& options);

// Draws the next token from logits [V]: argmax when temperature is 0, else softmax(logits / T)
// restricted to the top-k ids and the smallest set whose probability reaches top_p (computed in float64,
// so tiny temperatures and tiny top_p pick the most likely token). Throws NonFiniteLogitsError when the
// logits are not finite (a broken weight file must not produce text).
int64_t sample_token(const torch::Tensor& logits, const SamplingOptions& options, at::Generator& generator);

// Feeds `prompt`, then generates until max_new_tokens, EOS, or `on_token` returning false.
// Returns the new ids (the prompt excluded). `rope` replaces the model's own RoPE (context-extension
// baselines: position interpolation, NTK, YaRN at a longer window); `lora`, when given, is active in every
// pass (a memory export's decoder adapters read without memory).
std::vector<int64_t> generate(CausalLM& model, const std::vector<int64_t>& prompt, const SamplingOptions& options,
                              const std::function<bool(int64_t)>& on_token = {}, const Rope* rope = nullptr,
                              const LoraSetImpl* lora = nullptr);

// The same with memory: the prompt is read in l-token segments (each full one compressed), and
// generated tokens fill the current segment until it is compressed in turn. `on_segment(done, total)`
// reports the prompt's progress.
std::vector<int64_t> generate(MemoryReader& reader, const std::vector<int64_t>& prompt, const SamplingOptions& options,
                              const std::function<bool(int64_t)>& on_token = {},
                              const std::function<void(int64_t, int64_t)>& on_segment = {});

}  // namespace uio::model
