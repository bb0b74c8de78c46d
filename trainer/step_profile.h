// trainer/step_profile.h — where one training step's time goes: the step runs under PyTorch's profiler
// (Kineto; CUPTI on CUDA), and its device kernels are summed by kind (GEMM, attention, copies, other)
// and by the phase of the step that launched them (model/phase.h ranges: encode, transfer, decode,
// decoder / encoder backward, optimizer), beside the host time spent in each phase and the share of
// the step's wall time the device sat idle (host gaps, launch overhead, synchronisation).
#pragma once

#include <functional>
#include <map>
#include <string>

#include <torch/types.h>

namespace uio::trainer {

struct StepProfile {
  double wall_ms = 0;  // the step, synchronised at both ends
  double device_busy_ms = 0;  // the union of the intervals with a kernel or copy running
  int64_t kernels = 0;  // device activities (kernels, copies, sets)
  std::map<std::string, double> kind_ms;  // device ms per kind of kernel
  std::map<std::string, std::pair<double, int64_t>> kernel_ms;  // device ms and launches per kernel name
  std::map<std::string, double> phase_device_ms;  // device ms of the kernels each phase launched
  std::map<std::string, double> phase_host_ms;  // wall ms inside each phase (host side)
  // Operators the host dispatched in each phase, outermost only (an op called by another op is not
  // counted again; an autograd node of the backward counts once), and device activities it launched:
  // where the launches come from when the device waits on the host.
  std::map<std::string, int64_t> phase_host_ops, phase_kernels;
};

// Runs `step` once under the profiler (device activities on CUDA) and summarises it; with a
// non-empty `trace_path` also writes the Chrome trace there (chrome://tracing, Perfetto).
StepProfile profile_step(const std::function<void()>& step, const torch::Device& device,
                         const std::string& trace_path = "");

// The kind of a device kernel from its name: "gemm", "attention", "copy" or "other".
std::string kernel_kind(const std::string& name);

// A readable table of the profile.
std::string format_profile(const StepProfile& profile);

}  // namespace uio::trainer
