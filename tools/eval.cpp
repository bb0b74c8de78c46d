// tools/eval.cpp — `uio eval`: options into trainer::EvalConfig, then trainer/eval_run.h does the work
// (perplexity by context length, passkey and needle retrieval for uio and the baselines) and writes
// results.json, results.md and the plots to out_dir.
#include <iostream>

#include "tools/list_options.h"
#include "tools/model_options.h"
#include "tools/options.h"
#include "trainer/eval_run.h"

namespace uio::cli {
namespace {

struct EvalOptions {
  ModelInput base;
  std::string memory, data, sampler = "join", out_dir = "out/eval";
  std::string methods = "uio,truncate,linear,ntk,dynamic,yarn";
  std::string lengths = "4096,8192,16384,32768,65536,102400";
  int64_t score_tokens = 1024, documents = 4, truncate_window = 0, chunk = model::kDefaultChunk, seed = 0;
  std::string passkey_lengths, passkey_depths = "0,0.25,0.5,0.75,1";
  int64_t passkey_trials = 2, digits = 5;
  std::string needle_lengths, needle_depths = "0,0.25,0.5,0.75,1";
  std::string retrieval_lengths;
  int64_t retrieval_trials = 10, retrieval_distance = 0;
  int64_t retrieval_min_digits = 4, retrieval_max_digits = 7, retrieval_max_facts = 4;
  bool retrieval_cue = false;
  bool plot = true;
  std::string python;  // empty: $UIO_PYTHON, else python3 on PATH
};

std::vector<int64_t> optional_int_list(const std::string& key, const std::string& text) {
  return text.empty() ? std::vector<int64_t>{} : int_list(key, text);
}

}  // namespace

int eval_command(const std::vector<std::string>& args) {
  EvalOptions opt;
  Schema schema("eval",
                "Long-context evaluation: uio's memory against truncation and RoPE-scaling baselines "
                "(perplexity by context length, passkey, needle in a haystack)");
  add_model_options(schema, opt.base, "base model (HF directory or .gguf)");
  schema.add("memory", &opt.memory, "trained compressor for method uio: a checkpoint, export or compressor directory")
      .add("data", &opt.data, "token store (uio prepare) whose held-out documents are scored and used as haystack")
      .add("sampler", &opt.sampler, "held-out documents as whole long ones (long_only) or joined with EOS (join)")
      .add("documents", &opt.documents, "held-out documents (of the longest length) scored per length")
      .add("methods", &opt.methods,
           "comma-separated: uio, truncate, truncate_lora (truncate through --memory's decoder LoRA), linear, ntk, "
           "dynamic, yarn")
      .add("lengths", &opt.lengths, "context lengths for perplexity, comma-separated")
      .add("score_tokens", &opt.score_tokens, "perplexity of this many last tokens of each prefix")
      .add("truncate_window", &opt.truncate_window, "tokens the truncate baseline sees (0: the model's trained window)")
      .add("chunk", &opt.chunk, "segments per batched call when reading with memory")
      .add("passkey_lengths", &opt.passkey_lengths, "prompt lengths for passkey retrieval (empty: none)")
      .add("passkey_depths", &opt.passkey_depths, "depths of the key in the filler, in [0, 1]")
      .add("passkey_trials", &opt.passkey_trials, "keys per length and depth")
      .add("needle_lengths", &opt.needle_lengths, "prompt lengths for the needle grid over held-out text (empty: none)")
      .add("needle_depths", &opt.needle_depths, "needle depths, in [0, 1]")
      .add("retrieval_lengths", &opt.retrieval_lengths,
           "prompt lengths for retrieval in the training's synthetic formats over held-out text (empty: none)")
      .add("retrieval_trials", &opt.retrieval_trials, "retrieval prompts per length")
      .add("retrieval_distance", &opt.retrieval_distance,
           "tokens every planted fact lies before the answer at least (0: anywhere, as in training; the segment "
           "length puts every fact in memory)")
      .add("retrieval_min_digits", &opt.retrieval_min_digits,
           "digits of each planted number in the retrieval prompts: at least (uio train --retrieval_min_digits)")
      .add("retrieval_max_digits", &opt.retrieval_max_digits, "digits of each planted number: at most")
      .add("retrieval_max_facts", &opt.retrieval_max_facts,
           "facts planted per retrieval prompt: 1 to this (uio train --retrieval_max_facts)")
      .add("retrieval_cue", &opt.retrieval_cue,
           "cued retrieval questions (one fact, ending with its own words up to the number; uio train "
           "--retrieval_cue)")
      .add("digits", &opt.digits, "digits of the passkey and the needle's number")
      .add("seed", &opt.seed, "seed of the keys and of the document order")
      .add("out_dir", &opt.out_dir, "where results.json, results.md and the plots go")
      .add("plot", &opt.plot, "draw ppl.png and needle-*.png with scripts/plot-eval.py (matplotlib)")
      .add("python", &opt.python, "Python with matplotlib, for the plots (empty: $UIO_PYTHON, else python3 on PATH)");
  if (!schema.parse(args, std::cout)) return 0;

  trainer::EvalConfig c;
  c.model = opt.base.model, c.load = load_options(opt.base), c.dtype_name = opt.base.dtype;
  c.memory = opt.memory, c.data = opt.data, c.sampler = opt.sampler, c.documents = opt.documents;
  for (const auto& name : split_list("methods", opt.methods)) c.methods.push_back(trainer::parse_eval_method(name));
  c.lengths = optional_int_list("lengths", opt.lengths);
  c.score_tokens = opt.score_tokens, c.truncate_window = opt.truncate_window, c.chunk = opt.chunk, c.seed = opt.seed;
  c.passkey_lengths = optional_int_list("passkey_lengths", opt.passkey_lengths);
  c.passkey_depths = fraction_list("passkey_depths", opt.passkey_depths);
  c.passkey_trials = opt.passkey_trials, c.digits = opt.digits;
  c.needle_lengths = optional_int_list("needle_lengths", opt.needle_lengths);
  c.needle_depths = fraction_list("needle_depths", opt.needle_depths);
  c.retrieval_lengths = optional_int_list("retrieval_lengths", opt.retrieval_lengths);
  c.retrieval_trials = opt.retrieval_trials, c.retrieval_distance = opt.retrieval_distance;
  c.retrieval_cue = opt.retrieval_cue;
  c.retrieval_min_digits = opt.retrieval_min_digits, c.retrieval_max_digits = opt.retrieval_max_digits;
  c.retrieval_max_facts = opt.retrieval_max_facts;
  c.settings_ini = schema.to_ini();
  const auto results = trainer::run_eval(c, std::cerr);
  trainer::write_eval_report(results, opt.out_dir, opt.plot, opt.python, std::cout);
  return 0;
}

}  // namespace uio::cli
