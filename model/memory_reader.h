// model/memory_reader.h — reading and generating with memory one token at a time (docs/method.md §5):
// whole segments are compressed (a chunk at a time when a prompt holds many), the current segment's
// tokens stay in the decoder's KV cache, and when they reach l they are compressed and dropped from it.
// `uio generate --memory`, eval's passkey and needle answers, and the Python package's tests use it.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <vector>

#include "model/kv_cache.h"
#include "model/llama.h"
#include "model/memory.h"
#include "model/memory_pass.h"

namespace uio::model {

class MemoryReader {
 public:
  // `chunk`: whole segments compressed per batched call when a prompt holds many.
  MemoryReader(CausalLM base, MemoryCompressor compressor, int64_t chunk = kDefaultChunk);
  // Reads tokens (a prompt); returns the logits [V] after the last one. Full segments that need no
  // logits are compressed without being decoded. `on_segment(done, total)` reports progress.
  torch::Tensor read(const std::vector<int64_t>& ids, const std::function<void(int64_t, int64_t)>& on_segment = {});
  int64_t segments() const { return pass_.segments(); }
  int64_t pending() const { return static_cast<int64_t>(pending_.size()); }
  const Memory& memory() const { return pass_.memory(); }

 private:
  torch::Tensor decode_pending(const std::vector<int64_t>& ids);  // logits [T, V] of ids appended to the segment
  void compress_segments(const int64_t* ids, int64_t count);  // count whole segments starting at ids
  void compress_pending();

  MemoryPass pass_;
  std::vector<int64_t> pending_;  // tokens of the current (incomplete) segment
  KVCache cache_;
};

}  // namespace uio::model
