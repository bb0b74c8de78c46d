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

#include "model/device_stats.h"
#include "model/weights.h"
#include "tools/list_options.h"
#include "tools/memory_options.h"
#include "tools/model_options.h"
#include "tools/options.h"
#include "trainer/step_bench.h"
#include "trainer/train_flops.h"
#include "data/helper_scripts.h"

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
  std::string shape;  // a named shape with random weights instead of --model
  double peak_tflops = 989.0;  // the device's dense bf16 peak (H100/H200 SXM datasheet) for MFU
  bool compare_python = false;
  bool profile = false;  // one more step per setting under the profiler: where the time goes
  std::string profile_trace;  // and its Chrome trace to this path prefix
  std::string python;  // empty: $UIO_PYTHON, else python3 on PATH (data/helper_scripts.h)
};

// tools/bench/uio_step_hf.py (HF transformers + PEFT, eager) on the same shape, document and chunk:
// its median input tokens/s, or a negative number with the reason in `why`.
double python_tokens_per_s(const TrainBenchOptions& opt, const model::MemoryOptions& memory, int64_t tokens,
                           int64_t chunk, std::string& why) {
  if (memory.decoder_lora.rank > 0) return why = "not comparable: the HF step has no decoder adapters", -1;
  const std::string script = data::helper_script("uio_step_hf.py");
  const std::string python = data::python_interpreter(opt.python);
  std::string command = data::shell_quote(python) + " " + data::shell_quote(script) + " " +
                        (opt.shape.empty() ? "--model '" + opt.base.model + "'" : "--shape " + opt.shape) +
                        " --tokens " + std::to_string(tokens) + " --segment-len " + std::to_string(memory.segment_len) +
                        " --memory-tokens " + std::to_string(memory.num_memory_tokens) + " --chunk " +
                        std::to_string(chunk) + " --rank " + std::to_string(memory.encoder_lora.rank) + " --steps " +
                        std::to_string(opt.steps) + " --device " + opt.base.device + " --dtype " + opt.base.dtype +
                        " 2>/dev/null";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return why = "cannot start " + python, -1;
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

// One table row: the setting, then seconds per step, tokens/s, peak memory, TFLOP/s and MFU (or why not).
void print_row(const std::string& name, int64_t chunk, const std::string& ckpt, model::Kernels kernels, int64_t tokens,
               double flops, const trainer::StepTiming& t, double peak_tflops) {
  std::cout << std::left << std::setw(12) << name << std::right << std::setw(7) << chunk << std::setw(7) << ckpt
            << std::setw(11) << model::kernels_name(kernels) << std::setw(10) << tokens;
  if (!t.failure.empty()) {
    std::cout << "   " << t.failure << "\n";
    return;
  }
  const double tflops = flops / t.seconds / 1e12;
  std::cout << std::fixed << std::setw(11) << std::setprecision(3) << t.seconds << std::setw(13) << std::setprecision(0)
            << static_cast<double>(tokens) / t.seconds << std::setw(11) << std::setprecision(2) << t.peak_gb
            << std::setw(10) << std::setprecision(1) << tflops << std::setw(7) << std::setprecision(1)
            << 100.0 * tflops / peak_tflops << "%\n";
}

// The eager Python step beside uio's row of the same length and chunk, and their ratio.
void print_python_row(const TrainBenchOptions& opt, const model::MemoryOptions& memory, int64_t tokens, int64_t chunk,
                      const trainer::StepTiming& uio) {
  std::string why;
  const double py = python_tokens_per_s(opt, memory, tokens, chunk, why);
  std::cout << std::left << std::setw(12) << "  python" << std::right << std::setw(7) << chunk << std::setw(7) << ""
            << std::setw(11) << "eager" << std::setw(10) << tokens;
  if (py <= 0) {
    std::cout << "   " << why << "\n";
    return;
  }
  const double ratio = uio.failure.empty() ? static_cast<double>(tokens) / uio.seconds / py : 0.0;
  std::cout << std::fixed << std::setw(11) << std::setprecision(3) << static_cast<double>(tokens) / py << std::setw(13)
            << std::setprecision(0) << py << "   uio/python " << std::setprecision(2) << ratio << "x\n";
}

}  // namespace

// The frozen base of the bench: --model's weights, or a random-weight model of a published --shape (then
// opt.base.model names the shape, for the header line).
model::LoadedModel bench_model(TrainBenchOptions& opt, const model::LoadOptions& load) {
  if (opt.shape.empty() == opt.base.model.empty())
    throw OptionError("bench train: give --model (weights from a file) or --shape (random weights), not both");
  if (opt.shape.empty()) return model::load_model(opt.base.model, load);
  model::LoadedModel loaded;
  try {
    loaded.config = trainer::named_shape(opt.shape);
  } catch (const std::invalid_argument& e) {
    throw OptionError(std::string("--shape: ") + e.what());
  }
  loaded.config.architecture = "llama";
  torch::manual_seed(static_cast<uint64_t>(opt.seed));
  loaded.model = model::CausalLM(loaded.config, torch::TensorOptions().dtype(load.dtype).device(load.device));
  opt.base.model = opt.shape + " (random weights)";
  return loaded;
}

int bench_train_command(const std::vector<std::string>& args) {
  TrainBenchOptions opt;
  Schema schema("bench train",
                "Training steps through memory: input tokens/s and peak memory per estimator, "
                "chunk size, activation checkpointing and document length (--kernels takes a list here: "
                "fused,reference times both kernel sets in one run)");
  add_model_options(schema, opt.base, "base model (HF directory or .gguf), frozen; or --shape", false);
  add_memory_options(schema, opt.memory);
  schema.add("tokens", &opt.tokens, "document lengths, comma-separated (rounded down to whole segments)")
      .add("estimators", &opt.estimators, "estimators, comma-separated: full, tbptt_naive, tbptt, unbiased")
      .add("chunks", &opt.chunks, "chunk sizes K (segments per batched call), comma-separated")
      .add("checkpointing", &opt.checkpointing, "activation checkpointing: off, on, or off,on")
      .add("window", &opt.window, "S: the tbptt window / reservoir size")
      .add("steps", &opt.steps, "timed steps per setting (after one warm-up step); the median is reported")
      .add("seed", &opt.seed, "seed of the random documents and the adapters' initialisation")
      .add("shape", &opt.shape,
           "instead of --model: a random-weight model of a published shape (smollm2-135m, "
           "llama2-7b, llama3-8b)")
      .add("peak_tflops", &opt.peak_tflops, "the device's peak dense TFLOP/s in the compute dtype, for MFU")
      .add("compare_python", &opt.compare_python,
           "also time tools/bench/uio_step_hf.py (HF transformers + PEFT, eager) per length and chunk size")
      .add("python", &opt.python, "Python with torch, transformers and peft, for --compare_python")
      .add("profile", &opt.profile,
           "after the timed steps, run one more under PyTorch's profiler and print where its "
           "time goes: device time by kernel kind and by phase, host gaps")
      .add("profile_trace", &opt.profile_trace,
           "with --profile: also write each profiled step's Chrome trace to "
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
  if (opt.window < 1) throw OptionError("bench train: --window must be >= 1 (S), got " + std::to_string(opt.window));
  if (!(opt.peak_tflops > 0)) throw OptionError("bench train: --peak_tflops must be > 0");
  for (int64_t n : lengths)
    if (n < l)
      throw OptionError("bench train: --tokens " + std::to_string(n) + " is shorter than one segment (" +
                        std::to_string(l) + ")");

  // --kernels takes a list here, so one run times the fused and the reference kernels side by side.
  std::vector<model::Kernels> kernel_sets;
  for (const auto& word : split_list("kernels", opt.base.kernels)) try {
      kernel_sets.push_back(model::parse_kernels(word));
    } catch (const std::invalid_argument& e) {
      throw OptionError(std::string("--kernels: ") + e.what());
    }
  auto first = opt.base;
  first.kernels = model::kernels_name(kernel_sets.front());
  const auto load = load_options(first);
  auto loaded = bench_model(opt, load);
  const auto memory_init = model::eos_memory_init(loaded.model);
  std::cout << "bench train: " << loaded.config.architecture << " from " << opt.base.model << ", " << opt.base.dtype
            << " compute on " << opt.base.device << " (fp32 adapters and AdamW state), l = " << l
            << ", M = " << memory_options.num_memory_tokens << ", S = " << opt.window << "; median of " << opt.steps
            << " steps after one warm-up; tokens/s counts every input token of a whole step "
               "(forward, backward, optimiser); TFLOP/s and MFU (of "
            << opt.peak_tflops
            << " TFLOP/s) count the encoder forward and the decoder forward + backward, 4N + attention per decoder "
               "token (trainer/train_flops.h)\n\n"
            << std::left << std::setw(12) << "estimator" << std::right << std::setw(7) << "K" << std::setw(7) << "ckpt"
            << std::setw(11) << "kernels" << std::setw(10) << "tokens" << std::setw(11) << "s/step" << std::setw(13)
            << "tokens/s" << std::setw(11) << "peak GB" << std::setw(10) << "TFLOP/s" << std::setw(8) << "MFU"
            << "\n";
  for (int64_t n : lengths) {
    const int64_t T = n / l;
    if (T < 1)
      throw OptionError("bench train: --tokens " + std::to_string(n) + " is shorter than one segment (" +
                        std::to_string(l) + ")");
    for (auto kind : kinds)
      for (int64_t K : chunks)
        for (bool ckpt : checkpointing) {
          if (K > T && K != chunks.front()) continue;  // the same as K = T
          trainer::StepBenchSettings b;
          b.memory = memory_options, b.tokens = T * l, b.steps = opt.steps, b.seed = static_cast<uint64_t>(opt.seed);
          b.estimator.kind = kind, b.estimator.window = opt.window, b.estimator.chunk = K;
          b.estimator.activation_checkpointing = ckpt, b.estimator.seed = b.seed;
          b.profile = opt.profile;
          const std::string name = optim::estimator_kind_name(kind);
          if (!opt.profile_trace.empty())
            b.profile_trace = opt.profile_trace + "-" + name + "-K" + std::to_string(std::min(K, T)) +
                              (ckpt ? "-ckpt-" : "-") + std::to_string(T * l) + ".json";
          trainer::StepTiming timing;
          for (auto kernels : kernel_sets) {
            loaded.model->set_kernels(kernels);
            timing = trainer::time_training_steps(loaded.model, memory_init, b);
            print_row(name, std::min(K, T), ckpt ? "on" : "off", kernels, T * l,
                      trainer::train_step_flops(loaded.config, l, memory_options.num_memory_tokens, T), timing,
                      opt.peak_tflops);
            std::cout << timing.profile << std::flush;
          }
          if (opt.compare_python && kind == kinds.front() && ckpt == checkpointing.front())
            print_python_row(opt, memory_options, T * l, std::min(K, T), timing);
          std::cout << std::flush;
        }
  }
  if (!load.device.is_cuda())
    std::cout << "\n(peak memory on the CPU is the process's peak resident set, which only grows: read it as "
                 "the largest so far)\n";
  return 0;
}

}  // namespace uio::cli
