// tools/train.cpp — `uio train`: fine-tunes the memory compressor of a frozen base model on a token
// store (uio prepare) and reports held-out perplexity with memory against the base model truncated to
// one segment, before and after. Options parse into trainer::TrainConfig; the loop is trainer/'s.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include "data/token_store.h"
#include "model/weights.h"
#include "tools/memory_options.h"
#include "tools/model_options.h"
#include "tools/options.h"
#include "model/device_stats.h"
#include "trainer/distributed.h"
#include "trainer/stop_signal.h"
#include "trainer/train.h"

namespace uio::cli {
namespace {

struct TrainInput {
  ModelInput base;
  MemoryOptionsInput memory;
  std::string data, sampler = "long_only", estimator = "unbiased", resume, master_addr;
  int64_t seq_len = 4096, val_documents = 4, seed = 0, master_port = 0;
  double dist_timeout_s = 600;
  trainer::TrainConfig config;
};

// Keys that shape the model or the data: a checkpoint only continues a run that agrees on them. (The
// base model itself is checked by its fingerprint when the checkpoint is restored, wherever it lies.)
const std::vector<std::string> kResumeMustMatch = {
    "segment_len", "num_memory_tokens", "compression_ratio", "encoder_lora_rank", "encoder_lora_alpha",
    "encoder_lora_targets", "transfer_lora_rank", "transfer_lora_alpha", "transfer_lora_targets", "memory_rope",
    "memory_rope_factor", "estimator", "window", "seq_len", "sampler"};

// The checkpoint to continue from (--resume auto | DIR), after checking its config against this run's.
std::optional<std::string> resume_checkpoint(const std::string& resume, const std::string& out_dir,
                                             const std::string& config_text, std::ostream& log) {
  if (resume.empty()) return std::nullopt;
  std::optional<std::string> dir;
  if (resume == "auto") {
    if (out_dir.empty()) throw OptionError("--resume auto needs out_dir (where the run's checkpoints/ are)");
    trainer::CheckpointStore store((std::filesystem::path(out_dir) / "checkpoints").string(), {});
    dir = store.find_latest(log);
    if (!dir) {
      log << "resume: no complete checkpoint in " << store.root() << "; starting fresh\n";
      return std::nullopt;
    }
  } else {
    dir = resume;
  }
  trainer::verify_checkpoint(*dir);
  const auto saved_path = (std::filesystem::path(*dir) / "config.ini").string();
  std::ifstream saved(saved_path);
  if (!saved) throw trainer::CheckpointError(saved_path + ": cannot open; the checkpoint has no config");
  const std::string saved_text((std::istreambuf_iterator<char>(saved)), {});
  std::vector<std::string> changed;
  const auto mismatched = trainer::compare_configs(saved_text, config_text, kResumeMustMatch, &changed);
  if (!mismatched.empty()) {
    std::string list;
    for (const auto& m : mismatched) list += "\n  " + m;
    throw OptionError(*dir + ": the checkpoint was written by a run with other model or data settings (saved -> "
                      "now):" + list + "\nuse the same values to resume, or start a new run in another out_dir");
  }
  for (const auto& line : changed) log << "resume: changed " << line << "\n";
  return dir;
}

}  // namespace

int train_command(const std::vector<std::string>& args) {
  TrainInput in;
  auto& c = in.config;
  Schema schema("train", "Fine-tune the memory compressor (encoder LoRA, transfer LoRA, <mem>) of a frozen base model");
  add_model_options(schema, in.base, "base model (HF directory or .gguf), frozen");
  add_memory_options(schema, in.memory);
  schema.add("data", &in.data, "token store directory (uio prepare) with train and held-out documents")
      .add("seq_len", &in.seq_len, "tokens per training document (a multiple of segment_len)")
      .add("sampler", &in.sampler, "long_only (windows of long documents) or join (documents joined with EOS)")
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
      .add("schedule", &c.schedule.kind, "learning rate after warmup: cosine or constant")
      .add("warmup_steps", &c.schedule.warmup_steps, "linear warmup steps")
      .add("min_lr_ratio", &c.schedule.min_lr_ratio, "cosine: final learning rate as a fraction of lr")
      .add("steps", &c.steps, "optimiser steps")
      .add("accumulation", &c.accumulation, "documents per optimiser step (gradient accumulation)")
      .add("log_every", &c.log_every, "steps between log lines and metrics records")
      .add("val_every", &c.val_every, "steps between held-out evaluations (0: before and after training only)")
      .add("val_documents", &in.val_documents, "held-out documents (of seq_len tokens) to evaluate on")
      .add("max_bad_steps", &c.max_bad_steps, "non-finite steps in a row that stop the run")
      .add("out_dir", &c.out_dir, "where metrics.jsonl, config.ini, checkpoints/ and the trained compressor go")
      .add("checkpoint_every", &c.checkpoint_every, "steps between checkpoints (0: at the end and on SIGINT/SIGTERM only)")
      .add("keep_checkpoints", &c.checkpoints.keep_last, "newest complete checkpoints kept")
      .add("keep_checkpoint_every", &c.checkpoints.keep_every,
           "also keep every checkpoint whose step is a multiple of this (0: none); a file named 'keep' in a "
           "checkpoint directory keeps it too")
      .add("resume", &in.resume, "continue a run: 'auto' (the newest complete checkpoint in out_dir, or start "
                                 "fresh when there is none) or a checkpoint directory")
      .add("master_addr", &in.master_addr, "data parallel: rendezvous host (empty: MASTER_ADDR; docs/distributed.md)")
      .add("master_port", &in.master_port, "data parallel: rendezvous port (0: MASTER_PORT, else 29500)")
      .add("dist_timeout_s", &in.dist_timeout_s,
           "data parallel: seconds a collective may wait for the other ranks before the job stops with an error")
      .add("check_every", &c.check_every, "data parallel: steps between checks that all ranks hold the same weights")
      .required("data");
  if (!schema.parse(args, std::cout)) return 0;
  // Data parallel: this process's rank from torchrun's or Slurm's environment (a world of one without).
  const auto process = trainer::process_info_from_env(in.master_addr, in.master_port);
  std::ostream silent(nullptr);
  std::ostream& out = process.rank == 0 ? std::cout : silent;  // rank 0 speaks for the job
  c.config_text = schema.to_ini();
  const auto checkpoint = resume_checkpoint(in.resume, c.out_dir, c.config_text, out);
  c.estimator.kind = optim::parse_estimator_kind(in.estimator);
  c.estimator.seed = static_cast<uint64_t>(in.seed);
  const auto memory_options = resolve_memory_options(in.memory);
  const int64_t l = memory_options.segment_len;
  if (in.seq_len < l || in.seq_len % l != 0)
    throw OptionError("seq_len " + std::to_string(in.seq_len) + " must be a positive multiple of segment_len " +
                      std::to_string(l));
  if (in.val_documents < 0) throw OptionError("val_documents must be >= 0");

  if (in.dist_timeout_s <= 0) throw OptionError("dist_timeout_s must be > 0");
  auto load = load_options(in.base);
  if (load.device.is_cuda() && process.world_size > 1)  // one process per GPU, bound to its local device
    load.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(process.local_rank));
  model::bind_device(load.device);
  trainer::Communicator comm(process, load.device,
                             std::chrono::milliseconds(static_cast<int64_t>(in.dist_timeout_s * 1000)));
  auto loaded = model::load_model(in.base.model, load);
  auto store = std::make_shared<const data::TokenStore>(in.data);
  if (store->meta().vocab_size > loaded.config.vocab_size)
    throw OptionError(in.data + ": the token store's vocabulary (" + std::to_string(store->meta().vocab_size) +
                      " ids) is larger than the model's (" + std::to_string(loaded.config.vocab_size) +
                      "); prepare the store with this model's tokenizer (uio prepare --tokenizer " + in.base.model + ")");
  data::SamplerOptions so;
  so.seq_len = in.seq_len, so.mode = data::parse_sampler_mode(in.sampler), so.seed = static_cast<uint64_t>(in.seed);
  so.rank = process.rank, so.world_size = process.world_size;  // each rank its own share of the documents
  data::SamplerSource documents(store, so);
  std::vector<torch::Tensor> validation;
  if (in.val_documents > 0) {
    auto vo = so;
    vo.rank = 0, vo.world_size = 1;  // every rank knows every held-out document (the trainer shares them out)
    vo.split = data::Split::heldout;
    data::Sampler heldout(*store, vo);
    const int64_t count = std::min(in.val_documents, heldout.sequences_per_epoch());
    for (int64_t i = 0; i < count; ++i) validation.push_back(heldout.next().tokens);
  }

  c.seed = static_cast<uint64_t>(in.seed);
  torch::manual_seed(c.seed);
  model::MemoryCompressor compressor(loaded.config, memory_options, model::eos_memory_init(loaded.model));
  out << "train: " << loaded.config.architecture << " from " << in.base.model << " (" << in.base.dtype << " on "
            << load.device << "), l = " << l << ", M = " << memory_options.num_memory_tokens << ", "
            << in.seq_len / l << " segments per document, estimator " << in.estimator << " (S = " << c.estimator.window
            << ", chunk " << c.estimator.chunk << "), " << c.steps << " steps x " << c.accumulation << " documents"
            << (process.world_size > 1 ? " x " + std::to_string(process.world_size) + " ranks (" + process.launcher + ")" : "")
            << "\n";
  trainer::Trainer trainer(c, loaded.model, compressor, model::identify(in.base.model, loaded.config), documents,
                           validation, &comm);
  if (checkpoint) {
    trainer.restore(*checkpoint, out);
    out << "resume: from " << *checkpoint << " (step " << trainer.steps_done() << " of " << c.steps << ")\n";
  }
  trainer::install_stop_handlers();
  auto result = trainer.run(std::cout);
  if (result.stopped) return 0;
  out << "train: " << result.steps << " steps (" << result.skipped << " skipped), last loss " << result.last_loss
      << "\n";
  if (!validation.empty()) {
    out << "held-out perplexity after the first segment (context longer than one segment):\n"
              << "  base model truncated to one segment  " << result.after.truncated.perplexity(1) << "\n"
              << "  with memory, before training         " << result.before.memory.perplexity(1) << "\n"
              << "  with memory, after training          " << result.after.memory.perplexity(1) << "\n";
  }
  return 0;
}

}  // namespace uio::cli
