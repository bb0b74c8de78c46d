// tools/eval.cpp — `uio eval`: long-context evaluation of a base model with a trained memory compressor
// against the alternatives on the same harness (trainer/evaluate.h): perplexity of the last
// score_tokens tokens of held-out document prefixes of each length, passkey retrieval and a
// needle-in-a-haystack grid over held-out text. Writes results.json (every number and its settings),
// results.md (tables) and PNG plots (scripts/plot-eval.py, matplotlib) to out_dir.
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "data/passkey.h"
#include "data/progress.h"
#include "data/sampler.h"
#include "data/token_store.h"
#include "data/tokenizer.h"
#include "model/device_stats.h"
#include "model/memory_io.h"
#include "model/weights.h"
#include "tools/list_options.h"
#include "tools/model_options.h"
#include "tools/options.h"
#include "trainer/evaluate.h"

namespace uio::cli {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

struct EvalOptions {
  ModelInput base;
  std::string memory, data, sampler = "join", out_dir = "out/eval";
  std::string methods = "uio,truncate,linear,ntk,dynamic,yarn";
  std::string lengths = "4096,8192,16384,32768,65536,102400";
  int64_t score_tokens = 1024, documents = 4, truncate_window = 0, chunk = 8, seed = 0;
  std::string passkey_lengths, passkey_depths = "0,0.25,0.5,0.75,1";
  int64_t passkey_trials = 2, digits = 5;
  std::string needle_lengths, needle_depths = "0,0.25,0.5,0.75,1";
  bool plot = true;
  std::string python = std::string(UIO_SOURCE_DIR) + "/.venv/bin/python";
};

// Runs one measurement; an out-of-memory error becomes the status "oom" instead of a number.
template <typename Fn>
std::string guarded(const torch::Device& device, Fn fn) {
  try {
    fn();
    return "ok";
  } catch (const c10::OutOfMemoryError&) {
    model::release_cached_memory(device);
    return "oom";
  }
}

// Whether the greedy answer's first number is the expected one.
bool answer_matches(const std::string& text, const std::string& expected) {
  const auto begin = text.find_first_of("0123456789");
  if (begin == std::string::npos) return false;
  const auto end = text.find_first_not_of("0123456789", begin);
  return text.substr(begin, end == std::string::npos ? std::string::npos : end - begin) == expected;
}

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

// results.md: perplexity (methods x lengths), passkey and needle accuracy.
std::string markdown(const Json& r) {
  std::ostringstream md;
  auto table = [&](const char* title, const Json& rows, const char* value_key, bool percent) {
    if (rows.empty()) return;
    std::vector<int64_t> lengths;
    std::vector<std::string> methods;
    for (const auto& row : rows) {
      if (std::find(lengths.begin(), lengths.end(), row["length"].get<int64_t>()) == lengths.end())
        lengths.push_back(row["length"]);
      if (std::find(methods.begin(), methods.end(), row["method"].get<std::string>()) == methods.end())
        methods.push_back(row["method"]);
    }
    md << "### " << title << "\n\n| method |";
    for (auto L : lengths) md << " " << L << " |";
    md << "\n|---|";
    for (size_t i = 0; i < lengths.size(); ++i) md << "---|";
    md << "\n";
    for (const auto& m : methods) {
      md << "| " << m << " |";
      for (auto L : lengths) {
        std::string cell = "";
        double sum = 0;
        int n = 0;
        for (const auto& row : rows)
          if (row["method"] == m && row["length"] == L) {
            if (row["status"] != "ok") cell = row["status"] == "oom" ? "OOM" : row["status"].get<std::string>();
            else sum += row[value_key].get<double>(), ++n;
          }
        if (cell.empty() && n) cell = percent ? fixed(100.0 * sum / n, 0) + "%" : fixed(sum / n, 3);
        md << " " << cell << " |";
      }
      md << "\n";
    }
    md << "\n";
  };
  table("Perplexity of the last tokens by context length", r["perplexity"], "ppl", false);
  table("Passkey retrieval (accuracy over depths and trials)", r["passkey"], "accuracy", true);
  table("Needle in a haystack (accuracy over depths)", r["needle"], "accuracy", true);
  return md.str();
}

}  // namespace

int eval_command(const std::vector<std::string>& args) {
  EvalOptions opt;
  Schema schema("eval", "Long-context evaluation: uio's memory against truncation and RoPE-scaling baselines "
                        "(perplexity by context length, passkey, needle in a haystack)");
  add_model_options(schema, opt.base, "base model (HF directory or .gguf)");
  schema.add("memory", &opt.memory, "trained compressor for method uio: a checkpoint, export or compressor directory")
      .add("data", &opt.data, "token store (uio prepare) whose held-out documents are scored and used as haystack")
      .add("sampler", &opt.sampler, "held-out documents as whole long ones (long_only) or joined with EOS (join)")
      .add("documents", &opt.documents, "held-out documents (of the longest length) scored per length")
      .add("methods", &opt.methods, "comma-separated: uio, truncate, linear, ntk, dynamic, yarn")
      .add("lengths", &opt.lengths, "context lengths for perplexity, comma-separated")
      .add("score_tokens", &opt.score_tokens, "perplexity of this many last tokens of each prefix")
      .add("truncate_window", &opt.truncate_window, "tokens the truncate baseline sees (0: the model's trained window)")
      .add("chunk", &opt.chunk, "segments per batched call when reading with memory")
      .add("passkey_lengths", &opt.passkey_lengths, "prompt lengths for passkey retrieval (empty: none)")
      .add("passkey_depths", &opt.passkey_depths, "depths of the key in the filler, in [0, 1]")
      .add("passkey_trials", &opt.passkey_trials, "keys per length and depth")
      .add("needle_lengths", &opt.needle_lengths, "prompt lengths for the needle grid over held-out text (empty: none)")
      .add("needle_depths", &opt.needle_depths, "needle depths, in [0, 1]")
      .add("digits", &opt.digits, "digits of the passkey and the needle's number")
      .add("seed", &opt.seed, "seed of the keys and of the document order")
      .add("out_dir", &opt.out_dir, "where results.json, results.md and the plots go")
      .add("plot", &opt.plot, "draw ppl.png and needle-*.png with scripts/plot-eval.py (matplotlib)")
      .add("python", &opt.python, "Python with matplotlib, for the plots");
  if (!schema.parse(args, std::cout)) return 0;

  std::vector<trainer::EvalMethod> methods;
  for (const auto& name : split_list("methods", opt.methods)) methods.push_back(trainer::parse_eval_method(name));
  const auto lengths = opt.lengths.empty() ? std::vector<int64_t>{} : int_list("lengths", opt.lengths);
  const auto passkey_lengths = opt.passkey_lengths.empty() ? std::vector<int64_t>{} : int_list("passkey_lengths", opt.passkey_lengths);
  const auto needle_lengths = opt.needle_lengths.empty() ? std::vector<int64_t>{} : int_list("needle_lengths", opt.needle_lengths);
  const auto passkey_depths = fraction_list("passkey_depths", opt.passkey_depths);
  const auto needle_depths = fraction_list("needle_depths", opt.needle_depths);
  if (opt.score_tokens < 1) throw OptionError("score_tokens must be >= 1");
  for (auto L : lengths)
    if (L <= opt.score_tokens)
      throw OptionError("lengths: " + std::to_string(L) + " must exceed score_tokens (" + std::to_string(opt.score_tokens) + ")");

  const auto load = load_options(opt.base);
  auto loaded = model::load_model(opt.base.model, load);
  trainer::Evaluator ev;
  ev.base = loaded.model;
  ev.truncate_window = opt.truncate_window;
  ev.chunk = opt.chunk;
  if (std::find(methods.begin(), methods.end(), trainer::EvalMethod::uio) != methods.end()) {
    if (opt.memory.empty()) throw OptionError("method uio needs --memory (a checkpoint, export or compressor directory)");
    auto memory = model::load_memory(opt.memory, loaded.config, model::identify(opt.base.model, loaded.config), load.device);
    memory.compressor->to(load.dtype);
    memory.compressor->eval();
    ev.compressor = memory.compressor;
  }
  std::unique_ptr<data::Tokenizer> tokenizer;  // for the prompts of the retrieval tests only
  if (!passkey_lengths.empty() || !needle_lengths.empty()) tokenizer = data::load_tokenizer(opt.base.model);

  // Held-out documents: as long as the longest context, the same ones for every method and length.
  std::vector<torch::Tensor> documents;
  std::vector<int64_t> haystack;
  if ((!lengths.empty() || !needle_lengths.empty())) {
    if (opt.data.empty()) throw OptionError("perplexity and needle evaluation need --data (a token store)");
    data::TokenStore store(opt.data);
    data::SamplerOptions so;
    so.seq_len = std::max(lengths.empty() ? int64_t{1} : *std::max_element(lengths.begin(), lengths.end()),
                          needle_lengths.empty() ? int64_t{1} : *std::max_element(needle_lengths.begin(), needle_lengths.end()));
    so.mode = data::parse_sampler_mode(opt.sampler);
    so.split = data::Split::heldout;
    so.seed = static_cast<uint64_t>(opt.seed);
    data::Sampler sampler(store, so);
    const int64_t count = std::min(opt.documents, sampler.sequences_per_epoch());
    for (int64_t i = 0; i < count; ++i) documents.push_back(sampler.next().tokens);
    if (!needle_lengths.empty()) {
      auto t = documents.front();
      haystack.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    }
  }

  const int64_t total = static_cast<int64_t>(methods.size()) *
                        (static_cast<int64_t>(lengths.size() * documents.size()) +
                         static_cast<int64_t>(passkey_lengths.size() * passkey_depths.size()) * opt.passkey_trials +
                         static_cast<int64_t>(needle_lengths.size() * needle_depths.size()));
  data::ProgressBar bar(std::cerr, "eval", total, "runs", data::ProgressBar::is_terminal(std::cerr));
  int64_t done = 0;
  const auto t0 = std::chrono::steady_clock::now();

  Json results = {{"settings", schema.to_ini()},
                  {"model", opt.base.model},
                  {"memory", opt.memory},
                  {"device", load.device.str()},
                  {"dtype", opt.base.dtype},
                  {"trained_window", ev.trained_window()},
                  {"truncate_window", ev.window()},
                  {"documents", documents.size()},
                  {"perplexity", Json::array()},
                  {"passkey", Json::array()},
                  {"needle", Json::array()}};
  if (ev.compressor) {
    results["segment_len"] = ev.compressor->segment_len();
    results["num_memory_tokens"] = ev.compressor->num_memory_tokens();
  }
  for (auto method : methods) {
    const std::string name = trainer::eval_method_name(method);
    for (auto L : lengths) {
      double loss = 0;
      int64_t tokens = 0;
      bool stopped = false;
      std::string status = "ok";
      for (const auto& doc : documents) {
        if (!stopped) {
          status = guarded(load.device, [&] {
            auto [sum, n] = ev.score_tail(method, doc.narrow(0, 0, L), opt.score_tokens);
            loss += sum, tokens += n;
          });
          stopped = status != "ok";  // a method out of memory at this length stays so for the others
        }
        bar.update(++done, name + " " + std::to_string(L));
      }
      Json row = {{"method", name}, {"length", L}, {"status", status}, {"documents", documents.size()},
                  {"scored_tokens", tokens}};
      if (status == "ok") row["ppl"] = std::exp(loss / static_cast<double>(tokens)), row["mean_loss"] = loss / tokens;
      results["perplexity"].push_back(row);
    }
    for (auto L : passkey_lengths)
      for (double depth : passkey_depths) {
        int64_t correct = 0;
        std::string status = "ok";
        for (int64_t trial = 0; trial < opt.passkey_trials; ++trial) {
          const auto prompt = data::make_passkey_prompt(*tokenizer, L, depth, static_cast<int>(opt.digits),
                                                        static_cast<uint64_t>(opt.seed * 1000003 + trial * 7919 + L));
          if (status == "ok")
            status = guarded(load.device, [&] {
              const auto out = ev.greedy(method, prompt.ids, opt.digits + 4);
              std::vector<int32_t> ids(out.begin(), out.end());
              correct += answer_matches(tokenizer->decode(ids, true), prompt.answer);
            });
          bar.update(++done, name + " passkey " + std::to_string(L));
        }
        Json row = {{"method", name}, {"length", L}, {"depth", depth}, {"trials", opt.passkey_trials}, {"status", status}};
        if (status == "ok") row["correct"] = correct, row["accuracy"] = static_cast<double>(correct) / opt.passkey_trials;
        results["passkey"].push_back(row);
      }
    for (auto L : needle_lengths)
      for (double depth : needle_depths) {
        const auto prompt = data::make_needle_prompt(*tokenizer, haystack, L, depth, static_cast<int>(opt.digits),
                                                     static_cast<uint64_t>(opt.seed * 1000003 + L + 17));
        bool hit = false;
        const auto status = guarded(load.device, [&] {
          const auto out = ev.greedy(method, prompt.ids, opt.digits + 4);
          std::vector<int32_t> ids(out.begin(), out.end());
          hit = answer_matches(tokenizer->decode(ids, true), prompt.answer);
        });
        Json row = {{"method", name}, {"length", L}, {"depth", depth}, {"status", status}};
        if (status == "ok") row["accuracy"] = hit ? 1.0 : 0.0;
        results["needle"].push_back(row);
        bar.update(++done, name + " needle " + std::to_string(L));
      }
  }
  bar.finish();
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::localtime(&now));
  results["date"] = date;
  results["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  fs::create_directories(opt.out_dir);
  std::ofstream(fs::path(opt.out_dir) / "results.json") << results.dump(2) << "\n";
  const auto md = markdown(results);
  std::ofstream(fs::path(opt.out_dir) / "results.md") << md;
  std::cout << md << "results: " << opt.out_dir << "/results.json, results.md\n";
  if (opt.plot) {
    const auto script = std::string(UIO_SOURCE_DIR) + "/scripts/plot-eval.py";
    const std::string command = "'" + opt.python + "' '" + script + "' '" + opt.out_dir + "/results.json' '" +
                                opt.out_dir + "' 2>&1";
    if (std::system(command.c_str()) != 0)
      std::cerr << "eval: warning: the plots were not drawn (" << command << " failed; it needs matplotlib)\n";
    else
      std::cout << "plots: " << opt.out_dir << "/ppl.png" << (needle_lengths.empty() ? "" : ", needle-*.png") << "\n";
  }
  return 0;
}

}  // namespace uio::cli
