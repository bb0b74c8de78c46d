// tests/distributed_test.cpp — data-parallel training over Gloo on the CPU (trainer/distributed.h), with
// `uio train` run as real processes the way torchrun starts them (RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT): 2 ranks with one document each equal 1 process with gradient accumulation
// over the same 2 documents; a 2-rank run stopped and resumed equals an uninterrupted one bit for bit
// (per-rank dropout and reservoir streams restored); a resume at another world size warns and goes on;
// a rank that dies or hangs makes the other exit non-zero within the timeout; the environment of
// torchrun and Slurm is read, and inconsistent values are named.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/format/safetensors.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"
#include "trainer/distributed.h"

using namespace uio;
namespace fs = std::filesystem;

namespace {

bool gloo_available() { return trainer::distributed_available(torch::kCPU); }

fs::path make_store(const fs::path& dir) {
  return uio::test::write_random_store(dir / "store", 8, 300, uio::test::test_seed());
}

std::vector<std::string> train_args(const fs::path& store, const fs::path& out, const std::string& extra_estimator) {
  return {"train",
          "--model",
          uio::test::testdata("hf_models/qwen2_bias").string(),
          "--data",
          store.string(),
          "--dtype",
          "float64",
          "--seq_len",
          "64",
          "--segment_len",
          "16",
          "--num_memory_tokens",
          "4",
          "--encoder_lora_rank",
          "4",
          "--transfer_lora_rank",
          "4",
          "--estimator",
          extra_estimator,
          "--chunk",
          "2",
          "--lr",
          "3e-3",
          "--warmup_steps",
          "1",
          "--val_documents",
          "0",
          "--log_every",
          "1",
          "--check_every",
          "1",
          "--out_dir",
          out.string()};
}

using uio::test::Child;
using uio::test::wait_exit;

int free_port() {
  static std::mt19937 rng(static_cast<unsigned>(::getpid()));
  return 20000 + static_cast<int>(rng() % 30000);
}

// Starts `world` ranks of `uio ARGS...` with torchrun's variables; stdout/stderr to files in `dir`.
std::vector<Child> launch(const fs::path& dir, int world, const std::vector<std::string>& args, int port) {
  std::vector<Child> ranks;
  for (int r = 0; r < world; ++r)
    ranks.push_back(uio::test::spawn_uio(args,
                                         {{"RANK", std::to_string(r)},
                                          {"LOCAL_RANK", std::to_string(r)},
                                          {"WORLD_SIZE", std::to_string(world)},
                                          {"MASTER_ADDR", "127.0.0.1"},
                                          {"MASTER_PORT", std::to_string(port)}},
                                         dir / ("rank" + std::to_string(r) + ".log"),
                                         dir / ("rank" + std::to_string(r) + ".err")));
  return ranks;
}

void run_all(const fs::path& dir, int world, const std::vector<std::string>& args) {
  auto ranks = launch(dir, world, args, free_port());
  for (auto& r : ranks) ASSERT_EQ(wait_exit(r), 0) << uio::test::read_file(r.err) << uio::test::read_file(r.log);
}

std::map<std::string, torch::Tensor> weights_of(const fs::path& dir) {
  uio::format::SafetensorsFile f((dir / "uio_memory.safetensors").string());
  std::map<std::string, torch::Tensor> out;
  for (const auto& info : f.tensors()) out[info.name] = f.tensor(info.name).clone();
  return out;
}

std::vector<double> losses_of(const fs::path& metrics) {
  std::vector<double> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

}  // namespace

TEST(Distributed, TwoGlooRanksEqualOneProcessAccumulatingTheSameTwoDocuments) {
  if (!gloo_available()) GTEST_SKIP() << "built without Gloo headers (apt-get install libgloo-dev)";
  const auto dir = uio::test::scratch_dir();
  const auto store = make_store(dir);
  auto one = train_args(store, dir / "one", "tbptt");
  one.insert(one.end(), {"--steps", "4", "--accumulation", "2"});
  run_all(dir, 1, one);
  auto two = train_args(store, dir / "two", "tbptt");
  two.insert(two.end(), {"--steps", "4", "--accumulation", "1"});
  run_all(dir, 2, two);

  // The same documents (the sampler hands sequence k of each epoch to rank k mod 2, and the single
  // process takes them in order), the same mean loss, the same update: equal up to the order in which
  // float32 gradient parts are summed (tolerance 1e-6 relative; measured: see the note printed).
  auto a = weights_of(dir / "one/compressor"), b = weights_of(dir / "two/compressor");
  ASSERT_EQ(a.size(), b.size());
  double worst = 0;
  for (auto& [name, t] : a) {
    const double err =
        ((t.to(torch::kDouble) - b.at(name).to(torch::kDouble)).norm() / (t.to(torch::kDouble).norm() + 1e-30))
            .item<double>();
    worst = std::max(worst, err);
    EXPECT_LT(err, 1e-6) << name;
  }
  std::cout << "largest relative weight difference, 2 ranks vs 1 process: " << worst << "\n";
  auto la = losses_of(dir / "one/metrics.jsonl"), lb = losses_of(dir / "two/metrics.jsonl");
  ASSERT_EQ(la.size(), 4u);
  ASSERT_EQ(lb.size(), 4u);
  for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], lb[i], 1e-9 * std::abs(la[i])) << "step " << i + 1;
  // Only rank 0 speaks.
  EXPECT_NE(uio::test::read_file(dir / "rank0.log").find("x 2 ranks (torchrun)"), std::string::npos);
  EXPECT_EQ(uio::test::read_file(dir / "rank1.log"), "");
}

TEST(Distributed, ResumingTwoRanksIsExactAndAnotherWorldSizeWarns) {
  if (!gloo_available()) GTEST_SKIP() << "built without Gloo headers (apt-get install libgloo-dev)";
  const auto dir = uio::test::scratch_dir();
  const auto store = make_store(dir);
  auto base = train_args(store, dir / "straight", "unbiased");
  base.insert(base.end(), {"--encoder_lora_dropout", "0.2", "--steps", "6"});
  run_all(dir, 2, base);

  // Stopped with SIGTERM to both ranks (as torchrun forwards it) somewhere in the middle: the ranks
  // agree on the step to stop after, write one checkpoint and exit cleanly; then the job resumes.
  auto split = train_args(store, dir / "split", "unbiased");
  split.insert(split.end(), {"--encoder_lora_dropout", "0.2", "--steps", "6", "--resume", "auto"});
  {
    auto ranks = launch(dir, 2, split, free_port());
    uio::test::wait_for_text(ranks[0].log, " | loss ");
    for (auto& r : ranks) ::kill(r.pid, SIGTERM);
    for (auto& r : ranks) ASSERT_EQ(wait_exit(r), 0) << uio::test::read_file(r.err);
    const auto log = uio::test::read_file(dir / "rank0.log");
    ASSERT_NE(log.find("stopped by a signal after step"), std::string::npos) << log;
    std::cout << log.substr(log.find("stopped by a signal"), 40) << "\n";
  }
  run_all(dir, 2, split);
  EXPECT_NE(uio::test::read_file(dir / "rank0.log").find("resume: from"), std::string::npos)
      << uio::test::read_file(dir / "rank0.log");
  auto a = weights_of(dir / "straight/compressor"), b = weights_of(dir / "split/compressor");
  for (auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;

  // The same checkpoint in one process: a warning, and training goes on.
  auto single = train_args(store, dir / "split", "unbiased");
  single.insert(single.end(), {"--encoder_lora_dropout", "0.2", "--steps", "7", "--resume", "auto"});
  const auto r = uio::test::run_uio(single);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("written by 2 processes, this job has 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step 7/7"), std::string::npos) << r.out;
}

// A rank that dies (SIGKILL) or hangs (SIGSTOP): the other stops with a clear error within the timeout.
TEST(Distributed, ARankThatDiesOrHangsStopsTheOtherWithinTheTimeout) {
  if (!gloo_available()) GTEST_SKIP() << "built without Gloo headers (apt-get install libgloo-dev)";
  const auto dir = uio::test::scratch_dir();
  const auto store = make_store(dir);
  for (int sig : {SIGKILL, SIGSTOP}) {
    auto args = train_args(store, dir / ("run" + std::to_string(sig)), "unbiased");
    args.insert(args.end(), {"--steps", "100000", "--dist_timeout_s", "8"});
    auto ranks = launch(dir, 2, args, free_port());
    ASSERT_TRUE(uio::test::wait_for_text(ranks[0].log, " | loss ")) << uio::test::read_file(ranks[0].err);
    const auto t0 = std::chrono::steady_clock::now();
    ::kill(ranks[1].pid, sig);
    const int code = wait_exit(ranks[0]);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (sig == SIGSTOP) ::kill(ranks[1].pid, SIGKILL);
    wait_exit(ranks[1]);
    const auto err = uio::test::read_file(ranks[0].err);
    EXPECT_NE(code, 0) << "signal " << sig;
    EXPECT_LT(waited, 8 + 20) << "signal " << sig << ": rank 0 took " << waited << " s to stop";
    EXPECT_NE(err.find("rank 0 of 2"), std::string::npos) << err;
    EXPECT_NE(err.find("--resume auto"), std::string::npos) << err;
  }
}

TEST(Distributed, ProcessInfoComesFromTorchrunOrSlurmVariables) {
  auto clear = [] {
    for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID",
                          "SLURM_NTASKS", "SLURM_LOCALID"})
      ::unsetenv(v);
  };
  clear();
  auto none = trainer::process_info_from_env();
  EXPECT_EQ(none.world_size, 1);
  EXPECT_EQ(none.launcher, "none");

  ::setenv("RANK", "3", 1), ::setenv("WORLD_SIZE", "4", 1), ::setenv("LOCAL_RANK", "1", 1);
  ::setenv("MASTER_ADDR", "node7", 1), ::setenv("MASTER_PORT", "29600", 1);
  auto t = trainer::process_info_from_env();
  EXPECT_EQ(t.launcher, "torchrun");
  EXPECT_EQ(t.rank, 3);
  EXPECT_EQ(t.world_size, 4);
  EXPECT_EQ(t.local_rank, 1);
  EXPECT_EQ(t.master_addr, "node7");
  EXPECT_EQ(t.master_port, 29600);
  EXPECT_EQ(trainer::process_info_from_env("10.0.0.1", 1234).master_addr, "10.0.0.1");
  ::setenv("RANK", "4", 1);
  try {
    trainer::process_info_from_env();
    ADD_FAILURE() << "rank 4 of 4 must be refused";
  } catch (const trainer::DistributedError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 4 of world size 4"), std::string::npos) << e.what();
  }
  ::setenv("RANK", "two", 1);
  EXPECT_THROW(trainer::process_info_from_env(), trainer::DistributedError);
  clear();

  ::setenv("SLURM_PROCID", "5", 1), ::setenv("SLURM_NTASKS", "8", 1), ::setenv("SLURM_LOCALID", "1", 1);
  try {
    trainer::process_info_from_env();
    ADD_FAILURE() << "Slurm without a master must be refused";
  } catch (const trainer::DistributedError& e) {
    EXPECT_NE(std::string(e.what()).find("MASTER_ADDR"), std::string::npos) << e.what();
  }
  auto s = trainer::process_info_from_env("gpu-node-01");
  EXPECT_EQ(s.launcher, "slurm");
  EXPECT_EQ(s.rank, 5);
  EXPECT_EQ(s.world_size, 8);
  EXPECT_EQ(s.local_rank, 1);
  EXPECT_EQ(s.master_port, 29500);
  clear();
}
