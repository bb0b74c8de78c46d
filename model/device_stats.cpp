// model/device_stats.cpp — see device_stats.h.
#include "model/device_stats.h"

#include <sys/resource.h>

#ifdef UIO_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/cuda.h>
#endif

namespace uio::model {

void synchronize(const torch::Device& device) {
#ifdef UIO_WITH_CUDA
  if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? -1 : device.index());
#endif
}

void bind_device(const torch::Device& device) {
#ifdef UIO_WITH_CUDA
  if (device.is_cuda() && device.index() >= 0) c10::cuda::set_device(device.index());
#endif
}

void reset_peak_memory(const torch::Device& device) {
#ifdef UIO_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#endif
}

int64_t peak_memory_bytes(const torch::Device& device) {
#ifdef UIO_WITH_CUDA
  if (device.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  }
#endif
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

void release_cached_memory(const torch::Device& device) {
#ifdef UIO_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
}

}  // namespace uio::model
