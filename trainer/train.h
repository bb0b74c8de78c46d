// trainer/train.h — the training loop of the memory compressor (DESIGN.md §3): documents from a
// source, gradients through memory from the chosen estimator, AdamW steps with warmup and a schedule,
// held-out perplexity before, during and after, metrics to JSONL, a progress bar. The base model is
// frozen; only the compressor's parameters (encoder LoRA, transfer LoRA, <mem>) change.
#pragma once

#include <fstream>
#include <iosfwd>
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
#include "trainer/perplexity.h"

namespace uio::trainer {

struct TrainConfig {
  optim::EstimatorOptions estimator;
  optim::OptimizerOptions optimizer;
  optim::ScheduleOptions schedule;  // total_steps is set to `steps`
  int64_t steps = 100;
  int64_t accumulation = 1;  // documents per optimiser step
  int64_t log_every = 10;    // plain progress lines (when not on a terminal) and metrics lines
  int64_t val_every = 0;     // held-out perplexity every N steps (0: only before and after training)
  int64_t max_bad_steps = 5; // steps in a row with a non-finite loss or gradient before the run stops
  std::string out_dir;       // metrics.jsonl, checkpoints/, the trained compressor (compressor/); empty: nothing
  std::string config_text;   // the resolved options (INI), kept beside the outputs and in checkpoints
  int64_t checkpoint_every = 0;  // steps between checkpoints (0: only at the end and when stopped by a signal)
  CheckpointOptions checkpoints;
};

struct TrainResult {
  int64_t steps = 0, skipped = 0;  // steps done in all (a resumed run counts the earlier ones)
  double last_loss = 0;            // mean loss per token of the last step
  bool stopped = false;            // by SIGINT/SIGTERM, after a checkpoint
  std::string last_checkpoint;
  Perplexity before, after;
};

// One optimiser step as the loop saw it.
struct StepResult {
  int64_t step = 0;          // 1-based
  double loss = 0;           // mean cross-entropy per prediction over the step's documents
  double grad_norm = 0, lr = 0;
  int64_t predictions = 0, input_tokens = 0;
  bool finite = true;        // false: non-finite loss or gradient, the update was skipped
  double seconds = 0;        // wall time of the step (synchronised with the device)
  std::vector<double> segment_loss;  // summed per segment position
  std::vector<int64_t> segment_tokens;
};

class Trainer {
 public:
  // `validation`: held-out documents ([n] each) scored before, every val_every steps, and after.
  Trainer(TrainConfig config, model::CausalLM base, model::MemoryCompressor compressor, model::BaseIdentity identity,
          data::DocumentSource& documents, std::vector<torch::Tensor> validation);
  // The whole run: validation, config.steps steps with progress and metrics, validation, the
  // trained compressor written to out_dir.
  TrainResult run(std::ostream& log);
  // One optimiser step (accumulation documents through the estimator, then AdamW, or a skip when the
  // loss or gradient is not finite). `uio bench train` times these.
  StepResult step();
  int64_t steps_done() const { return step_; }

  // Writes a checkpoint of the current step to <out_dir>/checkpoints (trainer/checkpoint.h): the
  // compressor, AdamW state, every random generator (CPU, CUDA devices, the reservoir's), the data
  // source's position, the counters and the resolved config. Returns its directory.
  std::string save_checkpoint();
  // Continues from a checkpoint written by save_checkpoint (verified first): afterwards the run goes on
  // exactly as the one that wrote it would have. Config compatibility is the caller's to check.
  void restore(const std::string& dir);

 private:
  Perplexity validate(std::ostream& log, int64_t step, const char* when);
  void write_metrics(const StepResult& r, int64_t skipped, double elapsed);

  TrainConfig config_;
  model::CausalLM base_;
  model::MemoryCompressor compressor_;
  model::BaseIdentity identity_;
  data::DocumentSource& documents_;
  std::vector<torch::Tensor> validation_;
  optim::GradientEstimator estimator_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  torch::Device device_;
  std::unique_ptr<std::ofstream> metrics_;
  int64_t step_ = 0;  // optimiser steps taken (skipped ones included)
  int64_t skipped_ = 0, input_tokens_ = 0;
};

}  // namespace uio::trainer
