// tools/info.cpp — `uio info --model PATH`: what a model is (architecture, sizes, parameter count,
// dtypes, RoPE, context length) and, with --forward_tokens N, a timed forward pass over N random tokens.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include "data/format/gguf.h"
#include "data/format/safetensors.h"
#include "model/weights.h"
#include "tools/commands.h"
#include "tools/model_options.h"
#include "tools/options.h"

namespace uio::cli {
namespace {

struct InfoOptions {
  ModelInput base;  // dtype and device apply to --forward_tokens
  int64_t forward_tokens = 0;
  int64_t seed = 1234;
};

std::string with_commas(int64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return s;
}

std::string rope_summary(const model::ModelConfig& c) {
  std::ostringstream o;
  o << "theta " << c.rope_theta << ", scaling " << model::rope_kind_name(c.rope_scaling.type);
  const auto& s = c.rope_scaling;
  if (s.type != model::RopeKind::none) o << " (factor " << s.factor;
  if (s.type == model::RopeKind::yarn || s.type == model::RopeKind::llama3)
    o << ", original window " << s.original_max_position;
  if (s.type == model::RopeKind::llama3)
    o << ", low/high freq factor " << s.low_freq_factor << "/" << s.high_freq_factor;
  if (s.type == model::RopeKind::yarn) o << ", beta fast/slow " << s.beta_fast << "/" << s.beta_slow;
  if (s.type != model::RopeKind::none) o << ")";
  return o.str();
}

// "GGUF Q4_1 x210, F32 x61, Q8_0 x1 (dequantised to float32)" or "safetensors BF16 x272 (config
// torch_dtype bfloat16)": the stored tensor types, most frequent first (headers only; no weights read).
std::string weights_dtypes(const std::string& path, const model::ModelConfig& config, const std::string& dtype) {
  std::map<std::string, int64_t> count;
  std::string format, note;
  if (std::filesystem::is_regular_file(path) && std::filesystem::path(path).extension() == ".gguf") {
    format::GgufFile file(path);
    for (const auto& t : file.tensors()) ++count[t.type_name()];
    format = "GGUF", note = "dequantised to " + dtype;
  } else {
    format::SafetensorsDirectory dir(path);
    for (const auto& name : dir.names()) ++count[format::safetensors_dtype_name(dir.info(name).dtype)];
    format = "safetensors", note = "config torch_dtype " + config.torch_dtype;
  }
  std::vector<std::pair<std::string, int64_t>> sorted(count.begin(), count.end());
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string s = format;
  for (size_t i = 0; i < sorted.size(); ++i)
    s += (i ? ", " : " ") + sorted[i].first + " x" + std::to_string(sorted[i].second);
  return s + " (" + note + ")";
}

int run_info(const std::vector<std::string>& args) {
  InfoOptions opt;
  Schema schema("info", "Describe a base model (HF directory or .gguf); optionally time a forward pass");
  add_model_options(schema, opt.base, "HF model directory (config.json + safetensors) or .gguf file");
  schema.add("forward_tokens", &opt.forward_tokens, "run one forward pass over this many random tokens (0 = none)")
      .add("seed", &opt.seed, "seed of the random tokens");
  if (!schema.parse(args, std::cout)) return 0;
  const auto load = load_options(opt.base);  // every option checked before any output (--device cuda on a CPU build)

  const auto c = model::load_model_config(opt.base.model);
  auto& out = std::cout;
  out << "model          " << opt.base.model << "\n"
      << "architecture   " << c.architecture << " (" << c.num_layers << " layers, hidden " << c.hidden_size << ", MLP "
      << c.intermediate_size << ", vocab " << c.vocab_size << ")\n"
      << "attention      " << c.num_heads << " heads, " << c.num_kv_heads << " KV heads, head dim " << c.head_dim
      << (c.attention_output_bias ? ", q/k/v/o bias"
          : c.attention_bias      ? ", q/k/v bias"
                                  : "")
      << (c.sliding_window ? ", sliding window " + std::to_string(*c.sliding_window) : std::string()) << "\n"
      << "parameters     " << with_commas(c.num_parameters())
      << (c.tie_word_embeddings ? " (tied input/output embeddings)" : " (untied embeddings)") << "\n"
      << "weights dtype  " << weights_dtypes(opt.base.model, c, opt.base.dtype) << "\n"
      << "rope           " << rope_summary(c) << "\n"
      << "context length " << c.max_position << " positions\n"
      << "special tokens bos " << c.bos_token_id << ", eos " << c.eos_token_id << "\n";
  if (opt.forward_tokens <= 0) return 0;

  auto t0 = std::chrono::steady_clock::now();
  auto loaded = model::load_model(opt.base.model, load);
  auto t1 = std::chrono::steady_clock::now();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(opt.seed));
  auto ids = torch::randint(c.vocab_size, {1, opt.forward_tokens}, gen, torch::kInt64).to(load.device);
  torch::NoGradGuard no_grad;
  auto logits = loaded.model->forward(ids);
  auto summary = logits.to(torch::kFloat).cpu();
  auto t2 = std::chrono::steady_clock::now();
  const double load_s = std::chrono::duration<double>(t1 - t0).count();
  const double fwd_s = std::chrono::duration<double>(t2 - t1).count();
  out << std::fixed << std::setprecision(3) << "load           " << load_s << " s (" << loaded.format << ", "
      << opt.base.dtype << " on " << opt.base.device << ")\n"
      << "forward        " << opt.forward_tokens << " tokens in " << fwd_s << " s (" << std::setprecision(1)
      << opt.forward_tokens / fwd_s << " tokens/s)\n"
      << std::setprecision(4) << "logits         mean " << summary.mean().item<double>() << ", std "
      << summary.std().item<double>() << ", next-token argmax " << summary[0][-1].argmax().item<int64_t>() << "\n";
  TORCH_CHECK(torch::isfinite(summary).all().item<bool>(), opt.base.model,
              ": the forward pass produced non-finite logits");
  return 0;
}

}  // namespace

int info_command(const std::vector<std::string>& args) { return run_info(args); }

}  // namespace uio::cli
