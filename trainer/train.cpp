// trainer/train.cpp — the training loop.
#include "trainer/train.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include <ATen/Context.h>
#include <torch/cuda.h>

#include "data/progress.h"
#include "model/device_stats.h"
#include "model/safetensors.h"
#include "trainer/stop_signal.h"

namespace uio::trainer {
namespace {

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

std::string duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  std::ostringstream out;
  if (s >= 3600) out << s / 3600 << "h" << std::setw(2) << std::setfill('0') << (s % 3600) / 60 << "m";
  else if (s >= 60) out << s / 60 << "m" << std::setw(2) << std::setfill('0') << s % 60 << "s";
  else out << s << "s";
  return out.str();
}

nlohmann::json perplexity_json(const Perplexity& p) {
  auto side = [](const SegmentScores& s) {
    return nlohmann::json{{"ppl", s.perplexity()}, {"ppl_after_first_segment", s.perplexity(1)},
                          {"ppl_by_segment", s.perplexity_by_segment()}};
  };
  return {{"memory", side(p.memory)}, {"truncated", side(p.truncated)}};
}

}  // namespace

Trainer::Trainer(TrainConfig config, model::CausalLM base, model::MemoryCompressor compressor,
                 model::BaseIdentity identity, data::DocumentSource& documents, std::vector<torch::Tensor> validation)
    : config_(std::move(config)),
      base_(std::move(base)),
      compressor_(std::move(compressor)),
      identity_(std::move(identity)),
      documents_(documents),
      validation_(std::move(validation)),
      estimator_(config_.estimator),
      device_(base_->output_weight().device()) {
  TORCH_CHECK(config_.steps >= 1, "train: steps must be >= 1, got ", config_.steps);
  TORCH_CHECK(config_.accumulation >= 1, "train: accumulation must be >= 1, got ", config_.accumulation);
  TORCH_CHECK(config_.max_bad_steps >= 1, "train: max_bad_steps must be >= 1, got ", config_.max_bad_steps);
  config_.schedule.total_steps = config_.steps;
  optim::check_schedule(config_.schedule);
  // The base model is frozen: no gradients are computed for it, its weights never change.
  for (auto& p : base_->parameters()) p.requires_grad_(false);
  base_->eval();
  compressor_->train();
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (auto& item : compressor_->named_parameters()) named.emplace_back(item.key(), item.value());
  optimizer_ = std::make_unique<optim::Optimizer>(named, config_.optimizer);
  if (!config_.out_dir.empty()) {
    std::filesystem::create_directories(config_.out_dir);
    metrics_ = std::make_unique<std::ofstream>(std::filesystem::path(config_.out_dir) / "metrics.jsonl", std::ios::app);
    TORCH_CHECK(*metrics_, "train: cannot write ", config_.out_dir, "/metrics.jsonl");
    if (!config_.config_text.empty()) std::ofstream(std::filesystem::path(config_.out_dir) / "config.ini") << config_.config_text;
  }
}

StepResult Trainer::step() {
  const auto t0 = std::chrono::steady_clock::now();
  StepResult r;
  r.step = step_ + 1;
  r.lr = optim::learning_rate(config_.schedule, config_.optimizer.lr, step_);
  optimizer_->zero_grad();
  std::vector<torch::Tensor> docs;
  for (int64_t a = 0; a < config_.accumulation; ++a) {
    docs.push_back(documents_.next().to(device_));
    r.input_tokens += docs.back().size(0);
    r.predictions += docs.back().size(0) - 1;
  }
  // The step's loss is the mean over every prediction of its documents.
  const double scale = 1.0 / static_cast<double>(r.predictions);
  for (auto& doc : docs) {
    auto d = estimator_.backward(base_, compressor_, doc, scale);
    if (r.segment_loss.size() < d.segment_loss.size())
      r.segment_loss.resize(d.segment_loss.size(), 0.0), r.segment_tokens.resize(d.segment_loss.size(), 0);
    for (size_t t = 0; t < d.segment_loss.size(); ++t)
      r.segment_loss[t] += d.segment_loss[t], r.segment_tokens[t] += d.segment_tokens[t];
    r.loss += d.loss();
  }
  r.loss /= static_cast<double>(r.predictions);
  r.grad_norm = optimizer_->grad_norm();
  r.finite = std::isfinite(r.loss) && std::isfinite(r.grad_norm);
  if (r.finite) optimizer_->step(r.lr, r.grad_norm);
  else ++skipped_;
  optimizer_->zero_grad();  // a skipped step leaves nothing behind either
  ++step_;
  input_tokens_ += r.input_tokens;
  model::synchronize(device_);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

void Trainer::write_metrics(const StepResult& r, int64_t skipped, double elapsed) {
  std::vector<double> by_segment;
  for (size_t t = 0; t < r.segment_loss.size(); ++t)
    by_segment.push_back(r.segment_loss[t] / static_cast<double>(std::max<int64_t>(1, r.segment_tokens[t])));
  *metrics_ << nlohmann::json{{"step", r.step},
                              {"loss", r.loss},
                              {"segment_loss", by_segment},
                              {"lr", r.lr},
                              {"grad_norm", r.grad_norm},
                              {"tokens_per_s", static_cast<double>(r.input_tokens) / r.seconds},
                              {"peak_memory_gb", static_cast<double>(model::peak_memory_bytes(device_)) / 1e9},
                              {"skipped", skipped},
                              {"elapsed_s", elapsed}}
                   .dump()
            << "\n" << std::flush;
}

Perplexity Trainer::validate(std::ostream& log, int64_t step, const char* when) {
  auto p = evaluate_perplexity(base_, compressor_, validation_, config_.estimator.chunk);
  log << "validation " << when << " (step " << step << ", " << validation_.size() << " held-out documents): "
      << "perplexity with memory " << fixed(p.memory.perplexity(), 3) << ", base model truncated to one segment "
      << fixed(p.truncated.perplexity(), 3) << "; after the first segment " << fixed(p.memory.perplexity(1), 3)
      << " vs " << fixed(p.truncated.perplexity(1), 3) << std::endl;
  if (metrics_) *metrics_ << nlohmann::json{{"step", step}, {"validation", perplexity_json(p)}}.dump() << "\n" << std::flush;
  return p;
}

namespace {

// Every random generator whose draws a step makes: the CPU's (LoRA dropout on the CPU, initialisation)
// and each CUDA device's (dropout on a GPU). The reservoir's and the data's are saved separately.
std::vector<std::pair<std::string, at::Generator>> generators() {
  std::vector<std::pair<std::string, at::Generator>> out{{"cpu", at::globalContext().defaultGenerator(torch::kCPU)}};
  for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i)
    out.emplace_back("cuda." + std::to_string(i),
                     at::globalContext().defaultGenerator(torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(i))));
  return out;
}

}  // namespace

std::string Trainer::save_checkpoint() {
  TORCH_CHECK(!config_.out_dir.empty(), "train: checkpoints need out_dir");
  CheckpointStore store((std::filesystem::path(config_.out_dir) / "checkpoints").string(), config_.checkpoints);
  nlohmann::json state = {{"format", "uio-checkpoint"},
                          {"version", 1},
                          {"input_tokens", input_tokens_},
                          {"skipped", skipped_},
                          {"optimizer_steps", optimizer_->steps()},
                          {"reservoir_rng", estimator_.rng_state()},
                          {"data", nlohmann::json::parse(documents_.state_json())},
                          {"base_model", identity_.path}};
  return store.save(step_, state, [&](const std::string& dir) {
    namespace fs = std::filesystem;
    checkpoint_fault_point("uio_memory.safetensors");
    model::save_memory(dir, compressor_, identity_);
    checkpoint_fault_point("optimizer.safetensors");
    std::vector<std::pair<std::string, torch::Tensor>> optimizer_state;
    for (auto& [name, t] : optimizer_->state()) optimizer_state.emplace_back(name, t);
    model::write_safetensors((fs::path(dir) / "optimizer.safetensors").string(), optimizer_state,
                             {{"steps", std::to_string(optimizer_->steps())}});
    checkpoint_fault_point("rng.safetensors");
    std::vector<std::pair<std::string, torch::Tensor>> rng;
    for (auto& [name, gen] : generators()) rng.emplace_back(name, gen.get_state());
    model::write_safetensors((fs::path(dir) / "rng.safetensors").string(), rng);
    checkpoint_fault_point("config.ini");
    std::ofstream(fs::path(dir) / "config.ini") << config_.config_text;
  });
}

void Trainer::restore(const std::string& dir) {
  namespace fs = std::filesystem;
  const auto state = verify_checkpoint(dir);
  try {
    if (state.at("format") != "uio-checkpoint")
      throw CheckpointError(dir + "/trainer_state.json: format is " + state.at("format").dump() + ", not uio-checkpoint");
    const auto saved = model::read_memory_config(dir);
    model::check_same_base(saved.base, identity_, dir + "/uio_config.json");
    const auto& have = compressor_->options();
    if (saved.options.segment_len != have.segment_len || saved.options.num_memory_tokens != have.num_memory_tokens)
      throw CheckpointError(dir + "/uio_config.json: the checkpoint has l = " + std::to_string(saved.options.segment_len) +
                            ", M = " + std::to_string(saved.options.num_memory_tokens) + "; this run has l = " +
                            std::to_string(have.segment_len) + ", M = " + std::to_string(have.num_memory_tokens));
    model::load_memory_weights(dir, compressor_);
    model::SafetensorsFile opt((fs::path(dir) / "optimizer.safetensors").string());
    std::map<std::string, torch::Tensor> optimizer_state;
    for (const auto& info : opt.tensors()) optimizer_state[info.name] = opt.tensor(info.name);
    optimizer_->load_state(optimizer_state, state.at("optimizer_steps").get<int64_t>());
    model::SafetensorsFile rng((fs::path(dir) / "rng.safetensors").string());
    for (auto& [name, gen] : generators()) {
      if (!rng.contains(name)) {
        if (name != "cpu") continue;  // a checkpoint from a machine with fewer GPUs: their draws start fresh
        throw CheckpointError(dir + "/rng.safetensors: no 'cpu' generator state");
      }
      gen.set_state(rng.tensor(name).clone());
    }
    documents_.restore(state.at("data").dump());
    estimator_.set_rng_state(state.at("reservoir_rng").get<uint64_t>());
    step_ = state.at("step").get<int64_t>();
    skipped_ = state.at("skipped").get<int64_t>();
    input_tokens_ = state.at("input_tokens").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(dir + "/trainer_state.json: missing or wrongly typed key (" + e.what() + ")");
  }
}

TrainResult Trainer::run(std::ostream& log) {
  TrainResult result;
  const bool has_validation = !validation_.empty();
  const bool checkpoints = !config_.out_dir.empty();
  if (has_validation && step_ == 0) result.before = validate(log, step_, "before training");
  const bool interactive = data::ProgressBar::is_terminal(log);
  const int64_t first = step_;
  data::ProgressBar bar(log, "train", config_.steps - first, "steps", interactive);
  const auto start = std::chrono::steady_clock::now();
  int64_t bad_in_row = 0;
  model::reset_peak_memory(device_);
  while (step_ < config_.steps) {
    const auto r = step();
    if (r.finite) {
      bad_in_row = 0;
      result.last_loss = r.loss;
    } else {
      // A non-finite loss or gradient: the step was skipped (no update), is counted, and reported.
      log << "step " << r.step << ": non-finite " << (std::isfinite(r.loss) ? "gradient" : "loss") << " (loss "
          << r.loss << ", grad norm " << r.grad_norm << "); step skipped" << std::endl;
      if (++bad_in_row >= config_.max_bad_steps)
        throw std::runtime_error("train: " + std::to_string(bad_in_row) + " steps in a row had a non-finite loss or "
                                 "gradient (last at step " + std::to_string(r.step) + "); lower optimizer lr (now " +
                                 fixed(config_.optimizer.lr, 6) + "), set grad_clip, or use dtype = float32");
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = static_cast<double>(r.input_tokens) / r.seconds;
    const bool log_now = r.step % config_.log_every == 0 || r.step == config_.steps;
    if (metrics_ && (log_now || !r.finite)) write_metrics(r, skipped_, elapsed);
    const std::string status = "loss " + fixed(r.loss, 4) + " | " + fixed(rate, 0) + " tok/s | lr " + fixed(r.lr * 1e4, 3) + "e-4";
    if (interactive) {
      bar.update(r.step - first, status);
    } else if (log_now) {
      const double eta = elapsed / static_cast<double>(r.step - first) * static_cast<double>(config_.steps - r.step);
      log << "step " << r.step << "/" << config_.steps << " | " << status << " | grad norm " << fixed(r.grad_norm, 3)
          << " | elapsed " << duration(elapsed) << " | eta " << duration(eta) << std::endl;
    }
    if (stop_requested()) {
      if (interactive) bar.finish();
      result.stopped = true;
      if (checkpoints) result.last_checkpoint = save_checkpoint();
      log << "train: stopped by a signal after step " << step_
          << (checkpoints ? "; checkpoint " + result.last_checkpoint + " written; continue with --resume auto"
                          : " (no out_dir: nothing saved)")
          << std::endl;
      break;
    }
    if (checkpoints && config_.checkpoint_every > 0 && r.step % config_.checkpoint_every == 0 && r.step < config_.steps) {
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
    model::save_memory(dir, compressor_, identity_);
    log << "checkpoint " << result.last_checkpoint << "; trained compressor written to " << dir
        << " (use it with: uio generate --memory " << dir << ")\n";
  }
  return result;
}

}  // namespace uio::trainer
