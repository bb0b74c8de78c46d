// tests/checkpoint_test.cpp — checkpoints (trainer/checkpoint.h) and exact resume: 2N steps in one go
// equal N steps, a checkpoint, fresh objects, a restore and N more, bit for bit, with the unbiased
// estimator and dropout on; failed writes leave the previous checkpoint and `latest` intact; damaged,
// truncated or foreign checkpoints are refused naming the file; `latest` falls back to the newest
// complete one; pruning keeps the last N and the marked ones. `uio train` killed with SIGKILL at random
// moments always resumes from a complete checkpoint.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iomanip>
#include <random>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/document_source.h"
#include "data/format/safetensors.h"
#include "model/memory_io.h"
#include "model/weights.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"
#include "trainer/checkpoint.h"
#include "trainer/stop_signal.h"
#include "trainer/train.h"
#include "trainer/train_job.h"

using namespace uio;
namespace fs = std::filesystem;

namespace {

struct Tiny {
  model::ModelConfig config;
  model::CausalLM base{nullptr};
  model::MemoryCompressor memory{nullptr};
};

// Built the same way every time from `seed`, as a new process would: the base and the compressor's
// initial weights depend only on the seed.
// With `decoder_rank` > 0, decoder adapters (beyond the paper) with the same dropout, and a sink.
Tiny make_tiny(uint64_t seed, double dropout, int64_t decoder_rank = 0) {
  torch::manual_seed(seed);
  Tiny t;
  auto& c = t.config = uio::test::tiny_llama_config();
  t.base = model::CausalLM(c, torch::TensorOptions().dtype(torch::kFloat));
  model::MemoryOptions o;
  o.segment_len = 8, o.num_memory_tokens = 2;
  o.encoder_lora = {4, 8.0, dropout, {"q_proj", "v_proj"}};
  o.transfer_lora = {4, 8.0, dropout, {"k_proj", "v_proj"}};
  if (decoder_rank > 0) o.decoder_lora = {decoder_rank, 6.0, dropout, {"q_proj", "k_proj", "v_proj", "o_proj"}};
  if (decoder_rank > 0) o.sink_tokens = 2;
  t.memory = model::MemoryCompressor(c, o, torch::randn({c.hidden_size}));
  {
    torch::NoGradGuard no_grad;  // B random too, so every adapter's gradient is non-zero from the start
    for (auto& p : t.memory->parameters()) p.normal_(0, 0.2);
  }
  return t;
}

trainer::TrainConfig config_for(const fs::path& out, int64_t steps) {
  trainer::TrainConfig c;
  c.estimator.kind = optim::EstimatorKind::unbiased, c.estimator.window = 2, c.estimator.chunk = 3;
  c.estimator.seed = 17;
  c.optimizer.lr = 3e-3;
  c.schedule.kind = optim::ScheduleKind::cosine, c.schedule.warmup_steps = 2;
  c.steps = steps, c.log_every = 1, c.accumulation = 2;
  c.out_dir = out.string();
  c.config_text = "[train]\nsteps = " + std::to_string(steps) + "\n";
  return c;
}

std::map<std::string, torch::Tensor> tensors_of(const fs::path& file) {
  uio::format::SafetensorsFile f(file.string());
  std::map<std::string, torch::Tensor> out;
  for (const auto& info : f.tensors()) out[info.name] = f.tensor(info.name).clone();
  return out;
}

void expect_equal_files(const fs::path& a, const fs::path& b) {
  auto x = tensors_of(a), y = tensors_of(b);
  ASSERT_EQ(x.size(), y.size()) << a << " vs " << b;
  for (auto& [name, t] : x) EXPECT_TRUE(torch::equal(t, y.at(name))) << name << " in " << a.filename();
}

// Steps `from_step`..`to_step` of a run of `total` steps (the schedule depends on the total), writing
// into `out`: resumed from `checkpoint` when given, and checkpointed at the end. Returns each step's loss.
std::vector<double> train_tiny(const fs::path& out, int64_t total, int64_t to_step, int64_t seed,
                               const std::string& checkpoint = "", std::string* saved = nullptr,
                               int64_t decoder_rank = 0) {
  auto t = make_tiny(seed, 0.2, decoder_rank);
  data::RandomDocuments docs(48, 5 * 8, 9);
  trainer::Trainer trainer(config_for(out, total), t.base, t.memory, {}, docs, {});
  if (!checkpoint.empty()) trainer.restore(checkpoint);
  std::vector<double> losses;
  while (trainer.steps_done() < to_step) losses.push_back(trainer.step().loss);
  const auto dir = trainer.save_checkpoint();
  if (saved) *saved = dir;
  return losses;
}

}  // namespace

TEST(Checkpoint, ResumingGivesBitIdenticalWeightsOptimizerStateAndLosses) {
  const auto dir = uio::test::scratch_dir();
  const int64_t N = 4, seed = static_cast<int64_t>(uio::test::test_seed() % 1000);
  auto straight = train_tiny(dir / "straight", 2 * N, 2 * N, seed);
  ASSERT_EQ(straight.size(), static_cast<size_t>(2 * N));

  std::string middle;
  auto first = train_tiny(dir / "split", 2 * N, N, seed, "", &middle);
  torch::manual_seed(12345);  // the process goes on drawing before the resume; the restore must undo that
  auto second = train_tiny(dir / "split", 2 * N, 2 * N, seed, middle);
  first.insert(first.end(), second.begin(), second.end());
  ASSERT_EQ(first.size(), straight.size());
  for (size_t i = 0; i < straight.size(); ++i) EXPECT_EQ(first[i], straight[i]) << "step " << i + 1;  // bit for bit

  const auto a = dir / "straight/checkpoints/step-00000008", b = dir / "split/checkpoints/step-00000008";
  expect_equal_files(a / "uio_memory.safetensors", b / "uio_memory.safetensors");
  expect_equal_files(a / "optimizer.safetensors", b / "optimizer.safetensors");
  // Generators (CPU, reservoir) and data position, bit for bit.
  EXPECT_EQ(trainer::verify_checkpoint(a.string())["ranks"], trainer::verify_checkpoint(b.string())["ranks"]);

  // The generators matter: resumed with other dropout draws (the CPU generator reseeded after the
  // restore), the same checkpoint gives other losses.
  auto t = make_tiny(seed, 0.2);
  data::RandomDocuments docs(48, 5 * 8, 9);
  trainer::Trainer other(config_for(dir / "other", 2 * N), t.base, t.memory, {}, docs, {});
  other.restore(middle);
  torch::manual_seed(999);
  bool differs = false;
  for (int64_t i = 0; i < N; ++i) differs = differs || other.step().loss != straight[N + i];
  EXPECT_TRUE(differs) << "dropout draws should change the losses";
}

// The same with decoder adapters (beyond the paper), dropout on them too: they are checkpointed with the
// optimiser state of their parameters, and the resumed run is the straight one bit for bit.
TEST(Checkpoint, ResumingWithDecoderAdaptersGivesBitIdenticalWeightsOptimizerStateAndLosses) {
  const auto dir = uio::test::scratch_dir();
  const int64_t N = 3, seed = static_cast<int64_t>(uio::test::test_seed() % 1000);
  auto straight = train_tiny(dir / "straight", 2 * N, 2 * N, seed, "", nullptr, /*decoder_rank=*/3);
  std::string middle;
  auto first = train_tiny(dir / "split", 2 * N, N, seed, "", &middle, /*decoder_rank=*/3);
  torch::manual_seed(12345);
  auto second = train_tiny(dir / "split", 2 * N, 2 * N, seed, middle, nullptr, /*decoder_rank=*/3);
  first.insert(first.end(), second.begin(), second.end());
  ASSERT_EQ(first.size(), straight.size());
  for (size_t i = 0; i < straight.size(); ++i) EXPECT_EQ(first[i], straight[i]) << "step " << i + 1;
  const auto a = dir / "straight/checkpoints/step-00000006", b = dir / "split/checkpoints/step-00000006";
  expect_equal_files(a / "uio_memory.safetensors", b / "uio_memory.safetensors");
  expect_equal_files(a / "optimizer.safetensors", b / "optimizer.safetensors");
  const auto optimizer = tensors_of(a / "optimizer.safetensors");
  int64_t decoder = 0;
  for (const auto& [name, t] : tensors_of(a / "uio_memory.safetensors")) {
    if (name.rfind("decoder.", 0) != 0) continue;
    ++decoder;
    EXPECT_TRUE(optimizer.count(name + ".exp_avg") && optimizer.count(name + ".exp_avg_sq")) << name;
  }
  EXPECT_EQ(decoder, 2 * 4 * uio::test::tiny_llama_config().num_layers);
}

TEST(Checkpoint, StoreKeepsTheLastNAndTheMarkedOnesAndPointsLatestAtTheNewest) {
  const auto root = uio::test::scratch_dir() / "checkpoints";
  trainer::CheckpointStore store(root.string(), {2, 4});
  auto write = [](const std::string& dir) { uio::test::write_file(fs::path(dir) / "payload.bin", "some bytes"); };
  for (int64_t step = 1; step <= 9; ++step) {
    if (step == 3) {
      store.save(step, {}, write);
      uio::test::write_file(root / "step-00000003" / "keep", "");
      continue;
    }
    store.save(step, {}, write);
  }
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(root)) names.insert(e.path().filename().string());
  EXPECT_EQ(names,
            (std::set<std::string>{"latest", "step-00000003", "step-00000004", "step-00000008", "step-00000009"}));
  EXPECT_EQ(uio::test::read_file(root / "latest"), "step-00000009\n");
  std::ostringstream log;
  EXPECT_EQ(store.find_latest(log).value(), (root / "step-00000009").string());
  auto state = trainer::verify_checkpoint((root / "step-00000009").string());
  EXPECT_EQ(state["step"], 9);
  EXPECT_EQ(state["files"]["payload.bin"]["bytes"], 10);
}

TEST(Checkpoint, AFailedWriteLeavesThePreviousCheckpointAndLatestIntact) {
  const auto dir = uio::test::scratch_dir();
  auto t = make_tiny(5, 0.0);
  data::RandomDocuments docs(48, 5 * 8, 9);
  trainer::Trainer trainer(config_for(dir, 10), t.base, t.memory, {}, docs, {});
  trainer.step();
  const auto good = trainer.save_checkpoint();
  trainer.step();
  for (const char* file : {"optimizer.safetensors", "trainer_state.json", "latest"}) {
    ::setenv("UIO_CHECKPOINT_FAULT", file, 1);
    try {
      trainer.save_checkpoint();
      ADD_FAILURE() << "expected the write of " << file << " to fail";
    } catch (const trainer::CheckpointError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("No space left on device"), std::string::npos) << what;
      EXPECT_NE(what.find("latest: step-00000001"), std::string::npos) << what;
      EXPECT_NE(what.find("--resume auto"), std::string::npos) << what;
    }
    ::unsetenv("UIO_CHECKPOINT_FAULT");
    std::ostringstream log;
    const auto found = trainer::CheckpointStore((dir / "checkpoints").string(), {}).find_latest(log);
    // A failure after the rename (writing `latest`) leaves a complete step-2 beside an intact step-1:
    // `latest` still names step 1, and --resume auto takes step 2, the newest complete one.
    EXPECT_EQ(uio::test::read_file(dir / "checkpoints/latest"), "step-00000001\n") << file;
    EXPECT_EQ(found.value(), std::string(file) == "latest" ? (dir / "checkpoints/step-00000002").string() : good)
        << file;
    for (const auto& e : fs::directory_iterator(dir / "checkpoints"))
      EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << e.path();
    EXPECT_NO_THROW(trainer::verify_checkpoint(good));
  }
}

TEST(Checkpoint, DamagedTruncatedOrMissingPiecesAreNamedAndAutoFallsBack) {
  const auto dir = uio::test::scratch_dir();
  auto t = make_tiny(6, 0.0);
  data::RandomDocuments docs(48, 5 * 8, 9);
  trainer::Trainer trainer(config_for(dir, 10), t.base, t.memory, {}, docs, {});
  trainer.step();
  const auto older = trainer.save_checkpoint();
  trainer.step();
  const auto newer = trainer.save_checkpoint();
  const auto root = dir / "checkpoints";
  auto expect_refused = [&](const std::string& needle) {
    try {
      trainer::verify_checkpoint(newer);
      ADD_FAILURE() << "expected " << needle;
    } catch (const trainer::CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("--resume auto"), std::string::npos) << e.what();
    }
    std::ostringstream log;
    EXPECT_EQ(trainer::CheckpointStore(root.string(), {}).find_latest(log).value(), older) << needle;
    EXPECT_NE(log.str().find("warning"), std::string::npos) << log.str();
  };
  const auto optimizer = fs::path(newer) / "optimizer.safetensors";
  const auto bytes = uio::test::read_file(optimizer);
  uio::test::write_file(optimizer, bytes.substr(0, bytes.size() / 2));  // truncated
  expect_refused("optimizer.safetensors: " + std::to_string(bytes.size() / 2) + " bytes, the manifest says");
  auto damaged = bytes;
  damaged[damaged.size() - 3] ^= 0x40;
  uio::test::write_file(optimizer, damaged);
  expect_refused("optimizer.safetensors: checksum differs");
  uio::test::write_file(optimizer, bytes);
  fs::remove(fs::path(newer) / "trainer_state.json");
  expect_refused("trainer_state.json: missing, so the checkpoint is incomplete");

  // No `latest` at all: the newest complete checkpoint, with a warning.
  fs::remove(root / "latest");
  std::ostringstream log;
  EXPECT_EQ(trainer::CheckpointStore(root.string(), {}).find_latest(log).value(), older);
  EXPECT_NE(log.str().find("latest is missing"), std::string::npos) << log.str();
}

TEST(Checkpoint, ACheckpointOfAnotherModelOrShapeIsRefused) {
  const auto dir = uio::test::scratch_dir();
  auto t = make_tiny(7, 0.0);
  const auto weights = dir / "weights.gguf";
  uio::test::write_file(weights, std::string(2 << 20, 'w'));
  data::RandomDocuments docs(48, 5 * 8, 9);
  trainer::Trainer trainer(config_for(dir / "run", 10), t.base, t.memory, model::identify(weights.string(), t.config),
                           docs, {});
  trainer.step();
  const auto saved = trainer.save_checkpoint();

  uio::test::write_file(dir / "other.gguf", std::string(2 << 20, 'o'));
  auto u = make_tiny(7, 0.0);
  trainer::Trainer other(config_for(dir / "run2", 10), u.base, u.memory,
                         model::identify((dir / "other.gguf").string(), u.config), docs, {});
  try {
    other.restore(saved);
    FAIL() << "expected a different-model error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("other weights"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("uio_config.json"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, ConfigComparisonNamesEveryMismatchedShapeKey) {
  const std::string saved = "[train]\nsegment_len = 1024\nnum_memory_tokens = 32\nlr = 0.0001\nestimator = unbiased\n";
  const std::string now = "[train]\nsegment_len = 512\nnum_memory_tokens = 32\nlr = 5e-05\nestimator = tbptt\n";
  std::vector<std::string> changed;
  auto bad = trainer::compare_configs(saved, now, {"segment_len", "num_memory_tokens", "estimator"}, &changed);
  EXPECT_EQ(bad, (std::vector<std::string>{"estimator: unbiased -> tbptt", "segment_len: 1024 -> 512"}));
  EXPECT_EQ(changed, (std::vector<std::string>{"lr: 0.0001 -> 5e-05"}));
  // A key added after the saved run: absent there, it means the value every earlier run had; a run that
  // now asks for another value is still refused, and a key present in the saved config is not overridden.
  const std::string older = "[train]\nsegment_len = 1024\nsink_tokens = 4\n";
  const std::map<std::string, std::string> added = {{"retrieval_questions", "1"}, {"sink_tokens", "0"}};
  const std::vector<std::string> keys = {"segment_len", "retrieval_questions", "sink_tokens"};
  EXPECT_TRUE(trainer::compare_configs(older, "segment_len = 1024\nretrieval_questions = 1\nsink_tokens = 4\n", keys,
                                       nullptr, added)
                  .empty());
  EXPECT_EQ(trainer::compare_configs(older, "segment_len = 1024\nretrieval_questions = 16\nsink_tokens = 0\n", keys,
                                     nullptr, added),
            (std::vector<std::string>{"retrieval_questions: 1 -> 16", "sink_tokens: 4 -> 0"}));
  EXPECT_EQ(trainer::compare_configs(older, "segment_len = 1024\nretrieval_questions = 1\nsink_tokens = 4\n", keys),
            (std::vector<std::string>{"retrieval_questions: (unset) -> 1"}))
      << "without absent_means an added key is a mismatch";
}

// One stop delivered as two signals at once (GNU timeout signals the command, then its process group) is
// one request: the process lives on to write its checkpoint. A second signal seconds later ends it at once.
// Each case runs in a forked child that only raises signals and sleeps.
TEST(StopSignal, SignalsTogetherAreOneRequestALaterOneEndsTheProcess) {
  auto run = [](unsigned gap_ms) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      trainer::install_stop_handlers();
      ::raise(SIGTERM);
      ::usleep(gap_ms * 1000);
      ::raise(SIGTERM);
      ::_exit(trainer::stop_requested() ? 0 : 3);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
  };
  const int together = run(0);
  ASSERT_TRUE(WIFEXITED(together)) << "killed by signal " << (WIFSIGNALED(together) ? WTERMSIG(together) : 0);
  EXPECT_EQ(WEXITSTATUS(together), 0) << "the stop request was recorded";
  const int later = run(3000);
  ASSERT_TRUE(WIFSIGNALED(later)) << "a second request seconds later ends the process";
  EXPECT_EQ(WTERMSIG(later), SIGTERM);
}

// `uio train` on a tiny HF model, killed with SIGKILL at random moments (checkpoint writes slowed so
// kills land inside them): every time, the newest complete checkpoint verifies and a resumed run
// continues from it; no partial checkpoint is ever taken.
TEST(Checkpoint, KilledAtRandomMomentsTheRunAlwaysResumesFromACompleteCheckpoint) {
  const auto dir = uio::test::scratch_dir();
  const auto store_dir = uio::test::write_random_store(dir / "store", 6, 400, uio::test::test_seed());
  const auto model = uio::test::testdata("hf_models/qwen2_bias").string();
  const auto out = dir / "run";
  const std::vector<std::string> args = {"train",
                                         "--model",
                                         model,
                                         "--data",
                                         store_dir.string(),
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
                                         "--encoder_lora_dropout",
                                         "0.1",
                                         "--chunk",
                                         "2",
                                         "--val_documents",
                                         "0",
                                         "--checkpoint_every",
                                         "1",
                                         "--keep_checkpoints",
                                         "2",
                                         "--log_every",
                                         "1",
                                         "--out_dir",
                                         out.string(),
                                         "--resume",
                                         "auto"};
  std::mt19937_64 rng(uio::test::test_seed());
  int64_t last_step = 0, kills = 0;
  const int kRounds = 12;  // the last one stops the run with SIGTERM instead: a clean stop, after a checkpoint
  for (int round = 0; round <= kRounds; ++round) {
    const bool term = round == kRounds;
    auto round_args = args;
    round_args.insert(round_args.end(), {"--steps", "1000"});
    const auto child =
        uio::test::spawn_uio(round_args, {{"UIO_CHECKPOINT_DELAY_MS", "15"}}, dir / "child.log", dir / "child.err");
    if (term) {
      // A clean stop needs the handlers installed: wait until this run has trained a step (slow
      // machines take seconds to load libtorch), then ask it to stop.
      uio::test::wait_for_text(child.log, " | loss ");
    } else {
      ::usleep(static_cast<useconds_t>(600000 + rng() % 900000));  // start-up, then a few steps and writes
    }
    ::kill(child.pid, term ? SIGTERM : SIGKILL);
    if (term) ::kill(child.pid, SIGTERM);  // as `timeout` does: the process, then its group
    const int code = uio::test::wait_exit(child);
    if (term) {
      ASSERT_EQ(code, 0) << uio::test::read_file(dir / "child.err");
      EXPECT_NE(uio::test::read_file(dir / "child.log").find("stopped by a signal after step"), std::string::npos)
          << uio::test::read_file(dir / "child.log");
    } else {
      ASSERT_EQ(code, 128 + SIGKILL) << "round " << round << ": the run ended before the kill";
      ++kills;
    }
    std::ostringstream log;
    const auto found = trainer::CheckpointStore((out / "checkpoints").string(), {}).find_latest(log);
    if (!found) continue;  // killed before the first checkpoint
    const auto state = trainer::verify_checkpoint(*found);
    const int64_t step = state["step"].get<int64_t>();
    EXPECT_GE(step, last_step) << "round " << round << ": resumed runs never go back";
    last_step = step;
  }
  EXPECT_GT(last_step, 2) << "the runs made progress across " << kills << " kills";
  // A final resume runs to the end and reports where it continued from.
  auto final_args = args;
  final_args.push_back("--steps");
  final_args.push_back(std::to_string(last_step + 2));
  const auto r = uio::test::run_uio(final_args);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("resume: from"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step-"), std::string::npos) << r.out;
  std::ostringstream name;
  name << "step-" << std::setw(8) << std::setfill('0') << last_step + 2;
  auto state = trainer::verify_checkpoint((out / "checkpoints" / name.str()).string());
  EXPECT_EQ(state["step"].get<int64_t>(), last_step + 2);

  // Other model or data shapes: refused, naming each key.
  auto mismatched = args;
  for (size_t i = 1; i < mismatched.size(); ++i) {
    if (mismatched[i - 1] == "--segment_len") mismatched[i] = "32";
    if (mismatched[i - 1] == "--seq_len") mismatched[i] = "128";
  }
  mismatched.push_back("--steps");
  mismatched.push_back(std::to_string(last_step + 4));
  const auto refused = uio::test::run_uio(mismatched);
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("segment_len: 16 -> 32"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("seq_len: 64 -> 128"), std::string::npos) << refused.err;
}

namespace {

// A store of `steps` checkpoints (1..steps) in <out>/checkpoints, each a payload and the config.ini
// that resume_checkpoint compares; returns the checkpoints directory.
fs::path store_with_steps(const fs::path& out, int64_t steps, const std::string& config) {
  const auto root = out / "checkpoints";
  trainer::CheckpointStore store(root.string(), {10, 0});
  for (int64_t step = 1; step <= steps; ++step)
    store.save(step, {}, [&](const std::string& dir) {
      uio::test::write_file(fs::path(dir) / "payload.bin", "payload of step " + std::to_string(step));
      uio::test::write_file(fs::path(dir) / "config.ini", config);
    });
  return root;
}

// Nested JSON arrays `depth` levels deep (a hostile manifest value).
std::string nested(int depth) {
  return std::string(static_cast<size_t>(depth), '[') + std::string(static_cast<size_t>(depth), ']');
}

}  // namespace

// A writer killed after renaming step-3 into place but before moving `latest` leaves latest at step 2:
// --resume auto takes step 3, the newest complete one, and says why; a `latest` naming a path into
// another run is ignored, never followed.
TEST(Checkpoint, AutoResumeTakesTheNewestCompleteCheckpointWhateverLatestSays) {
  const auto out = uio::test::scratch_dir();
  const std::string config = "[train]\nsteps = 9\n";
  const auto root = store_with_steps(out, 3, config);
  uio::test::write_file(root / "latest", "step-00000002\n");
  std::ostringstream log;
  EXPECT_EQ(trainer::resume_checkpoint("auto", out.string(), config, log).value(), (root / "step-00000003").string());
  EXPECT_NE(log.str().find("latest names step-00000002, but step-00000003 is the newest complete checkpoint"),
            std::string::npos)
      << log.str();

  const auto other = store_with_steps(out / "other", 9, config);
  for (const auto& elsewhere :
       {std::string("../other/checkpoints/step-00000009"), (other / "step-00000009").string()}) {
    uio::test::write_file(root / "latest", elsewhere + "\n");
    std::ostringstream log2;
    EXPECT_EQ(trainer::CheckpointStore(root.string(), {}).find_latest(log2).value(), (root / "step-00000003").string());
    EXPECT_NE(log2.str().find("not a checkpoint directory of this run; ignored"), std::string::npos) << log2.str();
  }
}

// The newest checkpoint broken in ways a disk, a tool or a person can break it: verify_checkpoint throws
// CheckpointError naming the file or entry (never a library exception, never a crash), and
// --resume auto falls back to the older good checkpoint with a warning that says why.
TEST(Checkpoint, ABrokenNewestCheckpointFallsBackToAnOlderGoodOneNamingWhatIsWrong) {
  const auto out = uio::test::scratch_dir();
  const std::string config = "[train]\nsteps = 9\n";
  const auto root = store_with_steps(out, 2, config);
  const auto newest = root / "step-00000002", manifest = newest / "trainer_state.json";
  const auto good_manifest = uio::test::read_file(manifest);
  const auto good = nlohmann::json::parse(good_manifest);
  auto with = [&](const std::function<void(nlohmann::json&)>& edit) {
    auto j = good;
    edit(j);
    return j.dump(1);
  };
  struct Case {
    std::string name, manifest, needle;
    std::function<void()> damage;
  };
  const std::vector<Case> cases = {
      {"a file replaced by a directory", good_manifest, "payload.bin: not a regular file",
       [&] {
         fs::remove(newest / "payload.bin");
         fs::create_directories(newest / "payload.bin" / "inner");
       }},
      {"bytes as a string",
       with([](auto& j) { j["files"]["payload.bin"]["bytes"] = "17"; }),
       "entry 'payload.bin' lacks unsigned integers",
       {}},
      {"a negative checksum",
       with([](auto& j) { j["files"]["payload.bin"]["checksum"] = -5; }),
       "entry 'payload.bin' lacks unsigned integers",
       {}},
      {"an entry that is an array",
       with([](auto& j) {
         j["files"]["config.ini"] = nlohmann::json::array({1, 2});
       }),
       "entry 'config.ini' lacks unsigned integers",
       {}},
      {"files as an array", with([](auto& j) { j["files"] = nlohmann::json::array(); }), "lacks an object 'files'", {}},
      {"step as a string", with([](auto& j) { j["step"] = "2"; }), "lacks an object 'files' or a step number", {}},
      {"another step than its directory",
       with([](auto& j) { j["step"] = 7; }),
       "says step 7, but its directory is",
       {}},
      {"a manifest that is not an object", "[1, 2, 3]\n", "lacks an object 'files'", {}},
      {"deep nesting in a value",
       "{\"step\": 2, \"files\": {}, \"ranks\": " + nested(60000) + "}\n",
       "nested deeper than",
       {}},
      {"deep nesting in an entry",
       "{\"step\": 2, \"files\": {\"payload.bin\": " + nested(60000) + "}}\n",
       "nested deeper than",
       {}},
      {"an entry above the directory",
       with([](auto& j) { j["files"]["../../escape.bin"] = j["files"]["payload.bin"]; }),
       "entry '../../escape.bin' is not a file name inside the checkpoint directory",
       {}},
      {"an absolute entry",
       with([](auto& j) { j["files"]["/etc/hostname"] = j["files"]["payload.bin"]; }),
       "entry '/etc/hostname' is not a file name inside the checkpoint directory",
       {}},
      {"the manifest replaced by a directory", "", "trainer_state.json",
       [&] {
         fs::remove(manifest);
         fs::create_directories(manifest);
       }},
  };
  const auto payload = uio::test::read_file(newest / "payload.bin");
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    if (c.damage) c.damage();
    if (!c.manifest.empty()) uio::test::write_file(manifest, c.manifest);
    try {
      trainer::verify_checkpoint(newest.string());
      ADD_FAILURE() << "expected a CheckpointError";
    } catch (const trainer::CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(c.needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(newest.string()), std::string::npos) << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a CheckpointError: " << e.what();
    }
    std::ostringstream log;
    try {
      EXPECT_EQ(trainer::resume_checkpoint("auto", out.string(), config, log).value(),
                (root / "step-00000001").string());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "--resume auto failed instead of falling back: " << e.what();
    }
    EXPECT_NE(log.str().find("skipping " + newest.string()), std::string::npos) << log.str();
    // Repair for the next case.
    fs::remove_all(newest / "payload.bin");
    uio::test::write_file(newest / "payload.bin", payload);
    fs::remove_all(manifest);
    uio::test::write_file(manifest, good_manifest);
    ASSERT_NO_THROW(trainer::verify_checkpoint(newest.string()));
  }
}

// A finished run relaunched with --resume auto and the same --steps writes its last step again:
// step-N is renamed to .old-step-N-<pid>, the new copy .tmp-step-N-<pid> renamed to step-N. Killed
// between the two renames, both copies are complete and step-N is gone: the next start puts the new
// copy in place (or the old one, when the new one is incomplete) instead of deleting both.
TEST(Checkpoint, AKillBetweenTheRenamesOfARewrittenStepRecoversTheCompleteCopy) {
  const std::string config = "[train]\nsteps = 3\n";
  for (const bool new_copy_complete : {true, false}) {
    SCOPED_TRACE(new_copy_complete ? "new copy complete" : "new copy without its manifest");
    const auto out = uio::test::scratch_dir() / (new_copy_complete ? "a" : "b");
    const auto root = store_with_steps(out, 3, config);
    // The second writing of step 3, made elsewhere, then the directories as the kill leaves them.
    const auto again = store_with_steps(out / "again", 2, config);
    trainer::CheckpointStore(again.string(), {10, 0}).save(3, {}, [&](const std::string& dir) {
      uio::test::write_file(fs::path(dir) / "payload.bin", "payload of step 3, written again");
      uio::test::write_file(fs::path(dir) / "config.ini", config);
    });
    fs::rename(root / "step-00000003", root / ".old-step-00000003-4242");
    fs::rename(again / "step-00000003", root / ".tmp-step-00000003-4242");
    if (!new_copy_complete) fs::remove(root / ".tmp-step-00000003-4242" / "trainer_state.json");

    std::ostringstream log;
    const auto found = trainer::resume_checkpoint("auto", out.string(), config, log);
    ASSERT_TRUE(found.has_value()) << log.str();
    EXPECT_EQ(*found, (root / "step-00000003").string()) << log.str();
    EXPECT_EQ(uio::test::read_file(root / "step-00000003" / "payload.bin"),
              new_copy_complete ? "payload of step 3, written again" : "payload of step 3");
    EXPECT_NE(log.str().find("recovered " + (root / "step-00000003").string()), std::string::npos) << log.str();
    for (const auto& e : fs::directory_iterator(root))
      EXPECT_NE(e.path().filename().string().front(), '.') << "a leftover stays: " << e.path();
  }
}

// Every reader of a compressor directory verifies a checkpoint first: `uio generate --memory`, `uio eval
// --memory` and `uio export` refuse a checkpoint whose file fails its manifest checksum (a flipped byte
// in the weights that still parses), naming the file.
TEST(Checkpoint, GenerateEvalAndExportRefuseACheckpointWhoseFilesFailTheirChecksums) {
  const auto ref = uio::test::testdata("smollm2") / "reference.json";
  if (!fs::exists(ref)) GTEST_SKIP() << "no SmolLM2 GGUF under models/ (run scripts/get-model.sh)";
  const std::string gguf = nlohmann::json::parse(std::ifstream(ref))["gguf"];
  auto loaded = model::load_model(gguf);
  model::MemoryOptions o;
  o.segment_len = 16, o.num_memory_tokens = 4, o.encoder_lora.rank = 2, o.transfer_lora.rank = 2;
  torch::manual_seed(uio::test::test_seed());
  model::MemoryCompressor compressor(loaded.config, o, torch::randn({loaded.config.hidden_size}) * 0.05);
  const auto out = uio::test::scratch_dir();
  const auto dir = trainer::CheckpointStore((out / "checkpoints").string(), {}).save(1, {}, [&](const std::string& d) {
    model::save_memory(d, compressor, model::identify(gguf, loaded.config));
  });
  const std::vector<std::string> generate = {"generate",
                                             "--model",
                                             gguf,
                                             "--memory",
                                             dir,
                                             "--prompt",
                                             "Alice was beginning to get very tired of sitting by her sister",
                                             "--max_new_tokens",
                                             "1"};
  ASSERT_EQ(uio::test::run_uio(generate).exit_code, 0) << "the intact checkpoint generates";
  const auto weights = fs::path(dir) / "uio_memory.safetensors";
  auto bytes = uio::test::read_file(weights);
  bytes[bytes.size() - 2] ^= 0x10;  // inside the last tensor's data: the file still parses
  uio::test::write_file(weights, bytes);
  for (const auto& args :
       {generate,
        std::vector<std::string>{"eval", "--model", gguf, "--memory", dir, "--methods", "uio", "--data",
                                 (out / "no-store").string()},
        std::vector<std::string>{"export", "--checkpoint", dir, "--out", (out / "export").string()},
        std::vector<std::string>{"generate", "--model", gguf, "--memory", out.string(), "--prompt", "x"}}) {
    const auto r = uio::test::run_uio(args);
    EXPECT_EQ(r.exit_code, 1) << args[0] << ": " << r.err;
    EXPECT_NE(r.err.find(weights.string() + ": checksum differs from the manifest's"), std::string::npos)
        << args[0] << ": " << r.err;
  }
}
