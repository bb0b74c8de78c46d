// optim/gradient_plan.h — which memory-to-loss paths carry gradient into the encoder, and with what
// factor (docs/method.md §9-10; paper §3.3). Loss t reads memories 0..t-1; weight(t, s) scales the gradient that loss t
// sends back through memory s into the encoder (0: that path is detached). The transfer head's
// gradient is never scaled or cut. A plan is drawn once per document, so how the document is cut
// into chunks of segments cannot change it. Running a plan is optim/estimator.h's job.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/splitmix.h"

namespace uio::optim {

class GradientPlan {
 public:
  explicit GradientPlan(int64_t segments = 0);
  int64_t segments() const { return T_; }
  double weight(int64_t loss, int64_t memory) const;  // 0 unless memory < loss
  void set_weight(int64_t loss, int64_t memory, double w);
  // The last loss whose gradient reaches memory s's encoder (-1: none does). After it, the encoder
  // graph of s can be back-propagated and freed (Eq. 9).
  int64_t last_use(int64_t memory) const;

 private:
  int64_t T_;
  std::vector<double> w_;  // [T, T], row = loss
};

// Every path (full BPTT).
GradientPlan full_plan(int64_t segments);
// Truncated BPTT with window S: loss t reaches memories t-S..t-1.
GradientPlan window_plan(int64_t segments, int64_t window);
// Reservoir sampling (Vitter's algorithm R) of S memories: after loss t, memory t enters the reservoir
// if t < S, else with draw j (uniform in 0..t) it replaces slot j when j < S. Loss t reaches the
// memories in the reservoir at that time, each with weight max(1, t/S) when `compensate` (the inverse
// of its inclusion probability min(1, S/t), which makes the expected gradient the full one).
// `draws[i]` is the draw for memory S + i; T - S draws (none when T <= S).
GradientPlan reservoir_plan(int64_t segments, int64_t window, const std::vector<int64_t>& draws,
                            bool compensate = true);

// The reservoir's random draws from a small generator whose whole state is one 64-bit word, so a
// checkpoint can save it (splitmix64; uniform integers by rejection, no modulo bias).
class ReservoirRng {
 public:
  explicit ReservoirRng(uint64_t seed = 0) : gen_(seed) {}
  std::vector<int64_t> draws(int64_t segments, int64_t window);  // T - S draws for reservoir_plan
  uint64_t state() const { return gen_.state(); }
  void set_state(uint64_t state) { gen_.set_state(state); }

 private:
  data::SplitMix64 gen_;  // uniform draws by rejection, no modulo bias
};

}  // namespace uio::optim
