// tools/generate.cpp — `uio generate`: text in (--prompt or stdin), tokens streamed out as they are
// decoded, tokens/s at the end. Greedy by default; --temperature/--top_k/--top_p sample.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>

#include "data/chat.h"
#include "data/progress.h"
#include "data/tokenizer.h"
#include "model/generate.h"
#include "model/memory_io.h"
#include "model/weights.h"
#include "tools/commands.h"
#include "tools/model_options.h"
#include "tools/options.h"
#include "trainer/checkpoint.h"

namespace uio::cli {
namespace {

struct GenerateOptions {
  ModelInput base;
  std::string memory;  // a trained memory compressor (checkpoint or export directory), or none
  std::string prompt;  // empty: read standard input
  std::string prompt_file;
  bool chat = false;
  int64_t max_new_tokens = 128;
  double temperature = 0.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  int64_t seed = 0;
};

// Writes complete UTF-8 characters as they arrive; a token may end inside one.
class Utf8Stream {
 public:
  explicit Utf8Stream(std::ostream& out) : out_(out) {}
  void write(const std::string& bytes) {
    pending_ += bytes;
    size_t cut = pending_.size();
    // Hold back a trailing incomplete sequence (at most 3 bytes).
    for (size_t back = 1; back <= 3 && back <= pending_.size(); ++back) {
      const unsigned char c = pending_[pending_.size() - back];
      if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
      const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      if (need > back) cut = pending_.size() - back;
      break;
    }
    out_ << pending_.substr(0, cut) << std::flush;
    pending_.erase(0, cut);
  }
  void finish() { out_ << pending_ << std::flush, pending_.clear(); }

 private:
  std::ostream& out_;
  std::string pending_;
};

// The prompt: --prompt, else the text of --prompt_file (a regular file: a FIFO or a directory is named, not
// waited on), else standard input; an empty prompt is an error.
std::string read_prompt(std::string prompt, const std::string& prompt_file) {
  if (prompt.empty() && !prompt_file.empty()) {
    std::error_code ec;
    if (std::filesystem::is_directory(prompt_file, ec))
      throw OptionError("--prompt_file: '" + prompt_file + "' is a directory; expected a text file");
    if (std::filesystem::exists(prompt_file, ec) && !std::filesystem::is_regular_file(prompt_file, ec))
      throw OptionError("--prompt_file: '" + prompt_file +
                        "' is not a regular file (a FIFO or device); "
                        "pipe it to standard input instead");
    std::ifstream in(prompt_file, std::ios::binary);
    if (!in) throw OptionError("--prompt_file: cannot open '" + prompt_file + "'");
    prompt.assign(std::istreambuf_iterator<char>(in), {});
    if (in.bad()) throw OptionError("--prompt_file: cannot read '" + prompt_file + "'");
  }
  if (prompt.empty()) prompt.assign(std::istreambuf_iterator<char>(std::cin), {});
  if (prompt.empty()) throw OptionError("the prompt is empty: give --prompt TEXT or pipe text to standard input");
  return prompt;
}

int run_generate(const std::vector<std::string>& args) {
  GenerateOptions opt;
  Schema schema("generate", "Continue a prompt with a base model (HF directory or .gguf)");
  add_model_options(schema, opt.base, "HF model directory or .gguf file");
  schema.add("memory", &opt.memory, "memory compressor directory (checkpoint or export): read long prompts with memory")
      .add("prompt", &opt.prompt, "the prompt text (empty: --prompt_file, else standard input)")
      .add("prompt_file", &opt.prompt_file, "read the prompt from this file (e.g. a 100K-token document)")
      .add("chat", &opt.chat, "wrap the prompt in the model's chat format (one user turn)")
      .add("max_new_tokens", &opt.max_new_tokens,
           "how many tokens to generate at most (without --memory: at most the model's max_position_embeddings)")
      .add("temperature", &opt.temperature, "sampling temperature; 0 = greedy")
      .add("top_k", &opt.top_k, "sample among the k most likely tokens (0 = all)")
      .add("top_p", &opt.top_p, "nucleus sampling: smallest set with this much probability (1 = all)")
      .add("seed", &opt.seed, "seed of the sampler");
  if (!schema.parse(args, std::cout)) return 0;
  model::SamplingOptions sampling;
  sampling.max_new_tokens = opt.max_new_tokens;
  sampling.temperature = opt.temperature;
  sampling.top_k = opt.top_k;
  sampling.top_p = opt.top_p;
  sampling.seed = static_cast<uint64_t>(opt.seed);
  try {
    model::validate(sampling);
  } catch (const std::invalid_argument& e) {
    throw OptionError(std::string("--") + e.what());  // the library names the option
  }
  // Without memory, a limit past the positions the model holds would only ever produce text it was not
  // trained for. With memory, generated text is compressed segment by segment like the prompt, so no window
  // bounds it (and the cache grows with the tokens generated, not with the limit).
  const auto config = model::load_model_config(opt.base.model);
  if (opt.memory.empty() && opt.max_new_tokens > config.max_position)
    throw OptionError("--max_new_tokens is " + std::to_string(opt.max_new_tokens) + ", more than the " +
                      std::to_string(config.max_position) + " positions " + opt.base.model +
                      " was trained on (max_position_embeddings); ask for at most that many");
  opt.prompt = read_prompt(opt.prompt, opt.prompt_file);
  // A checkpoint is verified (its manifest's sizes and checksums) before anything is loaded from it.
  const auto memory_dir = opt.memory.empty() ? std::string() : trainer::resolve_compressor_dir(opt.memory, std::cerr);

  auto tokenizer = data::load_tokenizer(opt.base.model);
  const std::string text = opt.chat ? data::chat_prompt(*tokenizer, opt.prompt) : opt.prompt;
  auto ids32 = tokenizer->encode(text, /*parse_special=*/opt.chat);
  std::vector<int64_t> prompt;
  if (tokenizer->add_bos() && tokenizer->bos_id() >= 0 && !opt.chat) prompt.push_back(tokenizer->bos_id());
  prompt.insert(prompt.end(), ids32.begin(), ids32.end());

  const auto load = load_options(opt.base);
  auto loaded = model::load_model(opt.base.model, load);

  sampling.eos_id = tokenizer->eos_id();
  if (opt.chat && tokenizer->token_id("<|im_end|>") >= 0) sampling.eos_id = tokenizer->token_id("<|im_end|>");

  Utf8Stream stream(std::cout);
  if (!opt.chat && opt.memory.empty()) stream.write(opt.prompt);
  const auto t0 = std::chrono::steady_clock::now();
  auto first = t0;
  int64_t count = 0;
  auto emit = [&](int64_t id) {
    if (count++ == 0) first = std::chrono::steady_clock::now();
    if (!tokenizer->is_special(static_cast<int32_t>(id)))
      stream.write(tokenizer->token_bytes(static_cast<int32_t>(id)));
    return true;
  };
  try {
    if (opt.memory.empty()) {
      model::generate(loaded.model, prompt, sampling, emit);
    } else {
      auto memory =
          model::load_memory(memory_dir, loaded.config, model::identify(opt.base.model, loaded.config), load.device);
      memory.compressor->to(load.dtype);
      model::MemoryReader reader(loaded.model, memory.compressor);
      const int64_t segments = static_cast<int64_t>(prompt.size()) / memory.options.segment_len;
      data::ProgressBar bar(std::cerr, "reading prompt", segments, "segments",
                            data::ProgressBar::is_terminal(std::cerr));
      model::generate(reader, prompt, sampling, emit, [&](int64_t done, int64_t) {
        bar.update(done);
        if (done == segments) bar.finish();
      });
    }
  } catch (const model::NonFiniteLogitsError& e) {
    stream.finish();
    std::cout << "\n" << std::flush;
    throw std::runtime_error(opt.base.model + (opt.memory.empty() ? "" : " with the memory " + opt.memory) + ": " +
                             e.what());
  }
  stream.finish();
  std::cout << "\n" << std::flush;  // the text ends its line; the statistics go to stderr
  const auto t1 = std::chrono::steady_clock::now();
  const double prefill = std::chrono::duration<double>(first - t0).count();
  const double decode = std::chrono::duration<double>(t1 - first).count();
  std::cerr << "[" << prompt.size() << " prompt tokens in " << std::fixed << std::setprecision(2) << prefill << " s; "
            << count << " new tokens, " << std::setprecision(1) << (count > 1 ? (count - 1) / decode : 0.0)
            << " tokens/s]\n";
  return 0;
}

}  // namespace

int generate_command(const std::vector<std::string>& args) { return run_generate(args); }

}  // namespace uio::cli
