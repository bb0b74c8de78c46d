// tools/bench.cpp — `uio bench WHAT [options]`: speed measurements, one per first word. `tokenizer`:
// uio's tokenizer in MB/s on one thread and on all cores (documents in parallel), beside HF tokenizers
// on the same documents (tools/bench/tokenizer_hf.py, run with the repo's Python). Results go to
// docs/benchmarks.md by hand; this file measures and prints, it writes no files but a temporary one.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "data/prepare.h"
#include "data/tokenizer.h"
#include "tools/commands.h"
#include "tools/options.h"
#include "data/helper_scripts.h"

namespace uio::cli {

int bench_memory_command(const std::vector<std::string>& args);  // tools/bench_memory.cpp
int bench_train_command(const std::vector<std::string>& args);  // tools/bench_train.cpp

namespace {

namespace fs = std::filesystem;

// Pieces longer than this are cut at a line boundary, so a single big file still gives threads work.
constexpr size_t kPieceBytes = 256 * 1024;

struct TokenizerBenchOptions {
  std::string model;
  std::string text;
  double max_mb = 8.0;
  int64_t threads = 0;
  int64_t runs = 3;
  bool hf = true;
  std::string python;  // empty: $UIO_PYTHON, else python3 on PATH (data/helper_scripts.h)
};

struct Sample {
  std::vector<std::string> documents;
  int64_t files = 0, skipped_binary = 0, bytes = 0;
};

// The longest prefix of `text` of at most `limit` bytes that ends after a '\n' (or, when there is
// none, at a UTF-8 character boundary).
size_t cut_point(const std::string& text, size_t limit) {
  if (text.size() <= limit) return text.size();
  if (limit == 0) return 0;
  const size_t newline = text.rfind('\n', limit - 1);
  if (newline != std::string::npos) return newline + 1;
  size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return cut;
}

std::string read_prefix(const fs::path& path, size_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("bench tokenizer: cannot read " + path.string());
  std::string text(limit, '\0');
  in.read(text.data(), static_cast<std::streamsize>(limit));
  text.resize(static_cast<size_t>(in.gcount()));
  return text;
}

// A deterministic sample of at most `max_bytes` of the files `uio prepare` would read from `path` (a file,
// a directory or a glob pattern: the same discovery, data::find_input_files, and the same binary rule,
// data::why_binary, on each whole file, so both count the same files): each file gives a prefix, the budget
// shared evenly (small files first, what they leave goes to the rest), cut at a line end. Files over
// kPieceBytes are cut into pieces at line ends (the documents encoded in parallel).
Sample sample_text(const std::string& path, size_t max_bytes) {
  std::vector<fs::path> files;
  try {
    for (const auto& f : data::find_input_files({path})) files.emplace_back(f);
  } catch (const std::exception& e) {
    throw OptionError("--text: " + std::string(e.what()));
  }
  std::sort(files.begin(), files.end());
  std::stable_sort(files.begin(), files.end(),
                   [](const fs::path& a, const fs::path& b) { return fs::file_size(a) < fs::file_size(b); });
  Sample sample;
  size_t budget = max_bytes;
  for (size_t i = 0; i < files.size() && budget > 0; ++i) {
    const size_t share = budget / (files.size() - i);
    std::string text = read_prefix(files[i], fs::file_size(files[i]));  // whole: prepare's binary rule reads it all
    if (!data::why_binary(text).empty()) {
      ++sample.skipped_binary;
      continue;
    }
    text.resize(cut_point(text, share));
    if (text.empty()) continue;
    ++sample.files;
    budget -= text.size();
    sample.bytes += static_cast<int64_t>(text.size());
    for (size_t start = 0; start < text.size();) {
      size_t len = cut_point(text.substr(start, kPieceBytes + 1), kPieceBytes);
      if (len == 0) len = std::min(kPieceBytes, text.size() - start);  // no line end, no character start
      sample.documents.push_back(text.substr(start, len));
      start += len;
    }
  }
  if (sample.documents.empty())
    throw OptionError("--text '" + path + "' holds no text (" + std::to_string(sample.skipped_binary) +
                      " binary files skipped)");
  return sample;
}

// Seconds to encode every document once with `threads` threads taking documents from a shared
// counter; the best of `runs`. `tokens` gets the number of ids, `first` the first pass's seconds
// (on a fresh tokenizer: with an empty word cache).
double encode_seconds(const data::Tokenizer& tokenizer, const std::vector<std::string>& documents, int threads,
                      int64_t runs, int64_t& tokens, double& first) {
  double best = 1e300;
  for (int64_t run = 0; run < runs; ++run) {
    std::atomic<size_t> next{0};
    std::atomic<int64_t> count{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto worker = [&] {
      try {
        int64_t mine = 0;
        for (size_t i; (i = next.fetch_add(1)) < documents.size();)
          mine += static_cast<int64_t>(tokenizer.encode(documents[i]).size());
        count += mine;
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    };
    const auto t0 = std::chrono::steady_clock::now();
    if (threads == 1) {
      worker();
    } else {
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
      for (auto& t : pool) t.join();
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (error) std::rethrow_exception(error);
    if (run == 0) first = s;
    best = std::min(best, s);
    tokens = count;
  }
  return best;
}

// Runs tools/bench/tokenizer_hf.py on the same documents and returns the JSON line it prints last.
nlohmann::json run_hf_bench(const TokenizerBenchOptions& opt, const Sample& sample, int threads) {
  const std::string python = data::python_interpreter(opt.python);
  const std::string script = data::helper_script("tokenizer_hf.py");
  // Documents: u32 count, then per document u32 length and the bytes (little-endian).
  char name[] = "/tmp/uio_bench_tokenizer_XXXXXX";
  const int fd = ::mkstemp(name);
  if (fd < 0) throw std::runtime_error("bench tokenizer: cannot create a temporary file in /tmp");
  ::close(fd);
  struct Remove {
    std::string path;
    ~Remove() { std::remove(path.c_str()); }
  } remove_later{name};
  {
    std::ofstream out(name, std::ios::binary);
    auto put_u32 = [&](uint32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
    put_u32(static_cast<uint32_t>(sample.documents.size()));
    for (const auto& d : sample.documents) put_u32(static_cast<uint32_t>(d.size())), out << d;
    out.close();  // a full /tmp shows at the flush: checked, never a truncated input for the script
    if (!out) throw std::runtime_error(std::string("bench tokenizer: cannot write ") + name);
  }
  const std::string command = data::shell_quote(python) + " " + data::shell_quote(script) + " --model " +
                              data::shell_quote(fs::absolute(opt.model).string()) + " --documents " +
                              data::shell_quote(name) + " --threads " + std::to_string(threads) + " --runs " +
                              std::to_string(opt.runs);
  std::cout << "running HF tokenizers: " << command << "\n" << std::flush;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("bench tokenizer: cannot start " + command);
  std::string output;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) output.append(buffer, n);
  const int status = ::pclose(pipe);
  if (status != 0)
    throw std::runtime_error("bench tokenizer: " + script + " failed (exit status " +
                             std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) +
                             "; its error is printed above). Output: " + output);
  const size_t end = output.find_last_not_of("\n");
  const size_t begin = end == std::string::npos ? 0 : output.rfind('\n', end);
  const std::string last = output.substr(begin == std::string::npos ? 0 : begin + 1);
  try {
    return nlohmann::json::parse(last);
  } catch (const nlohmann::json::exception&) {
    throw std::runtime_error("bench tokenizer: " + script + " printed no JSON result line; its output: " + output);
  }
}

std::string mb_s(double bytes, double seconds) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(2) << bytes / 1e6 / seconds << " MB/s";
  return s.str();
}

int bench_tokenizer_command(const std::vector<std::string>& args) {
  TokenizerBenchOptions opt;
  Schema schema("bench tokenizer",
                "Encoding speed of uio's tokenizer (one thread; all threads over documents in parallel) beside HF\n"
                "tokenizers on the same documents (tools/bench/tokenizer_hf.py). MB = 10^6 bytes of input text;\n"
                "each figure is the best of --runs passes over all documents.");
  schema.add("model", &opt.model, "tokenizer source: a .gguf model or an HF directory")
      .add("text", &opt.text, "a text file, or a directory whose files are sampled (a prefix of each)")
      .add("max_mb", &opt.max_mb, "use at most this many MB (10^6 bytes) of text")
      .add("threads", &opt.threads, "threads for the parallel figures (0 = all cores)")
      .add("runs", &opt.runs, "passes over the documents; the fastest counts")
      .add("hf", &opt.hf, "also run HF tokenizers (needs --python)")
      .add("python", &opt.python, "Python with transformers and tokenizers, for the HF figures")
      .required("model")
      .required("text");
  if (!schema.parse(args, std::cout)) return 0;
  if (!(opt.max_mb > 0)) throw OptionError("--max_mb must be > 0");
  if (opt.runs < 1) throw OptionError("--runs must be >= 1");
  if (opt.threads < 0) throw OptionError("--threads must be >= 0 (0 = all cores)");
  const int threads = opt.threads > 0 ? static_cast<int>(opt.threads)
                                      : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  const auto sample = sample_text(opt.text, static_cast<size_t>(opt.max_mb * 1e6));
  const auto tokenizer = data::load_tokenizer(opt.model);
  const double bytes = static_cast<double>(sample.bytes);
  std::cout << "text           " << opt.text << ": " << sample.files << " files, " << std::fixed << std::setprecision(2)
            << bytes / 1e6 << " MB sampled in " << sample.documents.size() << " pieces"
            << ", " << sample.skipped_binary << " binary files skipped (the files and the rule of uio prepare)"
            << "\n"
            << std::flush;

  int64_t tokens_1 = 0, tokens_n = 0;
  double cold = 0, unused = 0;
  const double s1 = encode_seconds(*tokenizer, sample.documents, 1, opt.runs, tokens_1, cold);
  const double sn = encode_seconds(*tokenizer, sample.documents, threads, opt.runs, tokens_n, unused);
  if (tokens_1 != tokens_n)
    throw std::runtime_error("bench tokenizer: 1 thread gave " + std::to_string(tokens_1) + " tokens, " +
                             std::to_string(threads) + " threads " + std::to_string(tokens_n));
  const std::string tn = std::to_string(threads) + " threads";
  std::cout << "tokens         " << tokens_1 << " (" << std::setprecision(2) << bytes / tokens_1 << " bytes/token)\n"
            << "uio 1 thread   " << mb_s(bytes, s1) << " (first pass, empty word cache: " << mb_s(bytes, cold) << ")\n"
            << "uio " << tn << std::string(std::max<size_t>(1, 11 - tn.size()), ' ') << mb_s(bytes, sn)
            << " (documents in parallel)\n"
            << std::flush;
  if (!opt.hf) return 0;

  const auto hf = run_hf_bench(opt, sample, threads);
  const double hf1 = hf.at("single_seconds"), hfn = hf.at("batch_seconds"), hf_cold = hf.at("single_first_seconds");
  const int64_t hf_tokens = hf.at("tokens");
  std::cout << "HF 1 thread    " << mb_s(bytes, hf1) << " (tokenizers " << hf.at("tokenizers").get<std::string>()
            << ", encode per document; first pass " << mb_s(bytes, hf_cold) << ")\n"
            << "HF " << tn << std::string(std::max<size_t>(1, 12 - tn.size()), ' ') << mb_s(bytes, hfn)
            << " (encode_batch)\n"
            << "ratio uio/HF   " << std::setprecision(2) << hf1 / s1 << "x on 1 thread, " << hfn / sn << "x on " << tn
            << "\n";
  if (hf_tokens != tokens_1)
    std::cout << "warning: the token counts differ (uio " << tokens_1 << ", HF " << hf_tokens
              << "): the two tokenizers do not agree on this text\n";
  return 0;
}

struct Bench {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& args);
};

const std::vector<Bench>& benches() {
  static const std::vector<Bench> table = {
      {"tokenizer", "uio's tokenizer vs HF tokenizers, MB/s on 1 thread and all cores", bench_tokenizer_command},
      {"memory", "compress and decode one long document with memory: tokens/s and peak memory", bench_memory_command},
      {"train", "training steps per estimator, chunk size and length: tokens/s and peak memory", bench_train_command},
  };
  return table;
}

std::string bench_usage() {
  std::string s = "usage: uio bench <what> [options]      (uio bench <what> --help for its options)\n\nbenches:\n";
  for (const auto& b : benches())
    s += "  " + std::string(b.name) + std::string(12 - std::string(b.name).size(), ' ') + b.summary + "\n";
  return s;
}

// The Schema takes no positional words, so the first word picks the bench and the rest is its options.
int run_bench(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << bench_usage();
    return 0;
  }
  std::string known;
  for (const auto& b : benches()) known += (known.empty() ? "" : ", ") + std::string(b.name);
  if (args.empty() || args[0].rfind("-", 0) == 0)
    throw OptionError("uio bench needs a first word naming what to measure (" + known + "), e.g. 'uio bench " +
                      benches().front().name + " --help'");
  for (const auto& b : benches())
    if (args[0] == b.name) return b.run(std::vector<std::string>(args.begin() + 1, args.end()));
  throw OptionError("unknown bench '" + args[0] + "' (known: " + known + ")");
}

}  // namespace

int bench_command(const std::vector<std::string>& args) { return run_bench(args); }

}  // namespace uio::cli
