// tests/cli_util.h — running the built `uio` binary from tests: where it is, and a run with stdout and
// stderr captured apart. Used by the CLI tests and the checkpoint crash tests.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

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
  const fs::path err_file = fs::temp_directory_path() / ("uio_cli_stderr_" + std::to_string(::getpid()) + "_" +
                                                         std::to_string(calls++) + ".txt");
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

}  // namespace uio::test
