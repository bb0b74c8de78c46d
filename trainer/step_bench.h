// trainer/step_bench.h — timing whole training steps (a document through the estimator, backward, AdamW)
// of a fresh compressor on random token documents: the measurement behind `uio bench train`. The work is
// that of real training; the tokens are random because speed does not depend on them.
#pragma once

#include <cstdint>
#include <string>

#include "model/llama.h"
#include "model/memory.h"
#include "optim/estimator.h"

namespace uio::trainer {

struct StepBenchSettings {
  model::MemoryOptions memory;
  optim::EstimatorOptions estimator;
  int64_t tokens = 0;  // document length, a multiple of segment_len
  int64_t steps = 3;  // timed steps after one warm-up; the median is reported
  uint64_t seed = 0;  // random documents and adapter initialisation
  bool profile = false;  // one more step under the profiler (trainer/step_profile.h)
  std::string profile_trace;  // and its Chrome trace to this file (empty: none)
};

struct StepTiming {
  double seconds = 0;  // median wall time of a step
  double peak_gb = 0;  // peak device memory over the timed steps (CPU: the process's peak resident set)
  std::string failure;  // "out of memory", or empty
  std::string profile;  // format_profile of the profiled step, when asked for
};

// `memory_init`: the <mem> embedding every fresh compressor starts from (model::eos_memory_init).
StepTiming time_training_steps(model::CausalLM& base, const torch::Tensor& memory_init, const StepBenchSettings& s);

}  // namespace uio::trainer
