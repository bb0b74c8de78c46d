// model/memory_reader.cpp — prompt reading and token-by-token decoding with memory.
#include "model/memory_reader.h"

namespace uio::model {

MemoryReader::MemoryReader(CausalLM base, MemoryCompressor compressor, int64_t chunk)
    : pass_(base, compressor, chunk), cache_(base->make_cache(1, compressor->segment_len())) {}

torch::Tensor MemoryReader::decode_pending(const std::vector<int64_t>& ids) {
  auto& base = pass_.base();
  auto row = torch::tensor(ids, torch::kInt64).unsqueeze(0).to(base->output_weight().device());  // [1, T]
  auto hidden = pass_.compressor()->decode(base, row, {segments()}, pass_.memory(), &cache_);
  pending_.insert(pending_.end(), ids.begin(), ids.end());
  return base->logits(hidden)[0];  // [T, V]
}

void MemoryReader::compress_segments(const int64_t* ids, int64_t count) {
  const int64_t l = pass_.compressor()->segment_len();
  auto segments = torch::from_blob(const_cast<int64_t*>(ids), {count, l}, torch::kInt64);
  pass_.compress(segments.to(pass_.base()->output_weight().device(), /*non_blocking=*/false, /*copy=*/true));
}

void MemoryReader::compress_pending() {
  compress_segments(pending_.data(), 1);
  pending_.clear();
  cache_.truncate(0);
}

torch::Tensor MemoryReader::read(const std::vector<int64_t>& ids,
                                 const std::function<void(int64_t, int64_t)>& on_segment) {
  TORCH_CHECK(!ids.empty(), "memory: nothing to read");
  torch::NoGradGuard no_grad;
  const int64_t l = pass_.compressor()->segment_len();
  const int64_t total_segments = segments() + (pending() + static_cast<int64_t>(ids.size())) / l;
  torch::Tensor last;
  size_t i = 0;
  if (pending() == 0) {
    // Whole segments with more tokens after them need no logits: compress them, a chunk per call.
    const int64_t whole = static_cast<int64_t>(ids.size() - 1) / l;
    for (int64_t done = 0; done < whole;) {
      const int64_t K = std::min(pass_.chunk(), whole - done);
      compress_segments(ids.data() + i, K);
      done += K, i += static_cast<size_t>(K * l);
      if (on_segment) on_segment(segments(), total_segments);
    }
  }
  while (i < ids.size()) {
    const size_t take = std::min(ids.size() - i, static_cast<size_t>(l - pending()));
    std::vector<int64_t> piece(ids.begin() + static_cast<std::ptrdiff_t>(i),
                               ids.begin() + static_cast<std::ptrdiff_t>(i + take));
    i += take;
    const bool completes = pending() + static_cast<int64_t>(take) == l;
    if (completes && pending() == 0 && i < ids.size()) {
      pending_ = std::move(piece);  // a whole segment whose logits nobody needs: compress only
    } else {
      auto logits = decode_pending(piece);
      if (i == ids.size()) last = logits[-1];
    }
    if (completes) {
      compress_pending();
      if (on_segment) on_segment(segments(), total_segments);
    }
  }
  return last;
}

}  // namespace uio::model
