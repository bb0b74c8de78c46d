// model/kv_cache.cpp — preallocated per-layer key/value buffers, grown on request.
#include "model/kv_cache.h"

namespace uio::model {

KVCache::KVCache(int64_t num_layers, int64_t batch, int64_t num_kv_heads, int64_t capacity, int64_t head_dim,
                 torch::TensorOptions options)
    : capacity_(capacity) {
  TORCH_CHECK(capacity > 0, "kv cache: capacity must be > 0, got ", capacity);
  for (int64_t i = 0; i < num_layers; ++i) {
    keys_.push_back(torch::empty({batch, num_kv_heads, capacity, head_dim}, options));
    values_.push_back(torch::empty({batch, num_kv_heads, capacity, head_dim}, options));
  }
}

std::pair<torch::Tensor, torch::Tensor> KVCache::append(int64_t layer, const torch::Tensor& k, const torch::Tensor& v) {
  TORCH_CHECK(layer >= 0 && layer < static_cast<int64_t>(keys_.size()), "kv cache: no layer ", layer);
  const int64_t t = k.size(2);
  TORCH_CHECK(length_ + t <= capacity_, "kv cache: ", length_, " cached + ", t, " new tokens exceed capacity ",
              capacity_, "; create the cache with a larger capacity");
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == keys_[layer].size(0) && k.size(1) == keys_[layer].size(1) &&
                  k.size(3) == keys_[layer].size(3),
              "kv cache: expected keys/values [", keys_[layer].size(0), ", ", keys_[layer].size(1), ", T, ",
              keys_[layer].size(3), "], got ", k.sizes(), " and ", v.sizes());
  keys_[layer].narrow(2, length_, t).copy_(k);
  values_[layer].narrow(2, length_, t).copy_(v);
  return {keys_[layer].narrow(2, 0, length_ + t), values_[layer].narrow(2, 0, length_ + t)};
}

void KVCache::reserve(int64_t capacity) {
  if (capacity <= capacity_) return;
  for (size_t i = 0; i < keys_.size(); ++i) {
    auto sizes = keys_[i].sizes().vec();
    sizes[2] = capacity;
    auto keys = torch::empty(sizes, keys_[i].options()), values = torch::empty(sizes, values_[i].options());
    keys.narrow(2, 0, length_).copy_(keys_[i].narrow(2, 0, length_));
    values.narrow(2, 0, length_).copy_(values_[i].narrow(2, 0, length_));
    keys_[i] = keys, values_[i] = values;
  }
  capacity_ = capacity;
}

void KVCache::advance(int64_t tokens) {
  TORCH_CHECK(length_ + tokens <= capacity_, "kv cache: advance past capacity");
  length_ += tokens;
}

void KVCache::truncate(int64_t length) {
  TORCH_CHECK(length >= 0 && length <= length_, "kv cache: cannot truncate ", length_, " entries to ", length);
  length_ = length;
}

void KVCache::drop_front(int64_t count) {
  TORCH_CHECK(count >= 0 && count <= length_, "kv cache: cannot drop ", count, " of ", length_, " entries");
  const int64_t keep = length_ - count;
  for (size_t i = 0; i < keys_.size(); ++i) {
    keys_[i].narrow(2, 0, keep).copy_(keys_[i].narrow(2, count, keep).clone());
    values_[i].narrow(2, 0, keep).copy_(values_[i].narrow(2, count, keep).clone());
  }
  length_ = keep;
}

}  // namespace uio::model
