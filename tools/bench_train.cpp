// tools/bench_train.cpp — `uio bench train`: the speed and peak memory of whole training steps (every
// document's segments through the estimator, backward, AdamW) for each estimator, chunk size K,
// activation checkpointing setting and document length asked for. Random token documents and an
// untrained compressor: the work is that of real training. Prints a table; results go to
// docs/benchmarks.md by hand.
#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <iostream>

#include <nlohmann/json.hpp>

#include "data/document_source.h"
#include "model/device_stats.h"
#include "model/weights.h"
#include "tools/list_options.h"
#include "tools/memory_options.h"
#include "tools/model_options.h"
#include "tools/options.h"
#include "tools/step_profile.h"
#include "tools/train_flops.h"
#include "trainer/train.h"

namespace uio::cli {
namespace {

struct TrainBenchOptions {
  ModelInput base{"", "bfloat16", "cuda"};
  MemoryOptionsInput memory;
  std::string tokens = "8192,32768,102400";
  std::string estimators = "unbiased,tbptt,full";
  std::string chunks = "1,8,32";
  std::string checkpointing = "off";  // off | on | off,on
  int64_t window = 2;
  int64_t steps = 3;  // timed steps per setting, after one warm-up step
  int64_t seed = 0;
  std::string shape;          // a named shape with random weights instead of --model
  double peak_tflops = 989.0; // the device's dense bf16 peak (H100/H200 SXM datasheet) for MFU
  bool compare_python = false;
  bool profile = false;       // one more step per setting under the profiler: where the time goes
  std::string profile_trace;  // and its Chrome trace to this path prefix
  std::string python = std::string(UIO_SOURCE_DIR) + "/.venv/bin/python";
};

// tools/bench/uio_step_hf.py (HF transformers + PEFT, eager) on the same shape, document and chunk:
// its median input tokens/s, or a negative number with the reason in `why`.
double python_tokens_per_s(const TrainBenchOptions& opt, const model::MemoryOptions& memory, int64_t tokens,
                           int64_t chunk, std::string& why) {
  const std::string script = std::string(UIO_SOURCE_DIR) + "/tools/bench/uio_step_hf.py";
  std::string command = "'" + opt.python + "' '" + script + "' " +
                        (opt.shape.empty() ? "--model '" + opt.base.model + "'" : "--shape " + opt.shape) +
                        " --tokens " + std::to_string(tokens) + " --segment-len " + std::to_string(memory.segment_len) +
                        " --memory-tokens " + std::to_string(memory.num_memory_tokens) + " --chunk " +
                        std::to_string(chunk) + " --rank " + std::to_string(memory.encoder_lora.rank) + " --steps " +
                        std::to_string(opt.steps) + " --device " + opt.base.device + " --dtype " + opt.base.dtype +
                        " 2>/dev/null";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return why = "cannot start " + opt.python, -1;
  std::string out;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
  const int status = ::pclose(pipe);
  const auto line = out.rfind("{\"tokens\"");
  if (status != 0 || line == std::string::npos) return why = "failed (out of memory?)", -1;
  return nlohmann::json::parse(out.substr(line))["tokens_per_s"].get<double>();
}

bool on_off(const std::string& word) {
  if (word == "on") return true;
  if (word == "off") return false;
  throw OptionError("--checkpointing takes on, off or both (off,on), got '" + word + "'");
}

struct Row {
  std::string estimator;
  int64_t chunk = 0, tokens = 0;
  bool checkpointing = false;
  double seconds = 0, peak_gb = 0;
  std::string failure;  // "out of memory", or empty
  std::string profile;  // format_profile of one step, when asked for
};

}  // namespace

int bench_train_command(const std::vector<std::string>& args) {
  TrainBenchOptions opt;
  Schema schema("bench train", "Training steps through memory: input tokens/s and peak memory per estimator, "
                               "chunk size, activation checkpointing and document length");
  add_model_options(schema, opt.base, "base model (HF directory or .gguf), frozen; or --shape", false);
  add_memory_options(schema, opt.memory);
  schema.add("tokens", &opt.tokens, "document lengths, comma-separated (rounded down to whole segments)")
      .add("estimators", &opt.estimators, "estimators, comma-separated: full, tbptt_naive, tbptt, unbiased")
      .add("chunks", &opt.chunks, "chunk sizes K (segments per batched call), comma-separated")
      .add("checkpointing", &opt.checkpointing, "activation checkpointing: off, on, or off,on")
      .add("window", &opt.window, "S: the tbptt window / reservoir size")
      .add("steps", &opt.steps, "timed steps per setting (after one warm-up step); the median is reported")
      .add("seed", &opt.seed, "seed of the random documents and the adapters' initialisation")
      .add("shape", &opt.shape, "instead of --model: a random-weight model of a published shape (smollm2-135m, "
                                "llama2-7b, llama3-8b)")
      .add("peak_tflops", &opt.peak_tflops, "the device's peak dense TFLOP/s in the compute dtype, for MFU")
      .add("compare_python", &opt.compare_python,
           "also time tools/bench/uio_step_hf.py (HF transformers + PEFT, eager) per length and chunk size")
      .add("python", &opt.python, "Python with torch, transformers and peft, for --compare_python")
      .add("profile", &opt.profile, "after the timed steps, run one more under PyTorch's profiler and print where its "
                                    "time goes: device time by kernel kind and by phase, host gaps")
      .add("profile_trace", &opt.profile_trace, "with --profile: also write each profiled step's Chrome trace to "
                                                "PREFIX-<estimator>-K<K>-<tokens>.json");
  if (!schema.parse(args, std::cout)) return 0;
  const auto memory_options = resolve_memory_options(opt.memory);
  const int64_t l = memory_options.segment_len;
  const auto lengths = int_list("tokens", opt.tokens);
  const auto chunks = int_list("chunks", opt.chunks);
  std::vector<optim::EstimatorKind> kinds;
  for (const auto& name : split_list("estimators", opt.estimators)) kinds.push_back(optim::parse_estimator_kind(name));
  std::vector<bool> checkpointing;
  for (const auto& word : split_list("checkpointing", opt.checkpointing)) checkpointing.push_back(on_off(word));
  if (opt.steps < 1) throw OptionError("bench train: --steps must be >= 1");

  if (opt.shape.empty() == opt.base.model.empty())
    throw OptionError("bench train: give --model (weights from a file) or --shape (random weights), not both");
  const auto load = load_options(opt.base);
  model::LoadedModel loaded;
  if (!opt.shape.empty()) {
    try {
      loaded.config = named_shape(opt.shape);
    } catch (const std::invalid_argument& e) {
      throw OptionError(std::string("--shape: ") + e.what());
    }
    loaded.config.architecture = "llama";
    torch::manual_seed(static_cast<uint64_t>(opt.seed));
    loaded.model = model::CausalLM(loaded.config, torch::TensorOptions().dtype(load.dtype).device(load.device));
    opt.base.model = opt.shape + " (random weights)";
  } else {
    loaded = model::load_model(opt.base.model, load);
  }
  const auto memory_init = model::eos_memory_init(loaded.model);
  std::cout << "bench train: " << loaded.config.architecture << " from " << opt.base.model << ", " << opt.base.dtype
            << " compute on " << opt.base.device << " (fp32 adapters and AdamW state), l = " << l
            << ", M = " << memory_options.num_memory_tokens << ", S = " << opt.window << "; median of " << opt.steps
            << " steps after one warm-up; tokens/s counts every input token of a whole step "
               "(forward, backward, optimiser); TFLOP/s and MFU (of " << opt.peak_tflops
            << " TFLOP/s) count the encoder forward and the decoder forward + backward, 4N + attention per decoder "
               "token (tools/train_flops.h)\n\n"
            << std::left << std::setw(12) << "estimator" << std::right << std::setw(7) << "K" << std::setw(7) << "ckpt"
            << std::setw(10) << "tokens" << std::setw(11) << "s/step" << std::setw(13) << "tokens/s" << std::setw(11)
            << "peak GB" << std::setw(10) << "TFLOP/s" << std::setw(8) << "MFU" << "\n";
  for (int64_t n : lengths) {
    const int64_t T = n / l;
    if (T < 1) throw OptionError("bench train: --tokens " + std::to_string(n) + " is shorter than one segment (" +
                                 std::to_string(l) + ")");
    for (auto kind : kinds)
      for (int64_t K : chunks)
        for (bool ckpt : checkpointing) {
          if (K > T && K != chunks.front()) continue;  // the same as K = T
          Row row{optim::estimator_kind_name(kind), std::min(K, T), T * l, ckpt, 0.0, 0.0, "", ""};
          try {
            torch::manual_seed(static_cast<uint64_t>(opt.seed));
            model::MemoryCompressor compressor(loaded.config, memory_options, memory_init);
            trainer::TrainConfig c;
            c.estimator.kind = kind, c.estimator.window = opt.window, c.estimator.chunk = K;
            c.estimator.activation_checkpointing = ckpt, c.estimator.seed = static_cast<uint64_t>(opt.seed);
            c.steps = opt.steps + 1 + (opt.profile ? 1 : 0);
            data::RandomDocuments documents(loaded.config.vocab_size, T * l, static_cast<uint64_t>(opt.seed));
            trainer::Trainer trainer(c, loaded.model, compressor, {}, documents, {});
            trainer.step();  // warm-up: kernel choice, allocator, lazy tables
            model::reset_peak_memory(load.device);
            std::vector<double> times;
            for (int64_t s = 0; s < opt.steps; ++s) times.push_back(trainer.step().seconds);
            std::sort(times.begin(), times.end());
            row.seconds = times[times.size() / 2];
            row.peak_gb = static_cast<double>(model::peak_memory_bytes(load.device)) / 1e9;
            if (opt.profile) {
              const auto trace = opt.profile_trace.empty() ? std::string() :
                  opt.profile_trace + "-" + row.estimator + "-K" + std::to_string(row.chunk) + (ckpt ? "-ckpt-" : "-") +
                  std::to_string(row.tokens) + ".json";
              row.profile = format_profile(profile_step([&] { trainer.step(); }, load.device, trace));
            }
          } catch (const c10::OutOfMemoryError&) {
            row.failure = "out of memory";
          }
          model::release_cached_memory(load.device);
          std::cout << std::left << std::setw(12) << row.estimator << std::right << std::setw(7) << row.chunk
                    << std::setw(7) << (row.checkpointing ? "on" : "off") << std::setw(10) << row.tokens;
          if (row.failure.empty()) {
            const double tflops = train_step_flops(loaded.config, l, memory_options.num_memory_tokens, T) / row.seconds / 1e12;
            std::cout << std::fixed << std::setw(11) << std::setprecision(3) << row.seconds << std::setw(13)
                      << std::setprecision(0) << static_cast<double>(row.tokens) / row.seconds << std::setw(11)
                      << std::setprecision(2) << row.peak_gb << std::setw(10) << std::setprecision(1) << tflops
                      << std::setw(7) << std::setprecision(1) << 100.0 * tflops / opt.peak_tflops << "%\n";
          } else {
            std::cout << "   " << row.failure << "\n";
          }
          std::cout << row.profile;
          if (opt.compare_python && kind == kinds.front() && ckpt == checkpointing.front()) {
            std::string why;
            const double py = python_tokens_per_s(opt, memory_options, T * l, std::min(K, T), why);
            std::cout << std::left << std::setw(12) << "  python" << std::right << std::setw(7) << std::min(K, T)
                      << std::setw(7) << "" << std::setw(10) << T * l;
            if (py > 0)
              std::cout << std::fixed << std::setw(11) << std::setprecision(3) << static_cast<double>(T * l) / py
                        << std::setw(13) << std::setprecision(0) << py << "   uio/python "
                        << std::setprecision(2) << (row.failure.empty() ? static_cast<double>(row.tokens) / row.seconds / py : 0.0)
                        << "x\n";
            else
              std::cout << "   " << why << "\n";
          }
          std::cout << std::flush;
        }
  }
  if (!load.device.is_cuda())
    std::cout << "\n(peak memory on the CPU is the process's peak resident set, which only grows: read it as "
                 "the largest so far)\n";
  return 0;
}

}  // namespace uio::cli
