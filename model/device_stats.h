// model/device_stats.h — peak memory and synchronisation for benchmarks: the CUDA caching allocator's
// peak on a GPU, the process's peak resident set on the CPU. The one place that talks to CUDA's
// runtime directly (built only when libtorch has CUDA).
#pragma once

#include <torch/torch.h>

namespace uio::model {

void synchronize(const torch::Device& device);
// Makes `device` the current CUDA device of this process (data parallel: one process per GPU); a no-op elsewhere.
void bind_device(const torch::Device& device);
void reset_peak_memory(const torch::Device& device);
// Bytes: peak allocated on the GPU since the last reset, or the process's peak RSS on the CPU.
int64_t peak_memory_bytes(const torch::Device& device);
// Returns the CUDA caching allocator's unused blocks to the driver (after an out-of-memory error).
void release_cached_memory(const torch::Device& device);

}  // namespace uio::model
