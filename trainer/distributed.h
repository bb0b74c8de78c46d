// trainer/distributed.h — data-parallel training across processes: who this process is (torchrun's or
// Slurm's environment), and the few collectives the trainer needs, over libtorch's c10d process groups
// (NCCL on CUDA, Gloo on the CPU). One process per GPU, each bound to its local device. A world of one
// needs no process group at all. Failures (a rank that dies or hangs) surface as a DistributedError
// within the configured timeout instead of a hang.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace uio::trainer {

class DistributedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// This process's place in the job, from the environment:
//   torchrun (and torch.distributed.launch): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT;
//   Slurm (srun): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, with the master from `master_addr`
//   (config) or MASTER_ADDR, and the port from `master_port` or MASTER_PORT (default 29500).
// Neither set: a world of one.
struct ProcessInfo {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher = "none";  // none | torchrun | slurm
};
// `master_addr` / `master_port` (empty / 0: from the environment) override; throws DistributedError
// naming the variable when the environment is inconsistent (a rank outside the world, a bad number).
ProcessInfo process_info_from_env(const std::string& master_addr = "", int64_t master_port = 0);

// Whether this build can make process groups for `device`'s type (Gloo needs its headers at build time).
bool distributed_available(const torch::Device& device);

class Communicator {
 public:
  // Joins the job: a TCPStore rendezvous at master_addr:master_port (rank 0 serves it), then a NCCL
  // (CUDA device) or Gloo (CPU) process group. Every collective and the rendezvous give up after
  // `timeout`. A process started without a launcher makes no store and no group; one started by a
  // launcher makes them even in a world of one (so `torchrun --nproc-per-node 1` runs the same code).
  Communicator(const ProcessInfo& info, const torch::Device& device, std::chrono::milliseconds timeout);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return info_.rank; }
  int world_size() const { return info_.world_size; }
  bool is_root() const { return info_.rank == 0; }
  bool active() const;  // a process group exists: collectives really run
  const ProcessInfo& info() const { return info_; }

  // Sum over ranks, in place, of tensors on this process's device: packed into flat buckets of at most
  // `bucket_bytes` per dtype (fewer, larger collectives), each reduced, then unpacked.
  void all_reduce_sum(const std::vector<torch::Tensor>& tensors, int64_t bucket_bytes = 64 << 20);
  // Sums of a few numbers over ranks (loss sums, token counts); float64.
  std::vector<double> all_reduce_sum(const std::vector<double>& values);
  // Rank 0's tensors to every rank, in place.
  void broadcast(const std::vector<torch::Tensor>& tensors);
  // Every rank's string, in rank order, on every rank (per-rank checkpoint states, checksums).
  std::vector<std::string> all_gather(const std::string& value);
  void barrier();

 private:
  struct Impl;
  ProcessInfo info_;
  torch::Device device_;
  std::unique_ptr<Impl> impl_;
};

// Statistics summed over every rank in one all-reduce, without index arithmetic at the call site: register
// each value once (a number, a count, a flag that is true anywhere, a per-segment vector), then sum.
// Vectors are padded to the longest on any rank first, so ranks that saw fewer segments still agree.
class SumReduction {
 public:
  SumReduction& add(double& value);
  SumReduction& add(int64_t& value);
  SumReduction& add_any(bool& flag);  // true when true on any rank
  SumReduction& add(std::vector<double>& values);
  SumReduction& add(std::vector<int64_t>& values);
  // Every registered value becomes its sum over ranks (two all-reduces when vectors vary in length).
  void run(Communicator& comm);

 private:
  std::vector<double*> doubles_;
  std::vector<int64_t*> counts_;
  std::vector<bool*> flags_;
  std::vector<std::vector<double>*> double_vectors_;
  std::vector<std::vector<int64_t>*> count_vectors_;
};

}  // namespace uio::trainer
