// trainer/eval_run.h — a whole long-context evaluation as one library call: load the base model (and a
// trained compressor for method uio), draw held-out documents, score perplexity of the last tokens of
// each prefix length for every method, answer passkey and needle prompts, and return every number with
// its settings; plus the report writers (results.json, results.md, plots). `uio eval` parses options
// into an EvalConfig and calls run_eval and write_eval_report; tests call them directly. The per-method
// scoring itself is trainer/evaluate.h's.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/memory_pass.h"
#include "model/weights.h"
#include "trainer/evaluate.h"

namespace uio::trainer {

struct EvalConfig {
  std::string model;  // base model (HF directory or .gguf)
  model::LoadOptions load;  // dtype and device
  std::string dtype_name = "float32";
  std::string memory;  // compressor for method uio (checkpoint, export or compressor directory)
  std::string data;  // token store whose held-out documents are scored and used as haystack
  std::string sampler = "join";
  int64_t documents = 4;
  std::vector<EvalMethod> methods;
  std::vector<int64_t> lengths;
  int64_t score_tokens = 1024, truncate_window = 0, chunk = model::kDefaultChunk, seed = 0;
  std::vector<int64_t> passkey_lengths;
  std::vector<double> passkey_depths;
  int64_t passkey_trials = 2, digits = 5;
  std::vector<int64_t> needle_lengths;
  std::vector<double> needle_depths;
  // Retrieval in the training's own synthetic formats (data/retrieval_task.h) over held-out text: did the
  // run learn what it was trained on, apart from whether that transfers to the passkey's template?
  std::vector<int64_t> retrieval_lengths;
  int64_t retrieval_trials = 10;
  // Every planted fact ends at least this many tokens before the answer (0: anywhere, as in training); the
  // compressor's segment length puts every fact in memory, out of the question's own segment.
  int64_t retrieval_distance = 0;
  int64_t retrieval_min_digits = 4, retrieval_max_digits = 7;  // of each planted number, as in training
  int64_t retrieval_max_facts = 4;  // facts planted per prompt: 1 to this
  bool retrieval_cue = false;  // cued questions (data::RetrievalOptions::cue), as a run trained with them
  std::string settings_ini;  // the resolved options, recorded in the results
};

// Runs the evaluation (progress on `progress`); throws std::invalid_argument on inconsistent settings.
// Methods that run out of device memory at a length get status "oom" there instead of a number.
nlohmann::json run_eval(const EvalConfig& config, std::ostream& progress);

// results.md: perplexity (methods x lengths), passkey and needle accuracy.
std::string eval_markdown(const nlohmann::json& results);

// Writes results.json and results.md into `out_dir` (each through a temporary file and a rename), and,
// when `plot`, draws ppl.png and needle-*.png with the plot-eval.py helper run by `python`
// (data/helper_scripts.h; a plot that fails is a warning on `log`, the numbers are written anyway).
void write_eval_report(const nlohmann::json& results, const std::string& out_dir, bool plot, const std::string& python,
                       std::ostream& log);

// Whether the greedy answer's first number is `expected` (passkey and needle scoring).
bool answer_matches(const std::string& text, const std::string& expected);

// Whether the greedy answer's first numbers are the numbers of `expected` in order (" 40821, 7731." asks for
// 40821 then 7731; retrieval scoring).
bool answer_matches_all(const std::string& text, const std::string& expected);

}  // namespace uio::trainer
