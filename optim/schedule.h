// optim/schedule.h — the learning rate of each training step: linear warmup, then cosine decay or a
// constant. A pure function of the step, so resuming a run needs only the step count.
#pragma once

#include <cstdint>
#include <string>

namespace uio::optim {

// With W = warmup_steps, T = total_steps, peak = the optimiser's lr and s the 0-based step:
//   s <  W   warmup:   peak * (s + 1) / (W + 1)   (never 0; the ramp continues into step W's peak)
//   s >= W   cosine:   min + (peak - min) * (1 + cos(pi * p)) / 2, min = peak * min_lr_ratio,
//                      p = min(1, (s - W) / max(1, T - 1 - W)): peak at step W, exactly min at step
//                      T - 1 and after
//            constant: peak
enum class ScheduleKind { cosine, constant };
ScheduleKind parse_schedule_kind(const std::string& name);  // throws std::invalid_argument naming the valid ones
const char* schedule_kind_name(ScheduleKind kind);

struct ScheduleOptions {
  ScheduleKind kind = ScheduleKind::cosine;  // after warmup
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.1;  // cosine decays from lr to lr * min_lr_ratio at step total_steps - 1
};

// Throws std::invalid_argument naming the bad field: total_steps < 1, warmup_steps < 0,
// warmup_steps >= total_steps, min_lr_ratio outside [0, 1].
void check_schedule(const ScheduleOptions& options);
// Checks the options, peak_lr (finite, >= 0) and step (>= 0); throws std::invalid_argument otherwise.
double learning_rate(const ScheduleOptions& options, double peak_lr, int64_t step);

}  // namespace uio::optim
