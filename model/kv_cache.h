// model/kv_cache.h — the decoder's key/value cache for incremental decoding: one preallocated buffer
// per layer (keys already rotated), filled front to back. Owns storage and length only; attention
// (model/attention.h) decides what to write and read.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace uio::model {

class KVCache {
 public:
  // Buffers [B, G, capacity, D] per layer. Dims: B batch, G KV heads, D head dim.
  KVCache(int64_t num_layers, int64_t batch, int64_t num_kv_heads, int64_t capacity, int64_t head_dim,
          torch::TensorOptions options);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  // Writes `k`, `v` ([B, G, T, D]) of `layer` at positions [length, length + T) and returns views of
  // the filled part [B, G, length + T, D]. The length itself advances once per forward (advance()).
  std::pair<torch::Tensor, torch::Tensor> append(int64_t layer, const torch::Tensor& k, const torch::Tensor& v);
  void advance(int64_t tokens);
  // Grows the buffers to hold `capacity` tokens (keeping what is cached); never shrinks them.
  void reserve(int64_t capacity);
  // Forgets everything past `length` (e.g. after the tokens were compressed into memory).
  void truncate(int64_t length);
  // Drops the first `count` entries and moves the rest to the front.
  void drop_front(int64_t count);

 private:
  std::vector<torch::Tensor> keys_, values_;
  int64_t capacity_;
  int64_t length_ = 0;
};

}  // namespace uio::model
