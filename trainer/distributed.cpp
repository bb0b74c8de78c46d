// trainer/distributed.cpp — process info from the environment, and collectives over c10d.
#include "trainer/distributed.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <map>
#include <sstream>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef UIO_WITH_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef UIO_WITH_NCCL
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace uio::trainer {
namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

int env_int(const char* name, int fallback) {
  const char* v = env(name);
  if (!v) return fallback;
  try {
    size_t used = 0;
    const int x = std::stoi(v, &used);
    if (used != std::string(v).size()) throw std::invalid_argument(v);
    return x;
  } catch (const std::exception&) {
    throw DistributedError(std::string("environment variable ") + name + "='" + v + "' is not an integer");
  }
}

}  // namespace

ProcessInfo process_info_from_env(const std::string& master_addr, int64_t master_port) {
  ProcessInfo p;
  if (env("RANK") || env("WORLD_SIZE")) {
    p.launcher = "torchrun";
    p.rank = env_int("RANK", 0);
    p.world_size = env_int("WORLD_SIZE", 1);
    p.local_rank = env_int("LOCAL_RANK", p.rank);
  } else if (env("SLURM_PROCID") && env("SLURM_NTASKS")) {
    p.launcher = "slurm";
    p.rank = env_int("SLURM_PROCID", 0);
    p.world_size = env_int("SLURM_NTASKS", 1);
    p.local_rank = env_int("SLURM_LOCALID", 0);
  }
  if (p.world_size < 1 || p.rank < 0 || p.rank >= p.world_size || p.local_rank < 0)
    throw DistributedError("distributed: rank " + std::to_string(p.rank) + " of world size " +
                           std::to_string(p.world_size) + " (local rank " + std::to_string(p.local_rank) +
                           ") from the " + p.launcher + " environment is inconsistent");
  if (!master_addr.empty())
    p.master_addr = master_addr;
  else if (const char* a = env("MASTER_ADDR"))
    p.master_addr = a;
  else if (p.launcher == "slurm" && p.world_size > 1)
    throw DistributedError(
        "distributed: under Slurm set MASTER_ADDR (e.g. the first host of $SLURM_JOB_NODELIST, "
        "see docs/distributed.md) or the master_addr key");
  p.master_port = master_port > 0 ? static_cast<int>(master_port) : env_int("MASTER_PORT", 29500);
  if (p.master_port <= 0 || p.master_port > 65535)
    throw DistributedError("distributed: master port " + std::to_string(p.master_port) + " is not a TCP port");
  return p;
}

bool distributed_available(const torch::Device& device) {
#ifdef UIO_WITH_NCCL
  if (device.is_cuda()) return true;
#endif
#ifdef UIO_WITH_GLOO
  if (device.is_cpu()) return true;
#endif
  return false;
}

struct Communicator::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

namespace {

// Runs one collective and waits for it; any failure becomes a DistributedError saying what to do.
template <typename Launch>
void run_collective(const ProcessInfo& info, const char* what, std::chrono::milliseconds timeout, Launch launch) {
  try {
    auto work = launch();
    if (!work->wait(timeout))
      throw std::runtime_error("no completion within " + std::to_string(timeout.count() / 1000) + " s");
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    std::string why = e.what();  // c10 errors carry a backtrace after the first line: keep the line
    if (auto cut = why.find('\n'); cut != std::string::npos) why.resize(cut);
    if (why.size() > 400) why = why.substr(0, 400) + "...";
    throw DistributedError("rank " + std::to_string(info.rank) + " of " + std::to_string(info.world_size) + ": " +
                           what + " failed (" + why +
                           "). Another rank died, hangs or was stopped, or the network "
                           "broke; this rank stops too. The last complete checkpoint stays usable: restart the job "
                           "with --resume auto (raise dist_timeout_s if ranks are merely slow)");
  }
}

}  // namespace

Communicator::Communicator(const ProcessInfo& info, const torch::Device& device, std::chrono::milliseconds timeout)
    : info_(info), device_(device), impl_(std::make_unique<Impl>()) {
  impl_->timeout = timeout;
  if (info.world_size == 1 && (info.launcher == "none" || !distributed_available(device))) return;
  if (!distributed_available(device))
    throw DistributedError(std::string("distributed: this build of uio has no ") +
                           (device.is_cuda() ? "NCCL" : "Gloo") + " process group for " + device.str() +
                           (device.is_cuda() ? " (build against a CUDA libtorch)"
                                             : " (install libgloo-dev and rebuild: CMake prints whether Gloo is on)"));
  try {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(info.master_port);
    opts.isServer = info.rank == 0;
    opts.numWorkers = static_cast<size_t>(info.world_size);
    opts.waitWorkers = true;
    opts.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(info.master_addr, opts);
    impl_->store = c10::make_intrusive<c10d::PrefixStore>("uio", tcp);
  } catch (const std::exception& e) {
    throw DistributedError("rank " + std::to_string(info.rank) + ": rendezvous at " + info.master_addr + ":" +
                           std::to_string(info.master_port) + " failed (" + e.what() +
                           "); check MASTER_ADDR/MASTER_PORT "
                           "and that every rank of WORLD_SIZE = " +
                           std::to_string(info.world_size) + " started");
  }
  try {
#ifdef UIO_WITH_NCCL
    if (device.is_cuda()) {
      // Blocking waits make a timed-out collective throw here (a clear error) rather than abort in the
      // watchdog thread.
      ::setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      impl_->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, info.rank, info.world_size, opts);
    }
#endif
#ifdef UIO_WITH_GLOO
    if (device.is_cpu()) {
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      // The network interface: GLOO_SOCKET_IFNAME when set; loopback for a job on one machine rendezvousing
      // on loopback; else the address this host's name resolves to.
      if (const char* iface = env("GLOO_SOCKET_IFNAME"))
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
      else if (info.master_addr == "127.0.0.1" || info.master_addr == "localhost")
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      impl_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, info.rank, info.world_size, opts);
    }
#endif
  } catch (const std::exception& e) {
    throw DistributedError("rank " + std::to_string(info.rank) + ": creating the process group failed (" + e.what() +
                           ")");
  }
  barrier();
}

Communicator::~Communicator() {
  if (!impl_->backend) return;
  try {
    impl_->backend->shutdown();  // NCCL wants its communicators torn down before exit
  } catch (const std::exception&) {  // nothing to do about it at exit
  }
}

bool Communicator::active() const { return static_cast<bool>(impl_->backend); }

void Communicator::all_reduce_sum(const std::vector<torch::Tensor>& tensors, int64_t bucket_bytes) {
  if (!active() || tensors.empty()) return;
  // Buckets of one dtype each, filled in order up to bucket_bytes.
  std::vector<std::vector<size_t>> buckets;
  std::map<torch::ScalarType, size_t> open;  // dtype -> bucket being filled
  std::vector<int64_t> bytes;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    const int64_t b = t.numel() * static_cast<int64_t>(t.element_size());
    auto it = open.find(t.scalar_type());
    if (it == open.end() || bytes[it->second] + b > bucket_bytes) {
      buckets.emplace_back();
      bytes.push_back(0);
      open[t.scalar_type()] = buckets.size() - 1;
      it = open.find(t.scalar_type());
    }
    buckets[it->second].push_back(i);
    bytes[it->second] += b;
  }
  for (const auto& bucket : buckets) {
    std::vector<torch::Tensor> flat;
    for (size_t i : bucket) flat.push_back(tensors[i].reshape(-1));
    std::vector<torch::Tensor> buffer{torch::cat(flat)};
    run_collective(info_, "all-reduce of gradients", impl_->timeout, [&] { return impl_->backend->allreduce(buffer); });
    int64_t offset = 0;
    for (size_t i : bucket) {
      auto& t = const_cast<torch::Tensor&>(tensors[i]);
      t.copy_(buffer[0].narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
}

std::vector<double> Communicator::all_reduce_sum(const std::vector<double>& values) {
  if (!active() || values.empty()) return values;
  auto t = torch::tensor(values, torch::kDouble).to(device_);
  std::vector<torch::Tensor> buffer{t};
  run_collective(info_, "all-reduce of step statistics", impl_->timeout,
                 [&] { return impl_->backend->allreduce(buffer); });
  auto host = buffer[0].to(torch::kCPU);
  return std::vector<double>(host.data_ptr<double>(), host.data_ptr<double>() + host.numel());
}

void Communicator::broadcast(const std::vector<torch::Tensor>& tensors) {
  if (!active()) return;
  for (const auto& t : tensors) {
    std::vector<torch::Tensor> buffer{t.contiguous()};
    run_collective(info_, "broadcast of the initial weights", impl_->timeout,
                   [&] { return impl_->backend->broadcast(buffer); });
    if (buffer[0].data_ptr() != t.data_ptr()) const_cast<torch::Tensor&>(t).copy_(buffer[0]);
  }
}

std::vector<std::string> Communicator::all_gather(const std::string& value) {
  if (!active()) return {value};
  std::vector<double> lengths(static_cast<size_t>(info_.world_size), 0.0);
  lengths[static_cast<size_t>(info_.rank)] = static_cast<double>(value.size());
  lengths = all_reduce_sum(lengths);
  const auto longest = static_cast<int64_t>(*std::max_element(lengths.begin(), lengths.end()));
  auto bytes = torch::zeros({longest + 8}, torch::kByte);
  const uint64_t n = value.size();
  std::memcpy(bytes.data_ptr<uint8_t>(), &n, 8);
  std::memcpy(bytes.data_ptr<uint8_t>() + 8, value.data(), value.size());
  std::vector<torch::Tensor> input{bytes.to(device_)};
  std::vector<std::vector<torch::Tensor>> output(1);
  for (int r = 0; r < info_.world_size; ++r) output[0].push_back(torch::empty_like(input[0]));
  run_collective(info_, "all-gather of per-rank state", impl_->timeout,
                 [&] { return impl_->backend->allgather(output, input); });
  std::vector<std::string> out;
  for (auto& t : output[0]) {
    auto host = t.to(torch::kCPU);
    uint64_t len = 0;
    std::memcpy(&len, host.data_ptr<uint8_t>(), 8);
    out.emplace_back(reinterpret_cast<const char*>(host.data_ptr<uint8_t>()) + 8, len);
  }
  return out;
}

void Communicator::barrier() {
  if (!active()) return;
  all_reduce_sum(std::vector<double>{1.0});
}

SumReduction& SumReduction::add(double& value) { return doubles_.push_back(&value), *this; }
SumReduction& SumReduction::add(int64_t& value) { return counts_.push_back(&value), *this; }
SumReduction& SumReduction::add_any(bool& flag) { return flags_.push_back(&flag), *this; }
SumReduction& SumReduction::add(std::vector<double>& values) { return double_vectors_.push_back(&values), *this; }
SumReduction& SumReduction::add(std::vector<int64_t>& values) { return count_vectors_.push_back(&values), *this; }

void SumReduction::run(Communicator& comm) {
  // Every rank pads its vectors to the longest on any rank (gathered first), so the packed layouts agree.
  size_t longest = 0;
  for (auto* v : double_vectors_) longest = std::max(longest, v->size());
  for (auto* v : count_vectors_) longest = std::max(longest, v->size());
  if (!double_vectors_.empty() || !count_vectors_.empty()) {
    for (const auto& text : comm.all_gather(std::to_string(longest)))
      longest = std::max<size_t>(longest, std::stoull(text));
    for (auto* v : double_vectors_) v->resize(longest, 0.0);
    for (auto* v : count_vectors_) v->resize(longest, 0);
  }
  std::vector<double> packed;
  for (auto* x : doubles_) packed.push_back(*x);
  for (auto* x : counts_) packed.push_back(static_cast<double>(*x));
  for (auto* x : flags_) packed.push_back(*x ? 1.0 : 0.0);
  for (auto* v : double_vectors_) packed.insert(packed.end(), v->begin(), v->end());
  for (auto* v : count_vectors_)
    for (auto n : *v) packed.push_back(static_cast<double>(n));
  const auto sums = comm.all_reduce_sum(packed);
  auto next = sums.begin();
  for (auto* x : doubles_) *x = *next++;
  for (auto* x : counts_) *x = static_cast<int64_t>(std::llround(*next++));
  for (auto* x : flags_) *x = *next++ > 0;
  for (auto* v : double_vectors_)
    for (auto& x : *v) x = *next++;
  for (auto* v : count_vectors_)
    for (auto& n : *v) n = static_cast<int64_t>(std::llround(*next++));
}

}  // namespace uio::trainer
