// trainer/train.h — the training loop of the memory compressor (docs/method.md §8-11): documents from a
// source, gradients through memory from the chosen estimator, AdamW steps with warmup and a schedule,
// held-out perplexity before, during and after, metrics to JSONL, a progress bar. The base model is
// frozen; only the compressor's parameters (encoder LoRA, transfer LoRA, <mem>) change.
#pragma once

#include <cmath>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/document_source.h"
#include "model/llama.h"
#include "model/memory.h"
#include "model/memory_io.h"
#include "optim/estimator.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "trainer/checkpoint.h"
#include "trainer/distributed.h"
#include "trainer/metrics.h"
#include "trainer/perplexity.h"
#include "trainer/train_state.h"

namespace uio::trainer {

struct TrainConfig {
  optim::EstimatorOptions estimator;
  optim::OptimizerOptions optimizer;
  optim::ScheduleOptions schedule;  // total_steps is set to `steps`
  int64_t steps = 100;
  int64_t accumulation = 1;  // documents per optimiser step
  int64_t log_every = 10;  // plain progress lines (when not on a terminal) and metrics lines
  int64_t val_every = 0;  // held-out perplexity every N steps (0: only before and after training)
  int64_t val_chunk = model::kDefaultChunk;  // segments per batched call when scoring held-out documents
  int64_t max_bad_steps = 5;  // steps in a row with a non-finite loss or gradient before the run stops
  std::string out_dir;  // metrics.jsonl, checkpoints/, the trained compressor (compressor/); empty: nothing
  std::string config_text;  // the resolved options (INI), kept beside the outputs and in checkpoints
  int64_t checkpoint_every = 0;  // steps between checkpoints (0: only at the end and when stopped by a signal)
  CheckpointOptions checkpoints;
  uint64_t seed = 0;  // the run's seed; ranks > 0 draw dropout and reservoir from seed + rank
  int64_t check_every = 50;  // data parallel: steps between checks that every rank holds the same weights
};

// Throws std::invalid_argument naming the option (its INI / command-line key) for any value out of range:
// counts below 1, negative intervals, AdamW betas outside [0, 1), eps <= 0, a bad schedule or
// checkpoint setting. Called before any work starts (trainer/train_job.h) and by Trainer's constructor.
void check_train_config(const TrainConfig& config);

struct TrainResult {
  int64_t steps = 0, skipped = 0;  // steps done in all (a resumed run counts the earlier ones)
  double last_loss = NAN;  // mean loss per token of the last finite step of this run (none: NaN)
  bool stopped = false;  // by SIGINT/SIGTERM, after a checkpoint
  std::string last_checkpoint;
  Perplexity before, after;
};

class Trainer {
 public:
  // `validation`: held-out documents ([n] each) scored before, every val_every steps, and after.
  // `comm`: the data-parallel job this process belongs to (null: a world of one). With several ranks,
  // `documents` is this rank's share, every rank starts from rank 0's weights, gradients and step
  // statistics are summed over ranks, and only rank 0 logs and writes metrics and checkpoints.
  Trainer(TrainConfig config, model::CausalLM base, model::MemoryCompressor compressor, model::BaseIdentity identity,
          data::DocumentSource& documents, std::vector<torch::Tensor> validation, Communicator* comm = nullptr);
  // The whole run: validation, config.steps steps with progress and metrics, validation, the
  // trained compressor written to out_dir.
  TrainResult run(std::ostream& log);
  // One optimiser step (accumulation documents through the estimator on every rank, gradients summed
  // over ranks, then AdamW, or a skip when the loss or gradient is not finite). An update that leaves a
  // parameter non-finite is undone whole (weights, AdamW state, data position, generators: the state
  // before the step) and reported as `diverged`; run() then stops. `uio bench train` times these.
  StepResult step();
  int64_t steps_done() const { return step_; }

  // Writes a checkpoint of the current step to <out_dir>/checkpoints (trainer/checkpoint.h): the
  // compressor, AdamW state, every rank's random generators (CPU, CUDA devices, the reservoir's) and
  // data position, the counters and the resolved config. Every rank calls it; rank 0 writes. Returns
  // its directory.
  std::string save_checkpoint();
  // Continues from a checkpoint written by save_checkpoint (verified first): afterwards the run goes on
  // exactly as the one that wrote it would have, when the world size is the same; with another world
  // size it continues with a warning on `log` (the data order and the random draws change). Config
  // compatibility is the caller's to check.
  void restore(const std::string& dir, std::ostream& log = std::cerr);

 private:
  Perplexity validate(std::ostream& log, int64_t step, const char* when);
  bool is_root() const { return !comm_ || comm_->is_root(); }
  int world_size() const { return comm_ ? comm_->world_size() : 1; }
  RankState rank_state() const;  // this rank's generators and data position
  void apply_rank_state(const RankState& state, const std::string& where);
  void restore_data_position(const nlohmann::json& data, const std::string& where);  // errors name `where`
  void check_replicas_agree();  // every rank holds the same weights
  // What a step changes, taken before it so that an update gone non-finite can be undone.
  // The weights and optimiser state are kept by the optimiser (Optimizer::remember, buffers reused from
  // step to step); the point holds this rank's data position and random streams.
  struct UndoPoint {
    RankState rank;
  };
  UndoPoint undo_point();
  void undo(const UndoPoint& point);

  TrainConfig config_;
  model::CausalLM base_;
  model::MemoryCompressor compressor_;
  model::BaseIdentity identity_;
  data::DocumentSource& documents_;
  std::vector<torch::Tensor> validation_;
  optim::GradientEstimator estimator_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  torch::Device device_;
  std::unique_ptr<MetricsLog> metrics_;
  int64_t step_ = 0;  // optimiser steps taken (skipped ones included)
  int64_t skipped_ = 0, input_tokens_ = 0;
  Communicator* comm_ = nullptr;
};

}  // namespace uio::trainer
