// optim/gradient_plan.cpp — full, windowed and reservoir plans; the reservoir's generator.
#include "optim/gradient_plan.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace uio::optim {

GradientPlan::GradientPlan(int64_t segments) : T_(segments), w_(static_cast<size_t>(segments * segments), 0.0) {
  if (segments < 0) throw std::invalid_argument("gradient plan: negative segment count");
}

double GradientPlan::weight(int64_t loss, int64_t memory) const {
  if (loss < 0 || loss >= T_ || memory < 0 || memory >= loss) return 0.0;
  return w_[static_cast<size_t>(loss * T_ + memory)];
}

void GradientPlan::set_weight(int64_t loss, int64_t memory, double w) {
  if (loss < 0 || loss >= T_ || memory < 0 || memory >= loss)
    throw std::out_of_range("gradient plan: loss " + std::to_string(loss) + " cannot read memory " +
                            std::to_string(memory) + " (" + std::to_string(T_) + " segments)");
  w_[static_cast<size_t>(loss * T_ + memory)] = w;
}

int64_t GradientPlan::last_use(int64_t memory) const {
  for (int64_t t = T_ - 1; t > memory; --t)
    if (weight(t, memory) != 0.0) return t;
  return -1;
}

GradientPlan full_plan(int64_t segments) {
  GradientPlan plan(segments);
  for (int64_t t = 0; t < segments; ++t)
    for (int64_t s = 0; s < t; ++s) plan.set_weight(t, s, 1.0);
  return plan;
}

GradientPlan window_plan(int64_t segments, int64_t window) {
  if (window < 1) throw std::invalid_argument("gradient plan: window must be >= 1, got " + std::to_string(window));
  GradientPlan plan(segments);
  for (int64_t t = 0; t < segments; ++t)
    for (int64_t s = std::max<int64_t>(0, t - window); s < t; ++s) plan.set_weight(t, s, 1.0);
  return plan;
}

GradientPlan reservoir_plan(int64_t segments, int64_t window, const std::vector<int64_t>& draws, bool compensate) {
  if (window < 1) throw std::invalid_argument("gradient plan: window must be >= 1, got " + std::to_string(window));
  const int64_t S = window, T = segments;
  if (static_cast<int64_t>(draws.size()) != std::max<int64_t>(0, T - S))
    throw std::invalid_argument("gradient plan: " + std::to_string(T) + " segments with window " + std::to_string(S) +
                                " need " + std::to_string(std::max<int64_t>(0, T - S)) + " reservoir draws, got " +
                                std::to_string(draws.size()));
  GradientPlan plan(T);
  std::vector<int64_t> reservoir;
  for (int64_t t = 0; t < T; ++t) {
    // Loss t reads the reservoir as it stands: each of its memories was kept with probability min(1, S/t).
    const double factor = compensate ? std::max(1.0, static_cast<double>(t) / static_cast<double>(S)) : 1.0;
    for (int64_t s : reservoir) plan.set_weight(t, s, factor);
    // Then memory t is offered to the reservoir (algorithm R).
    if (t < S) {
      reservoir.push_back(t);
    } else {
      const int64_t j = draws[static_cast<size_t>(t - S)];
      if (j < 0 || j > t)
        throw std::invalid_argument("gradient plan: reservoir draw for memory " + std::to_string(t) +
                                    " must lie in [0, " + std::to_string(t) + "], got " + std::to_string(j));
      if (j < S) reservoir[static_cast<size_t>(j)] = t;
    }
  }
  return plan;
}

std::vector<int64_t> ReservoirRng::draws(int64_t segments, int64_t window) {
  std::vector<int64_t> out;
  for (int64_t t = window; t < segments; ++t)
    out.push_back(static_cast<int64_t>(gen_.below(static_cast<uint64_t>(t + 1))));
  return out;
}

}  // namespace uio::optim
