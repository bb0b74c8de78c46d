// trainer/step_bench.cpp — warm-up, timed steps, peak memory, optional profile.
#include "trainer/step_bench.h"

#include <algorithm>
#include <vector>

#include "data/document_source.h"
#include "model/device_stats.h"
#include "trainer/step_profile.h"
#include "trainer/train.h"

namespace uio::trainer {

StepTiming time_training_steps(model::CausalLM& base, const torch::Tensor& memory_init, const StepBenchSettings& s) {
  const auto device = base->output_weight().device();
  StepTiming out;
  try {
    torch::manual_seed(s.seed);
    model::MemoryCompressor compressor(base->config(), s.memory, memory_init);
    TrainConfig c;
    c.estimator = s.estimator;
    c.steps = s.steps + 1 + (s.profile ? 1 : 0);
    data::RandomDocuments documents(base->config().vocab_size, s.tokens, s.seed);
    Trainer run(c, base, compressor, {}, documents, {});
    run.step();  // warm-up: kernel choice, allocator, lazy tables
    model::reset_peak_memory(device);
    std::vector<double> times;
    for (int64_t i = 0; i < s.steps; ++i) times.push_back(run.step().seconds);
    std::sort(times.begin(), times.end());
    out.seconds = times[times.size() / 2];
    out.peak_gb = static_cast<double>(model::peak_memory_bytes(device)) / 1e9;
    if (s.profile) out.profile = format_profile(profile_step([&] { run.step(); }, device, s.profile_trace));
  } catch (const c10::OutOfMemoryError&) {
    out.failure = "out of memory";
  }
  model::release_cached_memory(device);
  return out;
}

}  // namespace uio::trainer
