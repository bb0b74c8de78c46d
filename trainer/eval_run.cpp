// trainer/eval_run.cpp — the evaluation loop over methods, lengths and prompts, and its reports.
#include "trainer/eval_run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "data/format/atomic_file.h"
#include "data/helper_scripts.h"
#include "data/passkey.h"
#include "data/retrieval_task.h"
#include "data/progress.h"
#include "data/sampler.h"
#include "data/token_store.h"
#include "data/tokenizer.h"
#include "model/device_stats.h"
#include "model/memory_io.h"
#include "trainer/checkpoint.h"

namespace uio::trainer {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

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

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

// Held-out documents as long as the longest context, the same ones for every method and length.
std::vector<torch::Tensor> heldout_documents(const EvalConfig& c, int64_t length) {
  if (c.data.empty()) throw std::invalid_argument("eval: perplexity and needle evaluation need --data (a token store)");
  data::TokenStore store(c.data);
  data::SamplerOptions so;
  so.seq_len = length;
  so.mode = data::parse_sampler_mode(c.sampler);
  so.split = data::Split::heldout;
  so.seed = static_cast<uint64_t>(c.seed);
  data::Sampler sampler(store, so);
  const int64_t count = std::min(c.documents, sampler.sequences_per_epoch());
  std::vector<torch::Tensor> documents;
  for (int64_t i = 0; i < count; ++i) documents.push_back(sampler.next().tokens);
  return documents;
}

void check(const EvalConfig& c) {
  if (c.score_tokens < 1) throw std::invalid_argument("eval: score_tokens must be >= 1");
  if (c.chunk < 1) throw std::invalid_argument("eval: chunk must be >= 1");
  if (c.documents < 1) throw std::invalid_argument("eval: documents must be >= 1");
  if (c.passkey_trials < 1) throw std::invalid_argument("eval: passkey_trials must be >= 1");
  if (c.digits < 1 || c.digits > 18) throw std::invalid_argument("eval: digits must lie in [1, 18]");
  if (c.truncate_window < 0) throw std::invalid_argument("eval: truncate_window must be >= 0 (0: the model's window)");
  for (auto L : c.passkey_lengths)
    if (L < 1) throw std::invalid_argument("eval: passkey_lengths: " + std::to_string(L) + " must be >= 1");
  for (auto L : c.needle_lengths)
    if (L < 1) throw std::invalid_argument("eval: needle_lengths: " + std::to_string(L) + " must be >= 1");
  if (c.retrieval_trials < 1) throw std::invalid_argument("eval: retrieval_trials must be >= 1");
  if (c.retrieval_distance < 0) throw std::invalid_argument("eval: retrieval_distance must be >= 0");
  if (const auto e = data::digit_range_error("retrieval_min_digits", "retrieval_max_digits", c.retrieval_min_digits,
                                             c.retrieval_max_digits);
      !e.empty())
    throw std::invalid_argument("eval: " + e);
  if (c.retrieval_max_facts < 1 || c.retrieval_max_facts > data::kRetrievalMaxFacts)
    throw std::invalid_argument("eval: retrieval_max_facts must be in [1, " + std::to_string(data::kRetrievalMaxFacts) +
                                "]");
  for (auto L : c.retrieval_lengths)
    if (L <= c.retrieval_distance)
      throw std::invalid_argument("eval: retrieval_lengths: " + std::to_string(L) +
                                  " must exceed retrieval_distance (" + std::to_string(c.retrieval_distance) + ")");
  data::parse_sampler_mode(c.sampler);
  for (auto L : c.lengths)
    if (L <= c.score_tokens)
      throw std::invalid_argument("eval: lengths: " + std::to_string(L) + " must exceed score_tokens (" +
                                  std::to_string(c.score_tokens) + ")");
}

// The held-out documents as the haystack of retrieval prompts, in turn.
class HeldoutHaystack : public data::DocumentSource {
 public:
  explicit HeldoutHaystack(const std::vector<torch::Tensor>& documents) : documents_(documents) {}
  data::TrainingDocument next() override { return {documents_[next_++ % documents_.size()], {}}; }
  std::string state_json() const override { return Json{{"next", next_}}.dump(); }
  void restore(const std::string& json) override { next_ = Json::parse(json)["next"].get<size_t>(); }

 private:
  const std::vector<torch::Tensor>& documents_;
  size_t next_ = 0;
};

std::vector<std::string> numbers_in(const std::string& text) {
  std::vector<std::string> numbers;
  for (size_t at = text.find_first_of("0123456789"); at != std::string::npos;) {
    const auto end = text.find_first_not_of("0123456789", at);
    numbers.push_back(text.substr(at, end == std::string::npos ? std::string::npos : end - at));
    at = end == std::string::npos ? end : text.find_first_of("0123456789", end);
  }
  return numbers;
}

}  // namespace

bool answer_matches_all(const std::string& text, const std::string& expected) {
  const auto want = numbers_in(expected), got = numbers_in(text);
  return !want.empty() && got.size() >= want.size() && std::equal(want.begin(), want.end(), got.begin());
}

bool answer_matches(const std::string& text, const std::string& expected) {
  const auto got = numbers_in(text);
  return !got.empty() && got.front() == expected;
}

Json run_eval(const EvalConfig& c, std::ostream& progress) {
  check(c);
  const bool with_memory = std::any_of(c.methods.begin(), c.methods.end(), needs_memory);
  if (with_memory && c.memory.empty())
    throw std::invalid_argument(
        "eval: methods uio and truncate_lora: each needs --memory (a checkpoint, export or compressor directory)");
  const auto memory_dir = with_memory ? resolve_compressor_dir(c.memory, progress) : std::string();
  auto loaded = model::load_model(c.model, c.load);
  Evaluator ev;
  ev.base = loaded.model;
  ev.truncate_window = c.truncate_window;
  ev.chunk = c.chunk;
  if (with_memory) {
    auto memory = model::load_memory(memory_dir, loaded.config, model::identify(c.model, loaded.config), c.load.device);
    memory.compressor->to(c.load.dtype);
    memory.compressor->eval();
    ev.compressor = memory.compressor;
  }
  std::unique_ptr<data::Tokenizer> tokenizer;  // for the prompts of the retrieval tests only
  if (!c.passkey_lengths.empty() || !c.needle_lengths.empty() || !c.retrieval_lengths.empty())
    tokenizer = data::load_tokenizer(c.model);

  std::vector<torch::Tensor> documents;
  std::vector<int64_t> haystack;
  if (!c.lengths.empty() || !c.needle_lengths.empty() || !c.retrieval_lengths.empty()) {
    int64_t longest = 1;
    for (auto L : c.lengths) longest = std::max(longest, L);
    for (auto L : c.needle_lengths) longest = std::max(longest, L);
    for (auto L : c.retrieval_lengths) longest = std::max(longest, L);
    documents = heldout_documents(c, longest);
    if (!c.needle_lengths.empty()) {
      auto t = documents.front();
      haystack.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    }
  }

  const int64_t runs = static_cast<int64_t>(c.lengths.size() * documents.size()) +
                       static_cast<int64_t>(c.passkey_lengths.size() * c.passkey_depths.size()) * c.passkey_trials +
                       static_cast<int64_t>(c.needle_lengths.size() * c.needle_depths.size()) +
                       static_cast<int64_t>(c.retrieval_lengths.size()) * c.retrieval_trials;
  data::ProgressBar bar(progress, "eval", static_cast<int64_t>(c.methods.size()) * runs, "runs",
                        data::ProgressBar::is_terminal(progress));
  int64_t done = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const auto device = c.load.device;

  Json results = {{"settings", c.settings_ini},
                  {"model", c.model},
                  {"memory", c.memory},
                  {"device", device.str()},
                  {"dtype", c.dtype_name},
                  {"trained_window", ev.trained_window()},
                  {"truncate_window", ev.window()},
                  {"documents", documents.size()},
                  {"perplexity", Json::array()},
                  {"passkey", Json::array()},
                  {"needle", Json::array()},
                  {"retrieval", Json::array()}};
  if (ev.compressor) {
    results["segment_len"] = ev.compressor->segment_len();
    results["num_memory_tokens"] = ev.compressor->num_memory_tokens();
  }
  // A greedy answer's first number against the expected digits.
  auto answers = [&](EvalMethod method, const std::vector<int64_t>& prompt, const std::string& expected) {
    const auto out = ev.greedy(method, prompt, c.digits + 4);
    return answer_matches(tokenizer->decode(std::vector<int32_t>(out.begin(), out.end()), true), expected);
  };
  for (auto method : c.methods) {
    const std::string name = eval_method_name(method);
    for (auto L : c.lengths) {
      double loss = 0;
      int64_t tokens = 0;
      std::string status = "ok";
      for (const auto& doc : documents) {
        if (status == "ok")  // a method out of memory at this length stays so for the other documents
          status = guarded(device, [&] {
            auto [sum, n] = ev.score_tail(method, doc.narrow(0, 0, L), c.score_tokens);
            loss += sum, tokens += n;
          });
        bar.update(++done, name + " " + std::to_string(L));
      }
      Json row = {{"method", name},
                  {"length", L},
                  {"status", status},
                  {"documents", documents.size()},
                  {"scored_tokens", tokens}};
      if (status == "ok") row["ppl"] = std::exp(loss / static_cast<double>(tokens)), row["mean_loss"] = loss / tokens;
      results["perplexity"].push_back(row);
    }
    for (auto L : c.passkey_lengths)
      for (double depth : c.passkey_depths) {
        int64_t correct = 0;
        std::string status = "ok";
        for (int64_t trial = 0; trial < c.passkey_trials; ++trial) {
          const auto prompt = data::make_passkey_prompt(*tokenizer, L, depth, static_cast<int>(c.digits),
                                                        static_cast<uint64_t>(c.seed * 1000003 + trial * 7919 + L));
          if (status == "ok") status = guarded(device, [&] { correct += answers(method, prompt.ids, prompt.answer); });
          bar.update(++done, name + " passkey " + std::to_string(L));
        }
        Json row = {
            {"method", name}, {"length", L}, {"depth", depth}, {"trials", c.passkey_trials}, {"status", status}};
        if (status == "ok") row["correct"] = correct, row["accuracy"] = static_cast<double>(correct) / c.passkey_trials;
        results["passkey"].push_back(row);
      }
    for (auto L : c.needle_lengths)
      for (double depth : c.needle_depths) {
        const auto prompt = data::make_needle_prompt(*tokenizer, haystack, L, depth, static_cast<int>(c.digits),
                                                     static_cast<uint64_t>(c.seed * 1000003 + L + 17));
        bool hit = false;
        const auto status = guarded(device, [&] { hit = answers(method, prompt.ids, prompt.answer); });
        Json row = {{"method", name}, {"length", L}, {"depth", depth}, {"status", status}};
        if (status == "ok") row["accuracy"] = hit ? 1.0 : 0.0;
        results["needle"].push_back(row);
        bar.update(++done, name + " needle " + std::to_string(L));
      }
    for (auto L : c.retrieval_lengths) {
      // The same documents for every method: a fresh source per method and length, seeded by the length.
      data::RetrievalOptions ro;
      ro.seq_len = L, ro.segment_len = L, ro.min_distance = c.retrieval_distance, ro.cue = c.retrieval_cue;
      ro.min_digits = c.retrieval_min_digits, ro.max_digits = c.retrieval_max_digits;
      ro.max_facts = c.retrieval_max_facts;
      ro.seed = static_cast<uint64_t>(c.seed * 1000003 + L + 29);
      data::RetrievalDocuments prompts(std::make_shared<HeldoutHaystack>(documents), *tokenizer, ro);
      int64_t correct = 0;
      std::string status = "ok";
      for (int64_t trial = 0; trial < c.retrieval_trials; ++trial) {
        const auto doc = prompts.make();
        const auto& q = doc.questions.back();
        const auto* ids = doc.document.ids.data_ptr<int64_t>();
        const std::vector<int64_t> prompt(ids, ids + q.answer_begin);
        if (status == "ok")
          status = guarded(device, [&] {
            const auto out = ev.greedy(method, prompt, q.answer_end - q.answer_begin + 2);
            correct +=
                answer_matches_all(tokenizer->decode(std::vector<int32_t>(out.begin(), out.end()), true), q.answer);
          });
        bar.update(++done, name + " retrieval " + std::to_string(L));
      }
      Json row = {{"method", name},
                  {"length", L},
                  {"distance", c.retrieval_distance},
                  {"cue", c.retrieval_cue},
                  {"max_facts", c.retrieval_max_facts},
                  {"digits", std::to_string(c.retrieval_min_digits) + "-" + std::to_string(c.retrieval_max_digits)},
                  {"trials", c.retrieval_trials},
                  {"status", status}};
      if (status == "ok") row["correct"] = correct, row["accuracy"] = static_cast<double>(correct) / c.retrieval_trials;
      results["retrieval"].push_back(row);
    }
  }
  bar.finish();
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::localtime(&now));
  results["date"] = date;
  results["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return results;
}

std::string eval_markdown(const Json& r) {
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
        std::string cell;
        double sum = 0;
        int n = 0;
        for (const auto& row : rows)
          if (row["method"] == m && row["length"] == L) {
            if (row["status"] != "ok")
              cell = row["status"] == "oom" ? "OOM" : row["status"].get<std::string>();
            else
              sum += row[value_key].get<double>(), ++n;
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
  if (r.contains("retrieval")) {
    const auto& first = r["retrieval"].empty() ? Json::object() : r["retrieval"][0];
    const int64_t distance = first.value("distance", int64_t{0});
    std::string title = "Retrieval in the training's synthetic formats (held-out text";
    if (first.value("cue", false)) title += ", cued questions";
    if (distance > 0) title += ", every fact at least " + std::to_string(distance) + " tokens before the answer";
    title += "; accuracy over trials)";
    table(title.c_str(), r["retrieval"], "accuracy", true);
  }
  return md.str();
}

void write_eval_report(const Json& results, const std::string& out_dir, bool plot, const std::string& python,
                       std::ostream& log) {
  fs::create_directories(out_dir);
  const auto json_path = (fs::path(out_dir) / "results.json").string();
  format::write_file_atomic(json_path, results.dump(2) + "\n");
  const auto md = eval_markdown(results);
  format::write_file_atomic((fs::path(out_dir) / "results.md").string(), md);
  log << md << "results: " << json_path << ", results.md\n";
  if (!plot) return;
  std::string command;
  try {
    command = data::shell_quote(data::python_interpreter(python)) + " " +
              data::shell_quote(data::helper_script("plot-eval.py")) + " " + data::shell_quote(json_path) + " " +
              data::shell_quote(out_dir) + " 2>&1";
  } catch (const std::exception& e) {
    log << "eval: warning: the plots were not drawn (" << e.what() << ")\n";
    return;
  }
  if (std::system(command.c_str()) != 0)
    log << "eval: warning: the plots were not drawn (" << command << " failed; it needs matplotlib)\n";
  else
    log << "plots: " << out_dir << "/ppl.png" << (results["needle"].empty() ? "" : ", needle-*.png") << "\n";
}

}  // namespace uio::trainer
