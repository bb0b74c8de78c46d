// optim/schedule.cpp — warmup, cosine and constant learning rates (conventions in schedule.h).
#include "optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace uio::optim {

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "cosine") return ScheduleKind::cosine;
  if (name == "constant") return ScheduleKind::constant;
  throw std::invalid_argument("schedule '" + name + "' is not one of cosine, constant");
}

const char* schedule_kind_name(ScheduleKind kind) { return kind == ScheduleKind::constant ? "constant" : "cosine"; }

void check_schedule(const ScheduleOptions& o) {
  auto fail = [](const std::string& message) { throw std::invalid_argument("schedule: " + message); };
  if (o.total_steps < 1) fail("total_steps is " + std::to_string(o.total_steps) + ", expected >= 1");
  if (o.warmup_steps < 0) fail("warmup_steps is " + std::to_string(o.warmup_steps) + ", expected >= 0");
  if (o.warmup_steps >= o.total_steps)
    fail("warmup_steps (" + std::to_string(o.warmup_steps) + ") must be less than total_steps (" +
         std::to_string(o.total_steps) + ")");
  if (!(o.min_lr_ratio >= 0.0 && o.min_lr_ratio <= 1.0))
    fail("min_lr_ratio is " + std::to_string(o.min_lr_ratio) + ", expected a value in [0, 1]");
}

double learning_rate(const ScheduleOptions& o, double peak_lr, int64_t step) {
  check_schedule(o);
  if (!std::isfinite(peak_lr) || peak_lr < 0)
    throw std::invalid_argument("schedule: peak lr " + std::to_string(peak_lr) + ", expected finite and >= 0");
  if (step < 0) throw std::invalid_argument("schedule: step " + std::to_string(step) + ", expected >= 0");
  const int64_t W = o.warmup_steps, T = o.total_steps;
  if (step < W) return peak_lr * static_cast<double>(step + 1) / static_cast<double>(W + 1);
  if (o.kind == ScheduleKind::constant) return peak_lr;
  const double p = std::min(1.0, static_cast<double>(step - W) / static_cast<double>(std::max<int64_t>(1, T - 1 - W)));
  const double min_lr = peak_lr * o.min_lr_ratio;
  return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * p));
}

}  // namespace uio::optim
