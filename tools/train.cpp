// tools/train.cpp — `uio train`: options into a trainer::TrainJob; trainer/train_job.h runs the job
// (fine-tuning the memory compressor of a frozen base model on a token store, with held-out perplexity
// against the base model truncated to one segment, before and after).
#include <iostream>

#include "tools/memory_options.h"
#include "tools/model_options.h"
#include "tools/options.h"
#include "trainer/train_job.h"

namespace uio::cli {
namespace {

struct TrainInput {
  ModelInput base;
  MemoryOptionsInput memory;
  std::string estimator = "unbiased";
  std::string schedule = optim::schedule_kind_name(optim::ScheduleOptions().kind);
  int64_t seed = 0;
  trainer::TrainJob job;
};

}  // namespace

int train_command(const std::vector<std::string>& args) {
  TrainInput in;
  auto& job = in.job;
  auto& c = job.train;
  Schema schema("train", "Fine-tune the memory compressor (encoder LoRA, transfer LoRA, <mem>) of a frozen base model");
  add_model_options(schema, in.base, "base model (HF directory or .gguf), frozen");
  add_memory_options(schema, in.memory);
  schema.add("data", &job.data, "token store directory (uio prepare) with train and held-out documents")
      .add("seq_len", &job.seq_len, "tokens per training document (a multiple of segment_len)")
      .add("sampler", &job.sampler, "long_only (windows of long documents) or join (documents joined with EOS)")
      .add("retrieval_share", &job.retrieval_share,
           "share of synthetic retrieval documents (numbers planted in the text, a question at the end, loss on "
           "the answer only; beyond the paper's recipe)")
      .add("autoencode_share", &job.autoencode_share,
           "share of auto-encoding documents (a segment repeated after a marker, loss on the copy only; beyond "
           "the paper's recipe)")
      .add("retrieval_max_facts", &job.retrieval_max_facts, "facts planted per retrieval document: 1 to this")
      .add("retrieval_questions", &job.retrieval_questions,
           "questions per retrieval document: the last at its end, the others at random points after the facts "
           "they ask about (1: one answer per document)")
      .add("retrieval_min_distance", &job.retrieval_min_distance,
           "tokens every planted fact lies before its document's end at least (0: anywhere; segment_len: every "
           "fact before the last question's segment, so its answer comes through memory only)")
      .add("retrieval_min_digits", &job.retrieval_min_digits, "digits of each planted number: at least this many")
      .add("retrieval_max_digits", &job.retrieval_max_digits,
           "digits of each planted number: at most this many (a curriculum may start with short numbers)")
      .add("retrieval_cue", &job.retrieval_cue,
           "each retrieval question asks one fact and ends with the fact's own words up to its number, so the "
           "answer completes a phrase the text holds (what the plain model does in its window)")
      .add("init_memory", &job.init_memory,
           "start from this compressor's weights (a run directory, checkpoint, export or compressor directory; a "
           "fresh optimiser, schedule and data order): the next stage of a curriculum. Ignored on --resume")
      .add("seed", &in.seed, "seed of the data order, the adapters' initialisation, dropout and the reservoir")
      .add("estimator", &in.estimator, "gradient through memory: full, tbptt_naive, tbptt, unbiased")
      .add("window", &c.estimator.window, "S: memories whose encoder keeps its graph (tbptt window, reservoir size)")
      .add("chunk", &c.estimator.chunk, "segments per batched encoder/decoder call (memory vs speed)")
      .add("activation_checkpointing", &c.estimator.activation_checkpointing,
           "recompute encoders in the backward pass instead of keeping their activations")
      .add("lr", &c.optimizer.lr, "peak learning rate (AdamW)")
      .add("beta1", &c.optimizer.beta1, "AdamW beta1")
      .add("beta2", &c.optimizer.beta2, "AdamW beta2")
      .add("eps", &c.optimizer.eps, "AdamW epsilon")
      .add("weight_decay", &c.optimizer.weight_decay, "decoupled weight decay of the LoRA matrices (none on <mem>)")
      .add("grad_clip", &c.optimizer.grad_clip, "max global gradient norm (<= 0: no clipping)")
      .add("schedule", &in.schedule, "learning rate after warmup: cosine or constant")
      .add("warmup_steps", &c.schedule.warmup_steps, "linear warmup steps")
      .add("min_lr_ratio", &c.schedule.min_lr_ratio, "cosine: final learning rate as a fraction of lr")
      .add("steps", &c.steps, "optimiser steps")
      .add("accumulation", &c.accumulation, "documents per optimiser step (gradient accumulation)")
      .add("log_every", &c.log_every, "steps between log lines and metrics records")
      .add("val_every", &c.val_every, "steps between held-out evaluations (0: before and after training only)")
      .add("val_chunk", &c.val_chunk, "segments per batched call when scoring held-out documents")
      .add("val_documents", &job.val_documents, "held-out documents (of seq_len tokens) to evaluate on")
      .add("max_bad_steps", &c.max_bad_steps, "non-finite steps in a row that stop the run")
      .add("out_dir", &c.out_dir, "where metrics.jsonl, config.ini, checkpoints/ and the trained compressor go")
      .add("checkpoint_every", &c.checkpoint_every,
           "steps between checkpoints (0: at the end and on SIGINT/SIGTERM only)")
      .add("keep_checkpoints", &c.checkpoints.keep_last, "newest complete checkpoints kept")
      .add("keep_checkpoint_every", &c.checkpoints.keep_every,
           "also keep every checkpoint whose step is a multiple of this (0: none); a file named 'keep' in a "
           "checkpoint directory keeps it too")
      .add("resume", &job.resume,
           "continue a run: 'auto' (the newest complete checkpoint in out_dir, or start "
           "fresh when there is none) or a checkpoint directory")
      .add("overwrite", &job.overwrite,
           "when out_dir holds an earlier run and --resume is not given: delete its "
           "checkpoints, compressor, metrics and config and start over (default: refuse)")
      .add("master_addr", &job.master_addr, "data parallel: rendezvous host (empty: MASTER_ADDR; docs/distributed.md)")
      .add("master_port", &job.master_port, "data parallel: rendezvous port (0: MASTER_PORT, else 29500)")
      .add("dist_timeout_s", &job.dist_timeout_s,
           "data parallel: seconds a collective may wait for the other ranks before the job stops with an error")
      .add("check_every", &c.check_every, "data parallel: steps between checks that all ranks hold the same weights")
      .required("data");
  if (!schema.parse(args, std::cout)) return 0;
  job.model = in.base.model, job.load = load_options(in.base), job.dtype_name = in.base.dtype;
  job.memory = resolve_memory_options(in.memory);
  c.config_text = schema.to_ini();
  c.estimator.kind = optim::parse_estimator_kind(in.estimator);
  c.schedule.kind = optim::parse_schedule_kind(in.schedule);
  c.seed = c.estimator.seed = static_cast<uint64_t>(in.seed);
  trainer::run_train_job(job, std::cout);
  return 0;
}

}  // namespace uio::cli
