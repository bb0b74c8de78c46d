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

#include <ATen/Context.h>
#include <torch/cuda.h>

#include "data/progress.h"
#include "model/device_stats.h"
#include "model/phase.h"
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

namespace {

// Ranks > 0 draw the reservoir (and, below, dropout) from their own streams: seed + rank.
optim::EstimatorOptions for_rank(optim::EstimatorOptions options, const Communicator* comm) {
  if (comm) options.seed += static_cast<uint64_t>(comm->rank());
  return options;
}

std::string hex_of(const torch::Tensor& bytes) {
  static const char* digits = "0123456789abcdef";
  auto t = bytes.contiguous().to(torch::kCPU);
  std::string out;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const auto b = t.data_ptr<uint8_t>()[i];
    out += digits[b >> 4], out += digits[b & 15];
  }
  return out;
}

torch::Tensor bytes_of(const std::string& hex) {
  if (hex.size() % 2) throw CheckpointError("trainer_state.json: a generator state has an odd number of hex digits");
  auto t = torch::empty({static_cast<int64_t>(hex.size() / 2)}, torch::kByte);
  auto nibble = [&](char c) -> uint8_t {
    if (c >= '0' && c <= '9') return static_cast<uint8_t>(c - '0');
    if (c >= 'a' && c <= 'f') return static_cast<uint8_t>(c - 'a' + 10);
    throw CheckpointError("trainer_state.json: a generator state is not hex");
  };
  for (size_t i = 0; i < hex.size() / 2; ++i)
    t.data_ptr<uint8_t>()[i] = static_cast<uint8_t>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  return t;
}

// Every random generator whose draws a step makes: the CPU's (LoRA dropout on the CPU, initialisation)
// and each CUDA device's (dropout on a GPU). The reservoir's and the data's are saved beside them.
std::vector<std::pair<std::string, at::Generator>> generators() {
  std::vector<std::pair<std::string, at::Generator>> out{{"cpu", at::globalContext().defaultGenerator(torch::kCPU)}};
  for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i)
    out.emplace_back("cuda." + std::to_string(i),
                     at::globalContext().defaultGenerator(torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(i))));
  return out;
}

}  // namespace

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
  if (comm_) {
    // Every rank starts from rank 0's weights, then draws dropout from its own stream.
    std::vector<torch::Tensor> params;
    for (auto& p : compressor_->parameters()) params.push_back(p.detach());
    comm_->broadcast(params);
    if (comm_->rank() > 0) torch::manual_seed(config_.seed + static_cast<uint64_t>(comm_->rank()));
  }
  if (!config_.out_dir.empty() && is_root()) {
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
  // The step's loss is the mean over every prediction of every rank's documents (all of seq_len tokens,
  // so each rank scales by its own count times the world size, and the sum over ranks is that mean).
  const double scale = 1.0 / static_cast<double>(r.predictions * world_size());
  for (auto& doc : docs) {
    auto d = estimator_.backward(base_, compressor_, doc, scale);
    if (r.segment_loss.size() < d.segment_loss.size())
      r.segment_loss.resize(d.segment_loss.size(), 0.0), r.segment_tokens.resize(d.segment_loss.size(), 0);
    for (size_t t = 0; t < d.segment_loss.size(); ++t)
      r.segment_loss[t] += d.segment_loss[t], r.segment_tokens[t] += d.segment_tokens[t];
    r.loss += d.loss();
  }
  r.stop = stop_requested();
  if (comm_) {
    model::Phase phase("uio::all_reduce");
    // One small all-reduce for the statistics, the stop request and which parameters have gradients
    // anywhere; then the gradients themselves, bucketed (a parameter without one on any rank keeps none).
    auto params = compressor_->parameters();
    const size_t T = r.segment_loss.size();
    std::vector<double> stats{r.loss, static_cast<double>(r.predictions), static_cast<double>(r.input_tokens),
                              r.stop ? 1.0 : 0.0};
    for (size_t t = 0; t < T; ++t) stats.push_back(r.segment_loss[t]);
    for (size_t t = 0; t < T; ++t) stats.push_back(static_cast<double>(r.segment_tokens[t]));
    for (auto& p : params) stats.push_back(p.grad().defined() ? 1.0 : 0.0);
    stats = comm_->all_reduce_sum(stats);
    r.loss = stats[0], r.predictions = static_cast<int64_t>(stats[1]), r.input_tokens = static_cast<int64_t>(stats[2]);
    r.stop = stats[3] > 0;
    for (size_t t = 0; t < T; ++t)
      r.segment_loss[t] = stats[4 + t], r.segment_tokens[t] = static_cast<int64_t>(stats[4 + T + t]);
    std::vector<torch::Tensor> grads;
    for (size_t i = 0; i < params.size(); ++i) {
      if (stats[4 + 2 * T + i] == 0) continue;
      if (!params[i].grad().defined()) params[i].mutable_grad() = torch::zeros_like(params[i]);
      grads.push_back(params[i].grad());
    }
    comm_->all_reduce_sum(grads);
  }
  r.loss /= static_cast<double>(r.predictions);
  {
    model::Phase phase("uio::optimizer");
    r.grad_norm = optimizer_->grad_norm();
    r.finite = std::isfinite(r.loss) && std::isfinite(r.grad_norm);
    if (r.finite) optimizer_->step(r.lr, r.grad_norm);
    else ++skipped_;
    optimizer_->zero_grad();  // a skipped step leaves nothing behind either
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
  // Each rank scores its share of the held-out documents; the sums are added over ranks.
  std::vector<torch::Tensor> mine;
  for (size_t i = 0; i < validation_.size(); ++i)
    if (!comm_ || static_cast<int>(i % static_cast<size_t>(comm_->world_size())) == comm_->rank()) mine.push_back(validation_[i]);
  auto p = evaluate_perplexity(base_, compressor_, mine, config_.estimator.chunk);
  if (comm_) {
    const size_t T = static_cast<size_t>(validation_.front().size(0) / compressor_->segment_len());
    for (auto* s : {&p.memory, &p.truncated}) s->loss.resize(T, 0.0), s->tokens.resize(T, 0);
    std::vector<double> v;
    for (auto* s : {&p.memory, &p.truncated}) {
      v.insert(v.end(), s->loss.begin(), s->loss.end());
      for (auto n : s->tokens) v.push_back(static_cast<double>(n));
    }
    v = comm_->all_reduce_sum(v);
    size_t k = 0;
    for (auto* s : {&p.memory, &p.truncated}) {
      for (auto& x : s->loss) x = v[k++];
      for (auto& n : s->tokens) n = static_cast<int64_t>(v[k++]);
    }
  }
  if (is_root()) {
    log << "validation " << when << " (step " << step << ", " << validation_.size() << " held-out documents): "
        << "perplexity with memory " << fixed(p.memory.perplexity(), 3) << ", base model truncated to one segment "
        << fixed(p.truncated.perplexity(), 3) << "; after the first segment " << fixed(p.memory.perplexity(1), 3)
        << " vs " << fixed(p.truncated.perplexity(1), 3) << std::endl;
  }
  if (metrics_) *metrics_ << nlohmann::json{{"step", step}, {"validation", perplexity_json(p)}}.dump() << "\n" << std::flush;
  return p;
}

nlohmann::json Trainer::rank_state() const {
  nlohmann::json rng = nlohmann::json::object();
  for (auto& [name, gen] : generators()) rng[name] = hex_of(gen.get_state());
  return {{"data", nlohmann::json::parse(documents_.state_json())},
          {"reservoir_rng", estimator_.rng_state()},
          {"rng", rng}};
}

void Trainer::apply_rank_state(const nlohmann::json& state) {
  documents_.restore(state.at("data").dump());
  estimator_.set_rng_state(state.at("reservoir_rng").get<uint64_t>());
  for (auto& [name, gen] : generators()) {
    if (!state.at("rng").contains(name)) {
      if (name == "cpu") throw CheckpointError("trainer_state.json: no 'cpu' generator state");
      continue;  // a checkpoint from a machine with fewer GPUs: their draws start fresh
    }
    gen.set_state(bytes_of(state["rng"][name].get<std::string>()));
  }
}

std::string Trainer::save_checkpoint() {
  TORCH_CHECK(!config_.out_dir.empty(), "train: checkpoints need out_dir");
  // Every rank's generators and data position travel to rank 0, which writes the checkpoint.
  std::vector<std::string> ranks = comm_ ? comm_->all_gather(rank_state().dump()) : std::vector<std::string>{rank_state().dump()};
  const auto root = (std::filesystem::path(config_.out_dir) / "checkpoints").string();
  std::string dir, failure;
  if (is_root()) {
    try {
      CheckpointStore store(root, config_.checkpoints);
      nlohmann::json state = {{"format", "uio-checkpoint"},
                              {"version", 2},
                              {"input_tokens", input_tokens_},
                              {"skipped", skipped_},
                              {"optimizer_steps", optimizer_->steps()},
                              {"world_size", world_size()},
                              {"ranks", nlohmann::json::array()},
                              {"base_model", identity_.path}};
      for (const auto& r : ranks) state["ranks"].push_back(nlohmann::json::parse(r));
      dir = store.save(step_, state, [&](const std::string& tmp) {
        namespace fs = std::filesystem;
        checkpoint_fault_point("uio_memory.safetensors");
        model::save_memory(tmp, compressor_, identity_);
        checkpoint_fault_point("optimizer.safetensors");
        std::vector<std::pair<std::string, torch::Tensor>> optimizer_state;
        for (auto& [name, t] : optimizer_->state()) optimizer_state.emplace_back(name, t);
        model::write_safetensors((fs::path(tmp) / "optimizer.safetensors").string(), optimizer_state,
                                 {{"steps", std::to_string(optimizer_->steps())}});
        checkpoint_fault_point("config.ini");
        std::ofstream(fs::path(tmp) / "config.ini") << config_.config_text;
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
  const auto state = verify_checkpoint(dir);
  try {
    if (state.at("format") != "uio-checkpoint" || state.value("version", 0) != 2)
      throw CheckpointError(dir + "/trainer_state.json: format " + state.at("format").dump() + " version " +
                            state.value("version", nlohmann::json(0)).dump() + ", this uio reads uio-checkpoint version 2");
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
    const auto& ranks = state.at("ranks");
    const int saved_world = state.at("world_size").get<int>();
    const int rank = comm_ ? comm_->rank() : 0;
    if (saved_world == world_size()) {
      apply_rank_state(ranks.at(static_cast<size_t>(rank)));
    } else {
      // The data position is global (every rank's sampler stands at the same place), so rank 0's serves;
      // the generators of other world sizes do not map onto this one's: they keep their fresh seeds.
      documents_.restore(ranks.at(0).at("data").dump());
      if (is_root())
        log << "resume: warning: the checkpoint was written by " << saved_world << " processes, this job has "
            << world_size() << "; training continues, but the data order and random draws differ from an "
            << "uninterrupted run\n";
    }
    step_ = state.at("step").get<int64_t>();
    skipped_ = state.at("skipped").get<int64_t>();
    input_tokens_ = state.at("input_tokens").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(dir + "/trainer_state.json: missing or wrongly typed key (" + e.what() + ")");
  }
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
    if (is_root()) model::save_memory(dir, compressor_, identity_);
    log << "checkpoint " << result.last_checkpoint << "; trained compressor written to " << dir
        << " (use it with: uio generate --memory " << dir << ")\n";
  }
  return result;
}

}  // namespace uio::trainer
