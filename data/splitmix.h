// data/splitmix.h — the one small random generator of data/ (splitmix64): a 64-bit state that a
// checkpoint saves as a number, and the same streams on every platform (the standard library's
// distributions differ between implementations). Samplers, synthetic tasks and random documents use it.
#pragma once

#include <cstdint>
#include <limits>
#include <stdexcept>

namespace uio::data {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state = 0) : state_(state) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), by rejection (no modulo bias).
  uint64_t below(uint64_t n) {
    if (n == 0) throw std::invalid_argument("splitmix64: below(0)");
    const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
    uint64_t x;
    do x = next();
    while (x >= limit);
    return x % n;
  }
  uint64_t state() const { return state_; }
  void set_state(uint64_t state) { state_ = state; }

 private:
  uint64_t state_;
};

}  // namespace uio::data
