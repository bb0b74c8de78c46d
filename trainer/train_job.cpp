// trainer/train_job.cpp — assembling and running a training job.
#include "trainer/train_job.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "data/format/remove_tree.h"
#include "data/retrieval_task.h"
#include "data/sampler.h"
#include "data/token_store.h"
#include "data/tokenizer.h"
#include "model/device_stats.h"
#include "model/memory_io.h"
#include "optim/estimator.h"
#include "trainer/checkpoint.h"
#include "trainer/distributed.h"
#include "trainer/stop_signal.h"

namespace uio::trainer {

const std::vector<std::string>& resume_must_match() {
  static const std::vector<std::string> keys = {"segment_len",
                                                "num_memory_tokens",
                                                "compression_ratio",
                                                "encoder_lora_rank",
                                                "encoder_lora_alpha",
                                                "encoder_lora_targets",
                                                "transfer_lora_rank",
                                                "transfer_lora_alpha",
                                                "transfer_lora_targets",
                                                "decoder_lora_rank",
                                                "decoder_lora_alpha",
                                                "decoder_lora_targets",
                                                "memory_rope",
                                                "memory_rope_factor",
                                                "sink_tokens",
                                                "estimator",
                                                "window",
                                                "seq_len",
                                                "sampler",
                                                "retrieval_share",
                                                "autoencode_share",
                                                "retrieval_max_facts",
                                                "retrieval_questions",
                                                "retrieval_min_distance",
                                                "retrieval_cue",
                                                "retrieval_min_digits",
                                                "retrieval_max_digits"};
  return keys;
}

std::optional<std::string> resume_checkpoint(const std::string& resume, const std::string& out_dir,
                                             const std::string& config_text, std::ostream& log) {
  if (resume.empty()) return std::nullopt;
  std::optional<std::string> dir;
  if (resume == "auto") {
    if (out_dir.empty()) throw std::invalid_argument("--resume auto needs out_dir (where the run's checkpoints/ are)");
    CheckpointStore store((std::filesystem::path(out_dir) / "checkpoints").string(), {}, &log);
    dir = store.find_latest(log);
    if (!dir) {
      log << "resume: no complete checkpoint in " << store.root() << "; starting fresh\n";
      return std::nullopt;
    }
  } else {
    dir = resume;
  }
  verify_checkpoint(*dir);
  const auto saved_path = (std::filesystem::path(*dir) / "config.ini").string();
  std::ifstream saved(saved_path);
  if (!saved) throw CheckpointError(saved_path + ": cannot open; the checkpoint has no config");
  const std::string saved_text((std::istreambuf_iterator<char>(saved)), {});
  std::vector<std::string> changed;
  // Options added after the first release: a checkpoint written before one existed ran with its "off" (the
  // behaviour before the option, a fact of history: it stays if the option's default ever changes).
  static const std::map<std::string, std::string> added_later = {
      {"sink_tokens", "0"},
      {"decoder_lora_rank", "0"},
      {"decoder_lora_alpha", "64"},
      {"decoder_lora_targets", "q_proj,k_proj,v_proj,o_proj"},
      {"retrieval_share", "0"},
      {"autoencode_share", "0"},
      {"retrieval_max_facts", "4"},
      {"retrieval_questions", "1"},
      {"retrieval_min_distance", "0"},
      {"retrieval_cue", "false"},
      {"retrieval_min_digits", "4"},
      {"retrieval_max_digits", "7"}};
  const auto mismatched = compare_configs(saved_text, config_text, resume_must_match(), &changed, added_later);
  if (!mismatched.empty()) {
    std::string list;
    for (const auto& m : mismatched) list += "\n  " + m;
    throw std::invalid_argument(*dir +
                                ": the checkpoint was written by a run with other model or data settings "
                                "(saved -> now):" +
                                list +
                                "\nuse the same values to resume, or start a new run in "
                                "another out_dir");
  }
  for (const auto& line : changed) log << "resume: changed " << line << "\n";
  return dir;
}

namespace {

// A run that starts from step 0 into `out_dir`: refuses to mix with an earlier run's files there (its
// checkpoints would outrank the new ones, its metrics would run on) unless `overwrite`, which deletes
// what uio wrote there.
void start_fresh(const std::string& out_dir, bool overwrite, std::ostream& log) {
  namespace fs = std::filesystem;
  const std::vector<std::string> ours = {"checkpoints", "compressor", "metrics.jsonl", "config.ini"};
  std::vector<std::string> found;
  for (const auto& name : ours)
    if (fs::exists(fs::path(out_dir) / name)) found.push_back(name);
  if (found.empty()) return;
  std::string list;
  for (const auto& f : found) list += (list.empty() ? "" : ", ") + f;
  if (!overwrite)
    throw std::invalid_argument(out_dir + " already holds a run (" + list +
                                "); continue it with --resume auto, "
                                "start over there with --overwrite (deletes them), or choose another out_dir");
  for (const auto& f : found) format::remove_tree((fs::path(out_dir) / f).string());
  log << "train: --overwrite: deleted the earlier run's " << list << " in " << out_dir << "\n";
}

}  // namespace

void check_train_job(const TrainJob& job) {
  const int64_t l = job.memory.segment_len, M = job.memory.num_memory_tokens;
  if (l < 1) throw std::invalid_argument("segment_len must be >= 1, got " + std::to_string(l));
  if (M < 1 || l % M != 0)
    throw std::invalid_argument("num_memory_tokens " + std::to_string(M) + " must be >= 1 and divide segment_len " +
                                std::to_string(l));
  if (job.seq_len < l || job.seq_len % l != 0)
    throw std::invalid_argument("seq_len " + std::to_string(job.seq_len) +
                                " must be a positive multiple of segment_len " + std::to_string(l));
  if (job.val_documents < 0)
    throw std::invalid_argument("val_documents must be >= 0, got " + std::to_string(job.val_documents));
  if (!(job.dist_timeout_s > 0)) throw std::invalid_argument("dist_timeout_s must be > 0");
  if (job.master_port < 0 || job.master_port > 65535)
    throw std::invalid_argument("master_port must lie in [0, 65535] (0: MASTER_PORT, else 29500), got " +
                                std::to_string(job.master_port));
  data::parse_sampler_mode(job.sampler);  // throws naming the valid ones
  if (job.data.empty()) throw std::invalid_argument("data: no token store given (uio prepare writes one)");
  check_train_config(job.train);
  if (!(job.retrieval_share >= 0 && job.retrieval_share <= 1))
    throw std::invalid_argument("retrieval_share must be in [0, 1], got " + std::to_string(job.retrieval_share));
  if (!(job.autoencode_share >= 0 && job.autoencode_share <= 1))
    throw std::invalid_argument("autoencode_share must be in [0, 1], got " + std::to_string(job.autoencode_share));
  if (job.retrieval_share + job.autoencode_share > 1)
    throw std::invalid_argument("retrieval_share " + std::to_string(job.retrieval_share) + " and autoencode_share " +
                                std::to_string(job.autoencode_share) +
                                " sum to more than 1 (natural text takes the rest)");
  if (job.retrieval_max_facts < 1 || job.retrieval_max_facts > data::kRetrievalMaxFacts)
    throw std::invalid_argument("retrieval_max_facts must be in [1, " + std::to_string(data::kRetrievalMaxFacts) +
                                "], got " + std::to_string(job.retrieval_max_facts));
  if (job.retrieval_questions < 1)
    throw std::invalid_argument("retrieval_questions must be >= 1, got " + std::to_string(job.retrieval_questions));
  if (job.retrieval_min_distance < 0 || job.retrieval_min_distance >= job.seq_len)
    throw std::invalid_argument("retrieval_min_distance must lie in [0, seq_len " + std::to_string(job.seq_len) +
                                "), got " + std::to_string(job.retrieval_min_distance));
  if (const auto e = data::digit_range_error("retrieval_min_digits", "retrieval_max_digits", job.retrieval_min_digits,
                                             job.retrieval_max_digits);
      !e.empty())
    throw std::invalid_argument(e);
  if (!job.init_memory.empty() && !std::filesystem::exists(job.init_memory))
    throw std::invalid_argument("init_memory: " + job.init_memory +
                                " does not exist; give a run directory, checkpoint, export or compressor directory");
}

namespace {

// A seed of its own for each synthetic stream, from the run's seed (splitmix64 of both).
uint64_t stream_seed(uint64_t seed, uint64_t stream) {
  return data::SplitMix64(seed ^ (stream * 0x9e3779b97f4a7c15ULL)).next();
}

// The training documents: the train split's natural text, or (retrieval_share or autoencode_share > 0) a
// mix in which retrieval and auto-encoding documents are built from that same natural-text stream. Every
// rank draws the same kind of document at each step (one mix seed for all), so the ranks' samplers stay at
// the same global position; the planted numbers and repeated segments are each rank's own.
std::shared_ptr<data::DocumentSource> training_source(const TrainJob& job,
                                                      std::shared_ptr<const data::TokenStore> store,
                                                      const data::SamplerOptions& so, int rank,
                                                      const data::Tokenizer* tokenizer) {
  auto natural = std::make_shared<data::SamplerSource>(std::move(store), so);
  if (job.retrieval_share <= 0 && job.autoencode_share <= 0) return natural;
  const uint64_t seed = job.train.seed, r = static_cast<uint64_t>(rank);
  std::vector<data::MixedShare> shares = {{"natural", 1.0 - job.retrieval_share - job.autoencode_share, natural}};
  if (job.retrieval_share > 0) {
    data::RetrievalOptions ro;
    ro.seq_len = job.seq_len, ro.segment_len = job.memory.segment_len, ro.max_facts = job.retrieval_max_facts;
    ro.questions = job.retrieval_questions, ro.min_distance = job.retrieval_min_distance, ro.cue = job.retrieval_cue;
    ro.min_digits = job.retrieval_min_digits, ro.max_digits = job.retrieval_max_digits;
    ro.seed = stream_seed(seed, 2 + 2 * r);
    shares.push_back(
        {"retrieval", job.retrieval_share, std::make_shared<data::RetrievalDocuments>(natural, *tokenizer, ro)});
  }
  if (job.autoencode_share > 0) {
    data::AutoencodeOptions ao;
    ao.seq_len = job.seq_len, ao.segment_len = job.memory.segment_len, ao.seed = stream_seed(seed, 3 + 2 * r);
    shares.push_back(
        {"autoencode", job.autoencode_share, std::make_shared<data::AutoencodeDocuments>(natural, *tokenizer, ao)});
  }
  return std::make_shared<data::MixedSource>(std::move(shares), stream_seed(seed, 1));
}

// A curriculum's next stage starts from an earlier compressor's weights: its base model must be this one,
// its tensors must fit this compressor (load_memory_weights names a misfit), and the options that differ
// without changing a shape (segment length, LoRA scales, RoPE, sink) are listed on `log`.
void init_from(const std::string& path, model::MemoryCompressor& compressor, const model::BaseIdentity& base,
               std::ostream& log) {
  const auto dir = resolve_compressor_dir(path, log);
  const auto saved = model::read_memory_config(dir);
  const auto file = (std::filesystem::path(dir) / "uio_config.json").string();
  model::check_same_base(saved.base, base, file);
  const auto& a = saved.options;
  const auto& b = compressor->options();
  std::vector<std::string> differ;
  auto note = [&](const char* key, auto was, auto now) {
    if (was != now) {
      std::ostringstream line;
      line << key << " " << was << " -> " << now;
      differ.push_back(line.str());
    }
  };
  note("segment_len", a.segment_len, b.segment_len);
  note("encoder_lora_alpha", a.encoder_lora.alpha, b.encoder_lora.alpha);
  note("transfer_lora_alpha", a.transfer_lora.alpha, b.transfer_lora.alpha);
  note("decoder_lora_alpha", a.decoder_lora.alpha, b.decoder_lora.alpha);
  note("memory_rope", model::rope_kind_name(a.memory_rope), model::rope_kind_name(b.memory_rope));
  note("memory_rope_factor", a.memory_rope_factor, b.memory_rope_factor);
  note("sink_tokens", a.sink_tokens, b.sink_tokens);
  model::load_memory_weights(dir, compressor);
  log << "train: init_memory: the compressor starts from " << dir << " (a fresh optimiser and schedule)";
  for (const auto& d : differ) log << (&d == &differ.front() ? "; it was trained with " : ", ") << d;
  log << "\n";
}

}  // namespace

TrainResult run_train_job(TrainJob job, std::ostream& out_all) {
  check_train_job(job);
  auto& c = job.train;
  // Data parallel: this process's rank from torchrun's or Slurm's environment (a world of one without).
  const auto process = process_info_from_env(job.master_addr, job.master_port);
  std::ostream silent(nullptr);
  std::ostream& out = process.rank == 0 ? out_all : silent;  // rank 0 speaks for the job
  const auto checkpoint = resume_checkpoint(job.resume, c.out_dir, c.config_text, out);
  // Rank 0 owns the files; --resume auto that found no complete checkpoint starts over the leftovers.
  if (!checkpoint && !c.out_dir.empty() && process.rank == 0)
    start_fresh(c.out_dir, job.overwrite || job.resume == "auto", out);
  if (c.schedule.warmup_steps >= c.steps) {  // a short smoke run of a recipe: warm up for all but the last step
    out << "train: warmup_steps " << c.schedule.warmup_steps << " is not below steps " << c.steps << "; warming up for "
        << c.steps - 1 << " steps instead\n";
    c.schedule.warmup_steps = c.steps - 1;
  }
  if (job.load.device.is_cuda() && process.world_size > 1)  // one process per GPU, bound to its local device
    job.load.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(process.local_rank));
  model::bind_device(job.load.device);
  Communicator comm(process, job.load.device,
                    std::chrono::milliseconds(static_cast<int64_t>(job.dist_timeout_s * 1000)));
  auto loaded = model::load_model(job.model, job.load);
  auto store = std::make_shared<const data::TokenStore>(job.data);
  if (store->meta().vocab_size > loaded.config.vocab_size)
    throw std::invalid_argument(
        job.data + ": the token store's vocabulary (" + std::to_string(store->meta().vocab_size) +
        " ids) is larger than the model's (" + std::to_string(loaded.config.vocab_size) +
        "); prepare the store with this model's tokenizer (uio prepare --tokenizer " + job.model + ")");
  store->check_ids(loaded.config.vocab_size, job.model);
  for (const auto& [key, rank] : {std::pair{"encoder_lora_rank", job.memory.encoder_lora.rank},
                                  std::pair{"transfer_lora_rank", job.memory.transfer_lora.rank},
                                  std::pair{"decoder_lora_rank", job.memory.decoder_lora.rank}})
    if (rank >
        loaded.config.hidden_size)  // beyond it a LoRA adds nothing but memory (and absurd ones fail to allocate)
      throw std::invalid_argument(std::string(key) + " " + std::to_string(rank) + " exceeds the model's hidden_size " +
                                  std::to_string(loaded.config.hidden_size) +
                                  "; choose a rank up to it (8 to 64 is usual)");
  data::SamplerOptions so;
  so.seq_len = job.seq_len, so.mode = data::parse_sampler_mode(job.sampler), so.seed = c.seed;
  so.rank = process.rank, so.world_size = process.world_size;  // each rank its own share of the documents
  std::unique_ptr<data::Tokenizer> tokenizer;  // synthetic documents only; it outlives them
  if (job.retrieval_share > 0 || job.autoencode_share > 0) tokenizer = data::load_tokenizer(job.model);
  const auto documents = training_source(job, store, so, process.rank, tokenizer.get());
  std::vector<torch::Tensor> validation;
  if (job.val_documents > 0) {
    auto vo = so;
    vo.rank = 0, vo.world_size = 1;  // every rank knows every held-out document (the trainer shares them out)
    vo.split = data::Split::heldout;
    data::Sampler heldout(*store, vo);
    const int64_t count = std::min(job.val_documents, heldout.sequences_per_epoch());
    for (int64_t i = 0; i < count; ++i) validation.push_back(heldout.next().tokens);
  }

  torch::manual_seed(c.seed);
  model::MemoryCompressor compressor(loaded.config, job.memory, model::eos_memory_init(loaded.model));
  const int64_t l = job.memory.segment_len;
  out << "train: " << loaded.config.architecture << " from " << job.model << " (" << job.dtype_name << " on "
      << job.load.device << "), l = " << l << ", M = " << job.memory.num_memory_tokens << ", " << job.seq_len / l
      << " segments per document, estimator " << optim::estimator_kind_name(c.estimator.kind)
      << " (S = " << c.estimator.window << ", chunk " << c.estimator.chunk << "), " << c.steps << " steps x "
      << c.accumulation << " documents"
      << (process.world_size > 1 ? " x " + std::to_string(process.world_size) + " ranks (" + process.launcher + ")"
                                 : "")
      << "\n";
  if (job.retrieval_share > 0 || job.autoencode_share > 0)
    out << "train: documents: natural text " << 1.0 - job.retrieval_share - job.autoencode_share << ", retrieval "
        << job.retrieval_share << " (" << job.retrieval_questions << " question(s) each, numbers of "
        << job.retrieval_min_digits << "-" << job.retrieval_max_digits << " digits"
        << (job.retrieval_cue ? ", cued" : "") << "), auto-encoding " << job.autoencode_share
        << " (synthetic documents, loss on their answers only: beyond the paper's recipe)\n";
  const auto base = model::identify(job.model, loaded.config);  // reads the weights' edges for the fingerprint
  if (!job.init_memory.empty() && !checkpoint) init_from(job.init_memory, compressor, base, out);
  Trainer trainer(c, loaded.model, compressor, base, *documents, validation, &comm);
  if (checkpoint) {
    trainer.restore(*checkpoint, out);
    out << "resume: from " << *checkpoint << " (step " << trainer.steps_done() << " of " << c.steps << ")\n";
  }
  install_stop_handlers();
  auto result = trainer.run(out_all);
  if (result.stopped) return result;
  out << "train: " << result.steps << " steps (" << result.skipped << " skipped), last loss ";
  if (std::isfinite(result.last_loss))
    out << result.last_loss << "\n";
  else
    out << "none (no step was taken in this run)\n";
  if (!validation.empty()) {
    out << "held-out perplexity after the first segment (context longer than one segment):\n"
        << "  base model truncated to one segment  " << result.after.truncated.perplexity(1) << "\n";
    // A resumed run did not score the untrained compressor; its first run did (metrics.jsonl, step 0).
    if (!std::isfinite(result.before.memory.perplexity(1)))
      out << "  with memory, before training         (measured by the run's first start: step 0 in " << c.out_dir
          << "/metrics.jsonl)\n";
    else
      out << "  with memory, before training         " << result.before.memory.perplexity(1) << "\n";
    out << "  with memory, after training          " << result.after.memory.perplexity(1) << "\n";
  }
  return result;
}

}  // namespace uio::trainer
