// trainer/train.cpp — the training loop.
#include "trainer/train.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <sstream>

#include "data/progress.h"
#include "model/device_stats.h"
#include "data/phase.h"
#include "data/format/atomic_file.h"
#include "data/format/safetensors.h"
#include "trainer/rng_state.h"
#include "trainer/stop_signal.h"

namespace uio::trainer {
namespace {

// Ranks > 0 draw the reservoir (and, below, dropout) from their own streams: seed + rank.
optim::EstimatorOptions for_rank(optim::EstimatorOptions options, const Communicator* comm) {
  if (comm) options.seed += static_cast<uint64_t>(comm->rank());
  return options;
}

void at_least(const char* key, int64_t value, int64_t least, const char* meaning) {
  if (value < least)
    throw std::invalid_argument(std::string(key) + " must be >= " + std::to_string(least) + " (" + meaning + "), got " +
                                std::to_string(value));
}

void in_unit_interval(const char* key, double value) {
  if (!(value >= 0 && value < 1))
    throw std::invalid_argument(std::string(key) + " must lie in [0, 1), got " + std::to_string(value));
}

}  // namespace

void check_train_config(const TrainConfig& c) {
  at_least("steps", c.steps, 1, "optimiser steps");
  at_least("accumulation", c.accumulation, 1, "documents per optimiser step");
  at_least("log_every", c.log_every, 1, "steps between log lines");
  at_least("val_every", c.val_every, 0, "0: before and after training only");
  at_least("val_chunk", c.val_chunk, 1, "segments per batched call");
  at_least("max_bad_steps", c.max_bad_steps, 1, "non-finite steps in a row that stop the run");
  at_least("checkpoint_every", c.checkpoint_every, 0, "0: at the end and on a signal only");
  at_least("check_every", c.check_every, 0, "0: never");
  at_least("window", c.estimator.window, 1, "S, memories whose encoder keeps its graph");
  at_least("chunk", c.estimator.chunk, 1, "segments per batched call");
  check_checkpoint_options(c.checkpoints);
  const auto& o = c.optimizer;
  if (!(o.lr > 0 && o.lr <= 1))  // AdamW moves each weight by about lr per step: above 1 it only diverges
    throw std::invalid_argument("lr must lie in (0, 1] (1e-4 to 1e-3 is usual), got " + std::to_string(o.lr));
  in_unit_interval("beta1", o.beta1);
  in_unit_interval("beta2", o.beta2);
  // eps = 0 divides 0 by 0 for a parameter whose gradient is still zero (a LoRA A before its B moves).
  if (!(o.eps > 0) || !std::isfinite(o.eps))
    throw std::invalid_argument(
        "eps must be a finite number > 0 (AdamW divides by sqrt(v) + eps; 1e-8 is usual), "
        "got " +
        std::to_string(o.eps));
  if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay))
    throw std::invalid_argument("weight_decay must be >= 0, got " + std::to_string(o.weight_decay));
  if (!std::isfinite(o.grad_clip)) throw std::invalid_argument("grad_clip must be finite (<= 0: no clipping)");
  at_least("warmup_steps", c.schedule.warmup_steps, 0, "linear warmup");
  if (!(c.schedule.min_lr_ratio >= 0 && c.schedule.min_lr_ratio <= 1))
    throw std::invalid_argument("min_lr_ratio must lie in [0, 1], got " + std::to_string(c.schedule.min_lr_ratio));
}

Trainer::Trainer(TrainConfig config, model::CausalLM base, model::MemoryCompressor compressor,
                 model::BaseIdentity identity, data::DocumentSource& documents, std::vector<torch::Tensor> validation,
                 Communicator* comm)
    : config_(std::move(config)),
      base_(std::move(base)),
      compressor_(std::move(compressor)),
      identity_(std::move(identity)),
      documents_(documents),
      validation_(std::move(validation)),
      estimator_(for_rank(config_.estimator, comm)),
      device_(base_->output_weight().device()),
      comm_(comm && comm->active() ? comm : nullptr) {
  check_train_config(config_);
  config_.schedule.total_steps = config_.steps;
  optim::check_schedule(config_.schedule);
  // The base model is frozen: no gradients are computed for it, its weights never change.
  for (auto& p : base_->parameters()) p.requires_grad_(false);
  base_->eval();
  compressor_->train();
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (auto& item : compressor_->named_parameters()) named.emplace_back(item.key(), item.value());
  auto optimizer = config_.optimizer;
  optimizer.fused = base_->kernels() == model::Kernels::fused;  // the reference kernels: the reference update
  optimizer_ = std::make_unique<optim::Optimizer>(named, optimizer);
  if (comm_) {
    // Every rank starts from rank 0's weights, then draws dropout from its own stream.
    std::vector<torch::Tensor> params;
    for (auto& p : compressor_->parameters()) params.push_back(p.detach());
    comm_->broadcast(params);
    if (comm_->rank() > 0) torch::manual_seed(config_.seed + static_cast<uint64_t>(comm_->rank()));
  }
  if (!config_.out_dir.empty() && is_root()) {
    std::filesystem::create_directories(config_.out_dir);
    metrics_ = std::make_unique<MetricsLog>((std::filesystem::path(config_.out_dir) / "metrics.jsonl").string());
    if (!config_.config_text.empty())
      format::write_file_atomic((std::filesystem::path(config_.out_dir) / "config.ini").string(), config_.config_text);
  }
}

Trainer::UndoPoint Trainer::undo_point() {
  optimizer_->remember();
  return {rank_state()};
}

void Trainer::undo(const UndoPoint& point) {
  optimizer_->restore();
  apply_rank_state(point.rank, "the state before the step");
}

StepResult Trainer::step() {
  const auto t0 = std::chrono::steady_clock::now();
  const auto before = undo_point();
  StepResult r;
  r.step = step_ + 1;
  r.lr = optim::learning_rate(config_.schedule, config_.optimizer.lr, step_);
  optimizer_->zero_grad();
  // The step's loss is the mean over every document of every rank of that document's mean loss per counted
  // prediction (every prediction, or those a loss mask keeps): each document weighs the same, however
  // few answer tokens a synthetic one scores. Documents of natural text all count n - 1 predictions, so
  // there it is the mean over every prediction.
  const double documents = static_cast<double>(config_.accumulation * world_size());
  const auto kinds = documents_.kinds().size();
  r.kind_loss.assign(kinds, 0.0), r.kind_documents.assign(kinds, 0);
  for (int64_t a = 0; a < config_.accumulation; ++a) {
    auto doc = documents_.next();
    const int64_t kind = documents_.last_kind();
    // The count comes from the mask where the document was made (the host), before it moves: no sync.
    const int64_t counted = doc.loss_mask.defined()
                                ? doc.loss_mask.narrow(0, 1, doc.ids.size(0) - 1).sum().item<int64_t>()
                                : doc.ids.size(0) - 1;
    auto ids = doc.ids.to(device_);
    const auto& mask = doc.loss_mask;  // stays on the host: the scored document checks it there, then moves it
    TORCH_CHECK(counted > 0, "train: a training document's loss mask keeps no prediction");
    auto d = estimator_.backward(base_, compressor_, ids, 1.0 / (static_cast<double>(counted) * documents), mask);
    if (r.segment_loss.size() < d.segment_loss.size())
      r.segment_loss.resize(d.segment_loss.size(), 0.0), r.segment_tokens.resize(d.segment_loss.size(), 0);
    for (size_t t = 0; t < d.segment_loss.size(); ++t)
      r.segment_loss[t] += d.segment_loss[t], r.segment_tokens[t] += d.segment_tokens[t];
    r.loss += d.loss() / static_cast<double>(counted);
    if (kind >= 0 && static_cast<size_t>(kind) < kinds)
      r.kind_loss[static_cast<size_t>(kind)] += d.loss() / static_cast<double>(counted),
          ++r.kind_documents[static_cast<size_t>(kind)];
    r.input_tokens += ids.size(0);
    r.predictions += counted;
  }
  r.stop = stop_requested();
  if (comm_) {
    data::Phase phase("uio::all_reduce");
    // One small all-reduce for the statistics, the stop request and which parameters have gradients
    // anywhere; then the gradients themselves, bucketed (a parameter without one on any rank keeps none).
    auto params = compressor_->parameters();
    std::vector<int64_t> has_grad;
    for (auto& p : params) has_grad.push_back(p.grad().defined() ? 1 : 0);
    SumReduction stats;
    stats.add(r.loss).add(r.predictions).add(r.input_tokens).add_any(r.stop);
    stats.add(r.segment_loss).add(r.segment_tokens).add(r.kind_loss).add(r.kind_documents).add(has_grad);
    stats.run(*comm_);
    std::vector<torch::Tensor> grads;
    for (size_t i = 0; i < params.size(); ++i) {
      if (has_grad[i] == 0) continue;
      if (!params[i].grad().defined()) params[i].mutable_grad() = torch::zeros_like(params[i]);
      grads.push_back(params[i].grad());
    }
    comm_->all_reduce_sum(grads);
  }
  r.loss /= documents;
  {
    data::Phase phase("uio::optimizer");
    r.grad_norm = optimizer_->grad_norm();
    r.finite = std::isfinite(r.loss) && std::isfinite(r.grad_norm);
    try {
      if (r.finite)
        optimizer_->step(r.lr, r.grad_norm);
      else
        ++skipped_;
    } catch (...) {  // an update that fails half-way leaves nothing behind
      undo(before);
      throw;
    }
    optimizer_->zero_grad();  // a skipped step leaves nothing behind either
  }
  if (r.finite && !optimizer_->parameters_finite()) {  // every rank holds the same weights, so all of them see it
    undo(before);
    r.diverged = true;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }
  ++step_;
  input_tokens_ += r.input_tokens;
  if (comm_ && config_.check_every > 0 && step_ % config_.check_every == 0) check_replicas_agree();
  model::synchronize(device_);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

void Trainer::check_replicas_agree() {
  // A cheap fingerprint of the weights (float64 sum and sum of squares, exact bits) from every rank.
  double sum = 0, squares = 0;
  for (auto& p : compressor_->parameters()) {
    auto d = p.detach().to(torch::kDouble);
    sum += d.sum().item<double>(), squares += d.pow(2).sum().item<double>();
  }
  std::ostringstream mine;
  mine << std::hexfloat << sum << " " << squares;
  const auto all = comm_->all_gather(mine.str());
  for (size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0])
      throw DistributedError("train: after step " + std::to_string(step_) + " rank " + std::to_string(r) +
                             " holds other weights than rank 0 (checksums " + all[r] + " vs " + all[0] +
                             "); the replicas diverged, which is a bug: please report it with the config");
}

Perplexity Trainer::validate(std::ostream& log, int64_t step, const char* when) {
  // Each rank scores its share of the held-out documents; the sums are added over ranks.
  std::vector<torch::Tensor> mine;
  for (size_t i = 0; i < validation_.size(); ++i)
    if (!comm_ || static_cast<int>(i % static_cast<size_t>(comm_->world_size())) == comm_->rank())
      mine.push_back(validation_[i]);
  auto p = evaluate_perplexity(base_, compressor_, mine, config_.val_chunk);
  if (comm_) {
    SumReduction sums;
    for (auto* s : {&p.memory, &p.truncated}) sums.add(s->loss).add(s->tokens);
    sums.run(*comm_);
  }
  if (is_root()) {
    log << "validation " << when << " (step " << step << ", " << validation_.size() << " held-out documents): "
        << "perplexity with memory " << fixed(p.memory.perplexity(), 3) << ", base model truncated to one segment "
        << fixed(p.truncated.perplexity(), 3) << "; after the first segment " << fixed(p.memory.perplexity(1), 3)
        << " vs " << fixed(p.truncated.perplexity(1), 3) << std::endl;
  }
  if (metrics_) metrics_->validation(step, p);
  return p;
}

RankState Trainer::rank_state() const {
  return {nlohmann::json::parse(documents_.state_json()), estimator_.rng_state(), capture_generators()};
}

void Trainer::restore_data_position(const nlohmann::json& data, const std::string& where) {
  try {
    documents_.restore(data.dump());
  } catch (const std::exception& e) {
    throw CheckpointError(where + ": the data position does not fit this run's data (" + e.what() + ")");
  }
}

void Trainer::apply_rank_state(const RankState& state, const std::string& where) {
  restore_data_position(state.data, where);
  estimator_.set_rng_state(state.reservoir_rng);
  restore_generators(state.generators, where);
}

std::string Trainer::save_checkpoint() {
  TORCH_CHECK(!config_.out_dir.empty(), "train: checkpoints need out_dir");
  // Every rank's generators and data position travel to rank 0, which writes the checkpoint.
  const auto mine = rank_state_json(rank_state()).dump();
  const auto ranks = comm_ ? comm_->all_gather(mine) : std::vector<std::string>{mine};
  const auto root = (std::filesystem::path(config_.out_dir) / "checkpoints").string();
  std::string dir, failure;
  if (is_root()) {
    try {
      CheckpointStore store(root, config_.checkpoints);
      TrainState state;
      state.step = step_, state.skipped = skipped_, state.input_tokens = input_tokens_;
      state.optimizer_steps = optimizer_->steps(), state.world_size = world_size(), state.base_model = identity_.path;
      for (const auto& r : ranks) state.ranks.push_back(rank_state_from_json(nlohmann::json::parse(r), "rank state"));
      dir = store.save(step_, state.to_json(), [&](const std::string& tmp) {
        namespace fs = std::filesystem;
        checkpoint_fault_point("uio_memory.safetensors");
        model::save_memory(tmp, compressor_, identity_);
        checkpoint_fault_point("optimizer.safetensors");
        std::vector<std::pair<std::string, torch::Tensor>> optimizer_state;
        for (auto& [name, t] : optimizer_->state()) optimizer_state.emplace_back(name, t);
        format::write_safetensors((fs::path(tmp) / "optimizer.safetensors").string(), optimizer_state,
                                  {{"steps", std::to_string(optimizer_->steps())}});
        checkpoint_fault_point("config.ini");
        format::write_file_atomic((fs::path(tmp) / "config.ini").string(), config_.config_text);
      });
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  if (comm_) {  // every rank learns whether rank 0 succeeded, so none runs on alone
    const auto failed = comm_->all_reduce_sum(std::vector<double>{failure.empty() ? 0.0 : 1.0});
    if (failed[0] > 0 && !is_root())
      throw CheckpointError("rank " + std::to_string(comm_->rank()) + ": rank 0 failed to write checkpoint step " +
                            std::to_string(step_) + " (rank 0 reports why); the previous checkpoint is intact");
  }
  if (!failure.empty()) throw CheckpointError(failure);
  if (!is_root()) {
    std::ostringstream name;
    name << "step-" << std::setw(8) << std::setfill('0') << step_;
    dir = (std::filesystem::path(root) / name.str()).string();
  }
  return dir;
}

void Trainer::restore(const std::string& dir, std::ostream& log) {
  namespace fs = std::filesystem;
  const auto where = (fs::path(dir) / "trainer_state.json").string();
  const auto state = read_train_state(dir);
  const auto saved = model::read_memory_config(dir);
  model::check_same_base(saved.base, identity_, dir + "/uio_config.json");
  const auto& have = compressor_->options();
  if (saved.options.segment_len != have.segment_len || saved.options.num_memory_tokens != have.num_memory_tokens)
    throw CheckpointError(
        dir + "/uio_config.json: the checkpoint has l = " + std::to_string(saved.options.segment_len) +
        ", M = " + std::to_string(saved.options.num_memory_tokens) +
        "; this run has l = " + std::to_string(have.segment_len) + ", M = " + std::to_string(have.num_memory_tokens));
  model::load_memory_weights(dir, compressor_);
  format::SafetensorsFile opt((fs::path(dir) / "optimizer.safetensors").string());
  std::map<std::string, torch::Tensor> optimizer_state;
  for (const auto& info : opt.tensors()) optimizer_state[info.name] = opt.tensor(info.name);
  try {
    optimizer_->load_state(optimizer_state, state.optimizer_steps);
  } catch (const std::exception& e) {
    throw CheckpointError(opt.path() + ": " + e.what() + " (optimizer_steps " + std::to_string(state.optimizer_steps) +
                          " from " + where + ")");
  }
  const int rank = comm_ ? comm_->rank() : 0;
  if (state.world_size == world_size()) {
    apply_rank_state(state.ranks.at(static_cast<size_t>(rank)), where);
  } else {
    // The data position is global (every rank's sampler stands at the same place), so rank 0's serves;
    // the generators of other world sizes do not map onto this one's: they keep their fresh seeds.
    restore_data_position(state.ranks.at(0).data, where);
    if (is_root())
      log << "resume: warning: the checkpoint was written by " << state.world_size << " processes, this job has "
          << world_size() << "; training continues, but the data order and random draws differ from an "
          << "uninterrupted run\n";
  }
  step_ = state.step, skipped_ = state.skipped, input_tokens_ = state.input_tokens;
}

TrainResult Trainer::run(std::ostream& root_log) {
  std::ostream silent(nullptr);  // ranks other than 0 say nothing (their errors still throw)
  std::ostream& log = is_root() ? root_log : silent;
  TrainResult result;
  const bool has_validation = !validation_.empty();
  const bool checkpoints = !config_.out_dir.empty();
  if (has_validation && step_ == 0) result.before = validate(log, step_, "before training");
  const bool interactive = data::ProgressBar::is_terminal(log);
  const int64_t first = step_;
  data::ProgressBar bar(log, "train", config_.steps - first, "steps", interactive);
  const auto start = std::chrono::steady_clock::now();
  int64_t bad_in_row = 0;
  // Mean loss per kind of document (natural text, retrieval, auto-encoding) since the last logged step.
  const auto kinds = documents_.kinds();
  std::vector<double> kind_loss(kinds.size(), 0.0);
  std::vector<int64_t> kind_documents(kinds.size(), 0);
  model::reset_peak_memory(device_);
  while (step_ < config_.steps) {
    const auto r = step();
    if (r.diverged) {
      if (interactive) bar.finish();
      std::ostringstream settings;
      settings << "AdamW with lr " << r.lr << ", eps " << config_.optimizer.eps;
      const std::string kept = checkpoints ? "the state before it is saved as checkpoint " + save_checkpoint() +
                                                 " (continue with --resume auto once lr or eps is changed)"
                                           : "nothing was saved (no out_dir)";
      throw std::runtime_error("train: step " + std::to_string(r.step) +
                               " made the compressor's parameters "
                               "non-finite (" +
                               settings.str() + "); the step was undone and the run stopped; " + kept +
                               ". Lower lr, raise eps, or set grad_clip");
    }
    if (r.finite) {
      bad_in_row = 0;
      result.last_loss = r.loss;
    } else {
      // A non-finite loss or gradient: the step was skipped (no update), is counted, and reported.
      log << "step " << r.step << ": non-finite " << (std::isfinite(r.loss) ? "gradient" : "loss") << " (loss "
          << r.loss << ", grad norm " << r.grad_norm << "); step skipped" << std::endl;
      if (++bad_in_row >= config_.max_bad_steps)
        throw std::runtime_error("train: " + std::to_string(bad_in_row) +
                                 " steps in a row had a non-finite loss or "
                                 "gradient (last at step " +
                                 std::to_string(r.step) + "); lower optimizer lr (now " +
                                 fixed(config_.optimizer.lr, 6) + "), set grad_clip, or use dtype = float32");
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = static_cast<double>(r.input_tokens) / r.seconds;
    const bool log_now = r.step % config_.log_every == 0 || r.step == config_.steps;
    if (r.finite)
      for (size_t k = 0; k < kinds.size() && k < r.kind_loss.size(); ++k)
        kind_loss[k] += r.kind_loss[k], kind_documents[k] += r.kind_documents[k];
    std::vector<std::pair<std::string, double>> loss_by_kind;
    std::string by_kind;  // " | natural 2.3125, retrieval 0.8410"
    if (log_now) {
      for (size_t k = 0; k < kinds.size(); ++k) {
        if (kind_documents[k] == 0) continue;
        loss_by_kind.emplace_back(kinds[k], kind_loss[k] / static_cast<double>(kind_documents[k]));
        by_kind += (by_kind.empty() ? " | " : ", ") + kinds[k] + " " + fixed(loss_by_kind.back().second, 4);
      }
      std::fill(kind_loss.begin(), kind_loss.end(), 0.0), std::fill(kind_documents.begin(), kind_documents.end(), 0);
    }
    if (metrics_ && (log_now || !r.finite))
      metrics_->step(r, skipped_, elapsed, static_cast<double>(model::peak_memory_bytes(device_)) / 1e9, loss_by_kind);
    const std::string status =
        "loss " + fixed(r.loss, 4) + " | " + fixed(rate, 0) + " tok/s | lr " + scientific(r.lr, 3);
    if (interactive) {
      bar.update(r.step - first, status);
    } else if (log_now) {
      const double eta = elapsed / static_cast<double>(r.step - first) * static_cast<double>(config_.steps - r.step);
      log << "step " << r.step << "/" << config_.steps << " | " << status << " | grad norm " << fixed(r.grad_norm, 3)
          << " | elapsed " << duration(elapsed) << " | eta " << duration(eta) << by_kind << std::endl;
    }
    if (r.stop) {
      if (interactive) bar.finish();
      result.stopped = true;
      if (checkpoints) result.last_checkpoint = save_checkpoint();
      log << "train: stopped by a signal after step " << step_
          << (checkpoints ? "; checkpoint " + result.last_checkpoint + " written; continue with --resume auto"
                          : " (no out_dir: nothing saved)")
          << std::endl;
      break;
    }
    if (checkpoints && config_.checkpoint_every > 0 && r.step % config_.checkpoint_every == 0 &&
        r.step < config_.steps) {
      result.last_checkpoint = save_checkpoint();
      if (!interactive) log << "checkpoint " << result.last_checkpoint << std::endl;
    }
    if (has_validation && config_.val_every > 0 && r.step % config_.val_every == 0 && r.step < config_.steps)
      validate(log, r.step, "during training");
  }
  result.steps = step_, result.skipped = skipped_;
  if (result.stopped) return result;
  if (interactive) bar.finish();
  if (has_validation) result.after = validate(log, step_, "after training");
  if (checkpoints) {
    result.last_checkpoint = save_checkpoint();
    const auto dir = (std::filesystem::path(config_.out_dir) / "compressor").string();
    if (is_root()) model::save_memory(dir, compressor_, identity_);
    log << "checkpoint " << result.last_checkpoint << "; trained compressor written to " << dir
        << " (use it with: uio generate --memory " << dir << ")\n";
  }
  return result;
}

}  // namespace uio::trainer
