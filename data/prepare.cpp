// data/prepare.cpp — corpus files to a token store: file discovery, binary detection, document
// splitting, parallel tokenisation with the output kept in input order, the held-out rule, the summary.
#include "data/prepare.h"

#include "data/splitmix.h"

#include <glob.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "data/progress.h"

namespace uio::data {

namespace {

namespace fs = std::filesystem;

uint64_t fnv1a64(const std::string& s, uint64_t h = 0xcbf29ce484222325ULL) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint64_t splitmix64(uint64_t x) { return SplitMix64(x).next(); }

struct InputFile {
  fs::path path;
  std::string name;  // relative to the input's root
};

bool has_wildcard(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

std::string relative_name(const fs::path& file, const fs::path& root) {
  auto rel = file.lexically_normal().lexically_relative(root.lexically_normal());
  return (rel.empty() ? file.filename() : rel).generic_string();
}

std::vector<InputFile> find_files(const std::vector<std::string>& inputs) {
  std::vector<InputFile> files;
  std::set<fs::path> seen;
  auto add = [&](const fs::path& p, const fs::path& root) {
    if (seen.insert(fs::weakly_canonical(p)).second) files.push_back({p, relative_name(p, root)});
  };
  for (const auto& input : inputs) {
    std::vector<fs::path> found;
    fs::path root;
    if (has_wildcard(input)) {
      const std::string fixed = input.substr(0, input.find_first_of("*?["));
      const auto slash = fixed.rfind('/');
      root = slash == std::string::npos ? fs::path(".") : fs::path(fixed.substr(0, slash + 1));
      glob_t g{};
      const int rc = ::glob(input.c_str(), 0, nullptr, &g);
      if (rc != 0 && rc != GLOB_NOMATCH) {
        ::globfree(&g);
        throw std::runtime_error("prepare: cannot expand the pattern '" + input + "'");
      }
      for (size_t i = 0; i < g.gl_pathc; ++i)
        if (fs::is_regular_file(g.gl_pathv[i])) found.emplace_back(g.gl_pathv[i]);
      ::globfree(&g);
      if (found.empty())  // a typo in a pattern would otherwise drop a whole part of the corpus unnoticed
        throw std::runtime_error("prepare: the pattern '" + input + "' matches no file" +
                                 (rc == GLOB_NOMATCH ? "" : " (only directories)") +
                                 "; check it (quote it so the shell leaves it alone) or remove it from --inputs");
    } else if (fs::is_directory(input)) {
      root = input;
      for (auto it = fs::recursive_directory_iterator(input); it != fs::recursive_directory_iterator(); ++it) {
        if (it->path().filename().string().rfind('.', 0) == 0) {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file()) found.push_back(it->path());
      }
    } else if (fs::is_regular_file(input)) {
      root = fs::path(input).parent_path();
      found.emplace_back(input);
    } else {
      throw std::runtime_error("prepare: input '" + input +
                               "' is neither a file, a directory nor a pattern that exists");
    }
    std::sort(found.begin(), found.end());
    for (const auto& p : found) add(p, root);
  }
  return files;
}

// Bytes that are not part of a well-formed UTF-8 sequence.
int64_t invalid_utf8_bytes(const std::string& s) {
  int64_t bad = 0;
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = len > 0 && i + len <= n;
    for (int k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    if (ok && len == 2) ok = c >= 0xC2;  // overlong
    if (ok && len == 3) {
      const auto c1 = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);  // overlong, surrogates
    }
    if (ok && len == 4) {
      const auto c1 = static_cast<unsigned char>(s[i + 1]);
      ok = c <= 0xF4 && !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);  // overlong, > U+10FFFF
    }
    if (ok) {
      i += len;
    } else {
      ++bad;
      ++i;
    }
  }
  return bad;
}

// The parts of `text` between lines equal to `separator` (a line ends at '\n'; a '\r' before it is
// ignored when comparing).
std::vector<std::string> split_at_separator(const std::string& text, const std::string& separator) {
  std::vector<std::string> parts(1);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    const size_t next = end == std::string::npos ? text.size() : end + 1;
    if (end == std::string::npos) end = text.size();
    size_t line_end = end;
    if (line_end > pos && text[line_end - 1] == '\r') --line_end;
    if (text.compare(pos, line_end - pos, separator) == 0) {
      parts.emplace_back();
    } else {
      parts.back().append(text, pos, next - pos);
    }
    pos = next;
  }
  return parts;
}

struct FileResult {
  bool done = false;
  bool binary = false;
  std::string why_binary;
  int64_t bytes = 0;
  std::vector<std::pair<std::string, std::vector<int32_t>>> documents;
};

FileResult process_file(const InputFile& file, const std::string& separator, const Tokenizer& tokenizer) {
  FileResult r;
  std::ifstream in(file.path, std::ios::binary);
  if (!in) throw std::runtime_error("prepare: cannot read " + file.path.string());
  const std::string text(std::istreambuf_iterator<char>(in), {});
  r.bytes = static_cast<int64_t>(text.size());
  r.why_binary = why_binary(text);
  if (!r.why_binary.empty()) {
    r.binary = true;
    return r;
  }
  if (separator.empty()) {
    r.documents.emplace_back(file.name, tokenizer.encode(text));
  } else {
    const auto parts = split_at_separator(text, separator);
    for (size_t k = 0; k < parts.size(); ++k)
      r.documents.emplace_back(file.name + "#" + std::to_string(k), tokenizer.encode(parts[k]));
  }
  return r;
}

std::string join_inputs(const std::vector<std::string>& inputs) {
  std::string s;
  for (const auto& i : inputs) s += (s.empty() ? "" : ", ") + i;
  return s.empty() ? "(no inputs given)" : s;
}

}  // namespace

std::vector<std::string> find_input_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> paths;
  for (const auto& f : find_files(inputs)) paths.push_back(f.path.string());
  return paths;
}

std::string why_binary(const std::string& text) {
  if (const auto nul = text.find('\0'); nul != std::string::npos) return "a NUL byte at offset " + std::to_string(nul);
  const int64_t bad = invalid_utf8_bytes(text);
  if (bad * 100 > static_cast<int64_t>(text.size()))
    return std::to_string(bad) + " of " + std::to_string(text.size()) + " bytes are not valid UTF-8";
  return "";
}

Split heldout_split(const std::string& source, double heldout_fraction, uint64_t seed) {
  const uint64_t h = splitmix64(fnv1a64(source) ^ seed);
  const double u = static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);  // [0, 1), 53 bits
  return u < heldout_fraction ? Split::heldout : Split::train;
}

std::string tokenizer_identity(const Tokenizer& tokenizer) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (int64_t id = 0; id < tokenizer.vocab_size(); ++id) {
    const std::string bytes = tokenizer.token_bytes(static_cast<int32_t>(id));
    h = fnv1a64(std::to_string(bytes.size()) + ":" + bytes, h);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return "vocab=" + std::to_string(tokenizer.vocab_size()) + " bos=" + std::to_string(tokenizer.bos_id()) +
         " eos=" + std::to_string(tokenizer.eos_id()) + " tokens_fnv1a64=" + hex;
}

std::string PrepareSummary::to_text() const {
  std::ostringstream s;
  s << "documents: " << documents << " (" << documents - heldout_documents << " train, " << heldout_documents
    << " held out) from " << files << " files; " << skipped_files << " binary files skipped, " << empty_documents
    << " empty documents left out\n";
  s << "tokens: " << tokens << " (" << heldout_tokens << " held out) from " << bytes << " bytes\n";
  s << "lengths: <1K " << length_histogram[0] << ", 1K-8K " << length_histogram[1] << ", 8K-32K " << length_histogram[2]
    << ", 32K-100K " << length_histogram[3] << ", >=100K " << length_histogram[4] << "\n";
  s << "long documents: " << documents_32k << " of >= 32K tokens, " << documents_100k << " of >= 100K tokens\n";
  char buf[96];
  std::snprintf(buf, sizeof buf, "time: %.1f s, %.0f tokens/s\n", seconds, tokens_per_second);
  s << buf;
  return s.str();
}

PrepareSummary prepare_corpus(const PrepareOptions& options, const Tokenizer& tokenizer, std::ostream& log) {
  const auto start = std::chrono::steady_clock::now();
  if (options.out_dir.empty()) throw std::invalid_argument("prepare: no output directory given (out_dir)");
  if (!(options.heldout_fraction >= 0.0 && options.heldout_fraction <= 1.0))
    throw std::invalid_argument("prepare: heldout_fraction is " + std::to_string(options.heldout_fraction) +
                                ", expected a value in [0, 1]");
  const auto files = find_files(options.inputs);
  if (files.empty()) throw std::runtime_error("prepare: no documents found in " + join_inputs(options.inputs));

  int64_t total_bytes = 0;
  for (const auto& f : files) total_bytes += static_cast<int64_t>(fs::file_size(f.path));
  int threads = options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::max(1, std::min<int>(threads, static_cast<int>(files.size())));
  log << "prepare: " << files.size() << " files, " << total_bytes << " bytes, " << threads << " threads\n";

  TokenStoreWriter writer(options.out_dir, {tokenizer.vocab_size(), tokenizer.eos_id(), tokenizer_identity(tokenizer)});
  PrepareSummary summary;

  // Workers take files in order; the main thread writes results in that same order. A worker runs at
  // most `window` files ahead of the writer, which bounds the memory held by finished results.
  const size_t window = 4 * static_cast<size_t>(threads);
  std::vector<FileResult> results(files.size());
  std::mutex mutex;
  std::condition_variable cv;
  size_t next_file = 0, committed = 0;
  bool stop = false;
  std::exception_ptr error;

  auto worker = [&] {
    for (;;) {
      size_t i;
      {
        std::unique_lock<std::mutex> lock(mutex);
        cv.wait(lock, [&] { return stop || next_file >= files.size() || next_file < committed + window; });
        if (stop || next_file >= files.size()) return;
        i = next_file++;
      }
      FileResult r;
      try {
        r = process_file(files[i], options.separator, tokenizer);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
        stop = true;
        cv.notify_all();
        return;
      }
      std::lock_guard<std::mutex> lock(mutex);
      results[i] = std::move(r);
      results[i].done = true;
      cv.notify_all();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);

  ProgressBar progress(log, "prepare", total_bytes, "bytes", ProgressBar::is_terminal(log));
  int64_t bytes_done = 0;
  try {
    for (size_t i = 0; i < files.size(); ++i) {
      FileResult r;
      {
        std::unique_lock<std::mutex> lock(mutex);
        cv.wait(lock, [&] { return stop || results[i].done; });
        if (error) std::rethrow_exception(error);
        r = std::move(results[i]);
        results[i] = FileResult();
        committed = i + 1;
        cv.notify_all();
      }
      bytes_done += r.bytes;
      if (r.binary) {
        ++summary.skipped_files;
        log << "prepare: warning: skipping " << files[i].path.string() << ", it looks binary (" << r.why_binary
            << ")\n";
        continue;
      }
      ++summary.files;
      summary.bytes += r.bytes;
      for (auto& [name, tokens] : r.documents) {
        if (tokens.empty()) {
          ++summary.empty_documents;
          continue;
        }
        const auto n = static_cast<int64_t>(tokens.size());
        const Split split = heldout_split(name, options.heldout_fraction, options.seed);
        writer.add(name, split, tokens);
        ++summary.documents;
        summary.tokens += n;
        if (split == Split::heldout) {
          ++summary.heldout_documents;
          summary.heldout_tokens += n;
        }
        size_t bucket = 0;
        while (bucket < kLengthBucketEdges.size() && n >= kLengthBucketEdges[bucket]) ++bucket;
        ++summary.length_histogram[bucket];
        summary.documents_32k += n >= 32768;
        summary.documents_100k += n >= 100000;
      }
      progress.update(bytes_done, std::to_string(summary.tokens) + " tokens");
    }
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
      cv.notify_all();
    }
    for (auto& t : pool) t.join();
    throw;
  }
  for (auto& t : pool) t.join();
  progress.finish(std::to_string(summary.tokens) + " tokens");

  if (summary.documents == 0)
    throw std::runtime_error("prepare: no documents found in " + join_inputs(options.inputs) + " (" +
                             std::to_string(files.size()) + " files: " + std::to_string(summary.skipped_files) +
                             " binary, the rest empty)");
  writer.finish();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  summary.tokens_per_second = summary.seconds > 0 ? summary.tokens / summary.seconds : 0.0;
  log << summary.to_text();
  return summary;
}

}  // namespace uio::data
