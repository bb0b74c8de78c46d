// trainer/step_profile.cpp — one step under PyTorch's Kineto profiler, summarised (tools/step_profile.h).
#include "trainer/step_profile.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iomanip>
#include <set>
#include <sstream>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/torch.h>

#include "model/device_stats.h"

namespace uio::trainer {
namespace {

// libkineto's activity types (kineto/ActivityType.h) of the device activities counted here.
constexpr uint8_t kGpuMemcpy = 3, kGpuMemset = 4, kConcurrentKernel = 5;

bool contains(const std::string& text, const char* word) { return text.find(word) != std::string::npos; }

}  // namespace

std::string kernel_kind(const std::string& name) {
  std::string n(name);
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (contains(n, "memcpy") || contains(n, "memset")) return "copy";
  for (const char* w : {"sdpa", "flash", "fmha", "attention", "attn"})
    if (contains(n, w)) return "attention";
  for (const char* w : {"gemm", "nvjet", "xmma", "cutlass", "cublas", "matmul", "s16816", "wgmma", "gemv"})
    if (contains(n, w)) return "gemm";
  return "other";
}

StepProfile profile_step(const std::function<void()>& step, const torch::Device& device,
                         const std::string& trace_path) {
  const bool cuda = device.is_cuda();
  namespace prof = torch::autograd::profiler;
  using torch::profiler::impl::ActivityType;
  const prof::ProfilerConfig config(prof::ProfilerState::KINETO);
  std::set<ActivityType> activities{ActivityType::CPU};
  if (cuda) activities.insert(ActivityType::CUDA);
  prof::prepareProfiler(config, activities);
  model::synchronize(device);
  prof::enableProfiler(config, activities);
  const auto t0 = std::chrono::steady_clock::now();
  step();
  model::synchronize(device);
  const auto t1 = std::chrono::steady_clock::now();
  auto result = prof::disableProfiler();
  if (!trace_path.empty()) result->save(trace_path);

  StepProfile p;
  p.wall_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
  struct Range {
    uint64_t start, end;
    std::string name;
  };
  std::vector<Range> phases;
  std::unordered_map<uint64_t, uint64_t> launch_ns;  // a host op's correlation id -> its start
  std::vector<Range> host_ops;  // every other host event, to count the outermost ones per phase
  std::vector<uint64_t> host_op_threads;
  std::vector<const torch::autograd::profiler::KinetoEvent*> activities_on_device;
  for (const auto& e : result->events()) {
    const auto type = e.activityType();
    if (e.deviceType() != c10::DeviceType::CPU &&
        (type == kGpuMemcpy || type == kGpuMemset || type == kConcurrentKernel)) {
      activities_on_device.push_back(&e);
      continue;
    }
    if (e.deviceType() != c10::DeviceType::CPU) continue;
    const auto name = e.name();
    if (name.rfind("uio::", 0) == 0) {
      phases.push_back({e.startNs(), e.endNs(), name.substr(5)});
      p.phase_host_ms[name.substr(5)] += static_cast<double>(e.durationNs()) / 1e6;
    } else {
      if (e.correlationId() != 0) launch_ns.emplace(e.correlationId(), e.startNs());
      host_ops.push_back({e.startNs(), e.endNs(), ""});
      host_op_threads.push_back(e.startThreadId());
    }
  }
  // The innermost phase holding time t.
  auto phase_at = [&](uint64_t t) -> std::string {
    const Range* best = nullptr;
    for (const auto& r : phases)
      if (r.start <= t && t <= r.end && (!best || r.start >= best->start)) best = &r;
    return best ? best->name : "outside phases";
  };
  {  // outermost host ops: not inside the previous outermost op of the same thread
    std::vector<size_t> order(host_ops.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return std::tie(host_op_threads[a], host_ops[a].start) < std::tie(host_op_threads[b], host_ops[b].start);
    });
    uint64_t thread = 0, open_until = 0;
    bool first = true;
    for (size_t i : order) {
      if (first || host_op_threads[i] != thread) thread = host_op_threads[i], open_until = 0, first = false;
      if (host_ops[i].start < open_until) continue;
      open_until = host_ops[i].end;
      ++p.phase_host_ops[phase_at(host_ops[i].start)];
    }
  }
  std::vector<std::pair<uint64_t, uint64_t>> intervals;
  for (const auto* e : activities_on_device) {
    const double ms = static_cast<double>(e->durationNs()) / 1e6;
    ++p.kernels;
    p.kind_ms[kernel_kind(e->name())] += ms;
    auto& by_name = p.kernel_ms[e->name()];
    by_name.first += ms, ++by_name.second;
    const auto launch = launch_ns.find(e->linkedCorrelationId());
    const auto phase = launch == launch_ns.end() ? "unattributed" : phase_at(launch->second);
    p.phase_device_ms[phase] += ms;
    ++p.phase_kernels[phase];
    intervals.emplace_back(e->startNs(), e->endNs());
  }
  std::sort(intervals.begin(), intervals.end());
  uint64_t busy = 0, open = 0, close = 0;
  for (const auto& [s, t] : intervals) {
    if (s > close)
      busy += close - open, open = s, close = t;
    else
      close = std::max(close, t);
  }
  busy += close - open;
  p.device_busy_ms = static_cast<double>(busy) / 1e6;
  return p;
}

std::string format_profile(const StepProfile& p) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(1);
  auto pct = [](double part, double whole) { return whole > 0 ? 100.0 * part / whole : 0.0; };
  o << "  profile of one step: wall " << p.wall_ms << " ms";
  if (p.kernels > 0)
    o << ", device busy " << p.device_busy_ms << " ms (" << pct(p.device_busy_ms, p.wall_ms) << "%), idle "
      << p.wall_ms - p.device_busy_ms << " ms (host gaps), " << p.kernels << " device activities";
  o << "\n";
  double device_total = 0;
  for (const auto& [kind, ms] : p.kind_ms) device_total += ms;
  if (p.kernels > 0) {
    o << "    by kind   ";
    for (const auto& [kind, ms] : p.kind_ms) o << "  " << kind << " " << ms << " ms (" << pct(ms, device_total) << "%)";
    o << "\n";
    std::vector<std::pair<double, std::string>> top;  // the kernels that take the most device time
    for (const auto& [name, t] : p.kernel_ms) top.emplace_back(t.first, name);
    std::sort(top.rbegin(), top.rend());
    for (size_t i = 0; i < std::min<size_t>(top.size(), 12); ++i) {
      const auto& [ms, name] = top[i];
      o << "    " << std::setw(8) << ms << " ms " << std::setw(5) << pct(ms, device_total) << "% " << std::setw(6)
        << p.kernel_ms.at(name).second << "x  " << name.substr(0, 110) << "\n";
    }
  }
  std::set<std::string> names;
  for (const auto& [name, ms] : p.phase_host_ms) names.insert(name);
  for (const auto& [name, ms] : p.phase_device_ms) names.insert(name);
  for (const auto& [name, n] : p.phase_host_ops) names.insert(name);
  o << "    " << std::left << std::setw(20) << "phase" << std::right << std::setw(12) << "host ms" << std::setw(10)
    << "host ops";
  if (p.kernels > 0) o << std::setw(14) << "device ms" << std::setw(10) << "device%" << std::setw(10) << "kernels";
  o << "\n";
  auto at = [](const auto& map, const std::string& key) {
    const auto it = map.find(key);
    return it == map.end() ? typename std::decay_t<decltype(map)>::mapped_type{} : it->second;
  };
  for (const auto& name : names) {
    o << "    " << std::left << std::setw(20) << name << std::right << std::setw(12) << at(p.phase_host_ms, name)
      << std::setw(10) << at(p.phase_host_ops, name);
    if (p.kernels > 0) {
      const auto d = at(p.phase_device_ms, name);
      o << std::setw(14) << d << std::setw(9) << pct(d, device_total) << "%" << std::setw(10)
        << at(p.phase_kernels, name);
    }
    o << "\n";
  }
  return o.str();
}

}  // namespace uio::trainer
