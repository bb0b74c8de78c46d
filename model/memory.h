// model/memory.h — UIO-LLMs' memory (docs/method.md §2-5): the encoder (base model + encoder LoRA) compresses
// each l-token segment into M memory tokens, the transfer head (transfer LoRA on W_K, W_V) turns their
// hidden states into key/value entries, and the decoder (the untouched base model, or beyond the paper the
// base model with the decoder LoRA) reads a segment with the memory of all earlier segments before it. One
// frozen base model serves all three passes.
// Owns the trainable parameters and the three passes; gradients through memory live in optim/.
// Dims: S segments, K decoded rows, l segment length, M memory tokens per segment, P memory entries,
// L layers, C model dim, G KV heads, D head dim.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "model/llama.h"
#include "model/lora.h"
#include "model/rope.h"

namespace uio::model {

struct MemoryOptions {
  int64_t segment_len = 1024;  // l
  int64_t num_memory_tokens = 32;  // M (compression ratio l / M)
  LoraOptions encoder_lora{32, 64.0, 0.0, {"q_proj", "v_proj"}};
  LoraOptions transfer_lora{32, 64.0, 0.0, {"k_proj", "v_proj"}};
  // RoPE of the decoder's memory + segment sequence: none (plain positions; the document must fit the
  // base model's window), linear, ntk, dynamic (NTK scaled to each segment's span; never runs out),
  // yarn. Default dynamic, so a 1M-token document runs.
  RopeKind memory_rope = RopeKind::dynamic;
  double memory_rope_factor = 1.0;
  // Beyond the paper (0 = the paper's decoder): the document's first `sink_tokens` tokens, as the
  // decoder's own keys and values, stay ahead of the memory for every later segment (an attention sink, as
  // Activation Beacon keeps for Llama-3): a decoder that met a foreign KV prefix keeps its usual first
  // keys to rest attention on. Decoder positions: sink 0..k-1, memory k.., the segment's tokens after.
  int64_t sink_tokens = 0;
  // Beyond the paper (rank 0 = off = the paper's frozen decoder): a LoRA set on the decoder's own
  // projections, active in every decoder pass (rows with and without memory, generation, the sink) and
  // trained with the plain gradient of the loss (docs/method.md §13).
  LoraOptions decoder_lora{0, 64.0, 0.0, {"q_proj", "k_proj", "v_proj", "o_proj"}};
};

// Memory of a document so far: per layer, un-rotated keys and values of every compressed segment,
// segment-major (entry s * M + i is memory token i of segment s).
struct Memory {
  // L x [G, P, D] (views of the storage below when it is in use), or L x [K, G, P, D]: one memory per
  // decoded row (the training estimators route each row's gradient differently; optim/).
  std::vector<torch::Tensor> k, v;
  int64_t sink = 0;  // the first `sink` entries are the attention sink (MemoryOptions::sink_tokens)
  // Training's gradient routing with one shared memory (optim/estimator.cpp; model/memory_attention.h):
  // L x [G, P, D] tensors with k's and v's values whose gradients are the per-row weighted sums, and the
  // weights [rows, P] (float64, CPU) of the rows decoded next. Empty when not routing.
  std::vector<torch::Tensor> route_k, route_v;
  torch::Tensor route_weights;
  int64_t entries() const { return k.empty() ? 0 : k.front().size(-2); }
  // Entries a row of segment t reads: the sink and t segments' memory (none for segment 0, whose own
  // tokens include the sink tokens).
  int64_t visible(int64_t segment, int64_t num_memory_tokens) const {
    return segment > 0 ? sink + segment * num_memory_tokens : 0;
  }
  // Adds entries along P. Without autograd (reading, generating) they go into storage that grows
  // geometrically, so appending segment after segment costs O(P) in all, not O(P^2) copies; with
  // autograd the tensors are concatenated so gradients flow to every segment.
  void append(const Memory& more);

 private:
  std::vector<torch::Tensor> k_storage_, v_storage_;  // L x [G, capacity, D]
};

class MemoryCompressorImpl : public torch::nn::Module {
 public:
  // `memory_init` [C]: the initial <mem> embedding (docs/method.md §3: the EOS token's embedding).
  MemoryCompressorImpl(const ModelConfig& config, const MemoryOptions& options, const torch::Tensor& memory_init);

  // Encoder: each layer's post-RMSNorm attention input at the memory positions, L x [S, M, C], for
  // segments [S, l] of token ids (compressed independently, in one batched pass).
  std::vector<torch::Tensor> encode(CausalLM& base, const torch::Tensor& segments);
  // Transfer head: memory keys and values L x [S, G, M, D] from encode()'s hidden states.
  std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> transfer(CausalLM& base,
                                                                             const std::vector<torch::Tensor>& hidden);
  // encode + transfer, laid out as a Memory of S * M entries.
  Memory compress(CausalLM& base, const torch::Tensor& segments);
  // The attention sink of a document from its first tokens `first` [k] (k = options().sink_tokens): the
  // decoder's own un-rotated keys and values of those tokens (the base model with the decoder adapters, if
  // any), as a Memory of k entries with sink = k, to which compress()'s memories are then appended.
  // Autograd follows the caller's grad mode when the decoder adapters exist (they are its only trainable
  // input); without them no gradient flows into it.
  Memory sink(CausalLM& base, const torch::Tensor& first);

  // Decoder: final hidden states [K, T, C] of token rows `ids` [K, T]; row k is segment
  // `segment_index[k]` (0-based) and attends to the first segment_index[k] * M entries of `memory`
  // and causally to its own tokens, through the decoder adapters when there are any (never the encoder's
  // or the transfer head's). With `cache` (one row), the tokens continue the cached ones. A
  // per-row memory ([K, G, P, D] entries) gives row k its own copy. `recompute_layers`: activation
  // checkpointing of every decoder layer (training; model/recompute.h).
  torch::Tensor decode(CausalLM& base, const torch::Tensor& ids, const std::vector<int64_t>& segment_index,
                       const Memory& memory, KVCache* cache = nullptr, bool recompute_layers = false);

  // Whether decode() reads a [G, P, D] memory once for all rows of a chunk instead of per-row copies
  // (model/memory_attention.h): with the fused kernels.
  bool reads_shared_memory(CausalLM& base) const;

  // The decoder's position of token j of segment t (after the sink and t segments' memory), and the RoPE
  // used for memory and segment.
  int64_t decoder_position(int64_t segment, int64_t token) const {
    return (segment > 0 ? options_.sink_tokens + segment * M_ : 0) + token;
  }
  const Rope& decoder_rope() const { return *decoder_rope_; }
  const MemoryOptions& options() const { return options_; }
  int64_t segment_len() const { return l_; }
  int64_t num_memory_tokens() const { return M_; }

  LoraSet encoder{nullptr};
  LoraSet transfer_head{nullptr};
  LoraSet decoder{nullptr};  // null unless options().decoder_lora.rank > 0
  torch::Tensor memory_embedding;  // [C], fp32

 private:
  // cos/sin of `positions` [T] for a row of segment t (dynamic NTK is fixed per segment span).
  std::pair<torch::Tensor, torch::Tensor> row_cos_sin(const torch::Tensor& positions, int64_t segment) const;

  ModelConfig config_;
  MemoryOptions options_;
  int64_t l_, M_;
  std::optional<Rope> decoder_rope_;  // memory_rope none: a copy of the base model's own
  torch::Tensor encoder_mask_;  // [l + M, l + M] bool
  torch::Tensor encoder_positions_;  // [l + M] int64
};
TORCH_MODULE(MemoryCompressor);

// The initial <mem> embedding of a new compressor (docs/method.md §3): the EOS token's input embedding
// (token 0 when the model names no EOS), float32, on the model's device.
torch::Tensor eos_memory_init(CausalLM& base);

// The encoder's attention mask (true = may attend) and RoPE positions, exactly as docs/method.md §3 states:
// ordinary tokens causal among themselves and blind to memory; memory token i sees ordinary tokens
// [0, (i+1) l/M) and itself; ordinary token j at position j, memory token i at (i+1) l/M.
torch::Tensor encoder_attention_mask(int64_t segment_len, int64_t num_memory_tokens);
torch::Tensor encoder_positions(int64_t segment_len, int64_t num_memory_tokens);

}  // namespace uio::model
