// model/memory.h — UIO-LLMs' memory (DESIGN.md §2): the encoder (base model + encoder LoRA) compresses
// each l-token segment into M memory tokens, the transfer head (transfer LoRA on W_K, W_V) turns their
// hidden states into key/value entries, and the decoder (the untouched base model) reads a segment with
// the memory of all earlier segments before it. One frozen base model serves all three passes.
// Owns the trainable parameters and the three passes; gradients through memory live in optim/.
// Dims: S segments, K decoded rows, l segment length, M memory tokens per segment, P memory entries,
// L layers, C model dim, G KV heads, D head dim.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/llama.h"
#include "model/lora.h"
#include "model/rope.h"

namespace uio::model {

struct MemoryOptions {
  int64_t segment_len = 1024;     // l
  int64_t num_memory_tokens = 32; // M (compression ratio l / M)
  LoraOptions encoder_lora{32, 64.0, 0.0, {"q_proj", "v_proj"}};
  LoraOptions transfer_lora{32, 64.0, 0.0, {"k_proj", "v_proj"}};
  // RoPE of the decoder's memory + segment sequence: none (plain positions; the document must fit the
  // base model's window), linear, ntk, dynamic (NTK scaled to each segment's span; never runs out),
  // yarn. Default dynamic, so a 1M-token document runs.
  std::string memory_rope = "dynamic";
  double memory_rope_factor = 1.0;
};

// Memory of a document so far: per layer, un-rotated keys and values of every compressed segment,
// segment-major (entry s * M + i is memory token i of segment s).
struct Memory {
  // L x [G, P, D] (views of the storage below when it is in use), or L x [K, G, P, D]: one memory per
  // decoded row (the training estimators route each row's gradient differently; optim/).
  std::vector<torch::Tensor> k, v;
  int64_t entries() const { return k.empty() ? 0 : k.front().size(-2); }
  // Adds entries along P. Without autograd (reading, generating) they go into storage that grows
  // geometrically, so appending segment after segment costs O(P) in all, not O(P^2) copies; with
  // autograd the tensors are concatenated so gradients flow to every segment.
  void append(const Memory& more);

 private:
  std::vector<torch::Tensor> k_storage_, v_storage_;  // L x [G, capacity, D]
};

class MemoryCompressorImpl : public torch::nn::Module {
 public:
  // `memory_init` [C]: the initial <mem> embedding (DESIGN.md: the EOS token's embedding).
  MemoryCompressorImpl(const ModelConfig& config, const MemoryOptions& options, const torch::Tensor& memory_init);

  // Encoder: each layer's post-RMSNorm attention input at the memory positions, L x [S, M, C], for
  // segments [S, l] of token ids (compressed independently, in one batched pass).
  std::vector<torch::Tensor> encode(CausalLM& base, const torch::Tensor& segments);
  // Transfer head: memory keys and values L x [S, G, M, D] from encode()'s hidden states.
  std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> transfer(CausalLM& base,
                                                                            const std::vector<torch::Tensor>& hidden);
  // encode + transfer, laid out as a Memory of S * M entries.
  Memory compress(CausalLM& base, const torch::Tensor& segments);

  // Decoder: final hidden states [K, T, C] of token rows `ids` [K, T]; row k is segment
  // `segment_index[k]` (0-based) and attends to the first segment_index[k] * M entries of `memory`
  // and causally to its own tokens. With `cache` (one row), the tokens continue the cached ones. A
  // per-row memory ([K, G, P, D] entries) gives row k its own copy. `recompute_layers`: activation
  // checkpointing of every decoder layer (training; model/recompute.h).
  torch::Tensor decode(CausalLM& base, const torch::Tensor& ids, const std::vector<int64_t>& segment_index,
                       const Memory& memory, KVCache* cache = nullptr, bool recompute_layers = false);

  // The decoder's position of token j of segment t, and the RoPE used for memory and segment.
  int64_t decoder_position(int64_t segment, int64_t token) const { return segment * M_ + token; }
  const Rope& decoder_rope() const { return *decoder_rope_; }
  const MemoryOptions& options() const { return options_; }
  int64_t segment_len() const { return l_; }
  int64_t num_memory_tokens() const { return M_; }

  LoraSet encoder{nullptr};
  LoraSet transfer_head{nullptr};
  torch::Tensor memory_embedding;  // [C], fp32

 private:
  // cos/sin of `positions` [T] for a row of segment t (dynamic NTK is fixed per segment span).
  std::pair<torch::Tensor, torch::Tensor> row_cos_sin(const torch::Tensor& positions, int64_t segment) const;

  ModelConfig config_;
  MemoryOptions options_;
  int64_t l_, M_;
  std::optional<Rope> decoder_rope_;  // memory_rope none: a copy of the base model's own
  torch::Tensor encoder_mask_;        // [l + M, l + M] bool
  torch::Tensor encoder_positions_;   // [l + M] int64
};
TORCH_MODULE(MemoryCompressor);

// The initial <mem> embedding of a new compressor (DESIGN.md §2): the EOS token's input embedding
// (token 0 when the model names no EOS), float32, on the model's device.
torch::Tensor eos_memory_init(CausalLM& base);

// The encoder's attention mask (true = may attend) and RoPE positions, exactly as DESIGN.md §2:
// ordinary tokens causal among themselves and blind to memory; memory token i sees ordinary tokens
// [0, (i+1) l/M) and itself; ordinary token j at position j, memory token i at (i+1) l/M.
torch::Tensor encoder_attention_mask(int64_t segment_len, int64_t num_memory_tokens);
torch::Tensor encoder_positions(int64_t segment_len, int64_t num_memory_tokens);

// Teacher-forced logits [n, V] of a whole document `ids` [n] (T full segments plus a residual):
// compress the full segments, then decode every segment and the residual with the memory before it.
// Segments are processed `chunk` at a time (encoder and decoders batched inside a chunk).
torch::Tensor document_logits(CausalLM& base, MemoryCompressor& compressor, const torch::Tensor& ids,
                              int64_t chunk = 8);

// Reading and generating with memory, one token at a time (DESIGN.md §2, Generation): full segments
// are compressed, the current segment's tokens stay in the decoder's KV cache; when they reach l they
// are compressed and dropped from the cache.
class MemoryReader {
 public:
  // `chunk`: whole segments compressed per batched call when a prompt holds many.
  MemoryReader(CausalLM base, MemoryCompressor compressor, int64_t chunk = 32);
  // Reads tokens (a prompt); returns the logits [V] after the last one. Full segments that need no
  // logits are compressed without being decoded, `chunk` at a time. `on_segment(done, total)` reports
  // progress.
  torch::Tensor read(const std::vector<int64_t>& ids,
                     const std::function<void(int64_t, int64_t)>& on_segment = {});
  int64_t segments() const { return segments_; }
  int64_t pending() const { return static_cast<int64_t>(pending_.size()); }
  const Memory& memory() const { return memory_; }

 private:
  torch::Tensor decode_pending(const std::vector<int64_t>& ids);  // logits [T, V] of ids appended to the segment
  void compress_segments(const int64_t* ids, int64_t count);  // count whole segments starting at ids
  void compress_pending();

  CausalLM base_;
  MemoryCompressor compressor_;
  Memory memory_;
  int64_t segments_ = 0;
  int64_t chunk_;
  std::vector<int64_t> pending_;  // tokens of the current (incomplete) segment
  KVCache cache_;
};

}  // namespace uio::model
