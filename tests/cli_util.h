// tests/cli_util.h — running the built `uio` binary from tests: where it is, and a run with stdout and
// stderr captured apart. Used by the CLI tests and the checkpoint crash tests.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "data/token_store.h"
#include "tests/test_util.h"

namespace uio::test {

namespace fs = std::filesystem;

struct Result {
  int exit_code = -1;
  std::string out, err;
};

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The `uio` binary: env UIO_BIN, else the `uio` beside this test executable (both are built into
// the build directory; CMake's gtest_discover_tests passes only the first of several ENVIRONMENT values).
inline std::string uio_binary() {
  if (const char* bin = std::getenv("UIO_BIN")) return bin;
  const fs::path beside = fs::read_symlink("/proc/self/exe").parent_path() / "uio";
  if (!fs::exists(beside))
    throw std::runtime_error("UIO_BIN is not set and there is no " + beside.string() + ": build the uio target");
  return beside.string();
}

// Runs `uio ARGS...` through /bin/sh with stdin from /dev/null; stdout and stderr captured apart.
inline Result run_uio(const std::vector<std::string>& args) {
  const std::string bin = uio_binary();
  static int calls = 0;
  const fs::path err_file = fs::temp_directory_path() /
                            ("uio_cli_stderr_" + std::to_string(::getpid()) + "_" + std::to_string(calls++) + ".txt");
  std::string command = shell_quote(bin);
  for (const auto& a : args) command += " " + shell_quote(a);
  command += " </dev/null 2>" + shell_quote(err_file.string());
  Result r;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot run " + command);
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) r.out.append(buffer, n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.err = uio::test::read_file(err_file);
  fs::remove(err_file);
  return r;
}

// A token store at `dir` of `documents` random documents of `length` ids in [3, 123) (the tiny test
// models' vocabulary is 128), the last one held out.
inline fs::path write_random_store(const fs::path& dir, int documents, int length, uint64_t seed) {
  data::TokenStoreMeta meta;
  meta.vocab_size = 128, meta.eos_id = 2, meta.tokenizer = "test";
  data::TokenStoreWriter w(dir.string(), meta);
  std::mt19937_64 rng(seed);
  for (int d = 0; d < documents; ++d) {
    std::vector<int32_t> tokens(static_cast<size_t>(length));
    for (auto& x : tokens) x = static_cast<int32_t>(rng() % 120) + 3;
    w.add("doc" + std::to_string(d), d + 1 == documents ? data::Split::heldout : data::Split::train, tokens);
  }
  w.finish();
  return dir;
}

// A `uio` running in the background (the crash and data-parallel tests signal it while it works):
// stdout and stderr go to `log` and `err`, `env` is added to its environment.
struct Child {
  pid_t pid = -1;
  fs::path log, err;
};

inline Child spawn_uio(std::vector<std::string> args, const std::vector<std::pair<std::string, std::string>>& env,
                       const fs::path& log, const fs::path& err) {
  args.insert(args.begin(), uio_binary());
  fs::remove(log), fs::remove(err);  // callers poll the log: nothing of an earlier run may be there
  Child child{-1, log, err};
  child.pid = ::fork();
  if (child.pid < 0) throw std::runtime_error("fork failed");
  if (child.pid == 0) {
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    if (!std::freopen(log.c_str(), "w", stdout) || !std::freopen(err.c_str(), "w", stderr)) ::_exit(126);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return child;
}

// Its exit status, or 128 + the signal that ended it.
inline int wait_exit(const Child& child) {
  int status = 0;
  ::waitpid(child.pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Waits up to `seconds` until `log` contains `text`; returns whether it does.
inline bool wait_for_text(const fs::path& log, const std::string& text, double seconds = 30) {
  for (int i = 0; i < static_cast<int>(seconds * 20); ++i) {
    if (read_file(log).find(text) != std::string::npos) return true;
    ::usleep(50000);
  }
  return read_file(log).find(text) != std::string::npos;
}

}  // namespace uio::test
