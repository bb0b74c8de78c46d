// data/helper_scripts.cpp — locating the interpreter and the scripts.
#include "data/helper_scripts.h"

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <vector>

namespace uio::data {

namespace fs = std::filesystem;

std::string python_interpreter(const std::string& chosen) {
  if (!chosen.empty()) return chosen;
  if (const char* env = std::getenv("UIO_PYTHON"); env && *env) return env;
  return "python3";
}

std::string helper_script(const std::string& name) {
  std::vector<fs::path> tried;
  if (const char* env = std::getenv("UIO_SCRIPTS_DIR"); env && *env) {
    tried.push_back(fs::path(env) / name);
  } else {
    std::error_code ec;
    const auto exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
      tried.push_back(exe.parent_path() / "share" / "uio" / name);
      tried.push_back(exe.parent_path().parent_path() / "share" / "uio" / name);
    }
  }
  for (const auto& p : tried)
    if (fs::is_regular_file(p)) return p.string();
  std::string where;
  for (const auto& p : tried) where += (where.empty() ? "" : ", ") + p.string();
  throw std::runtime_error("helper script " + name + " not found (looked in: " + (where.empty() ? "nowhere" : where) +
                           "); set UIO_SCRIPTS_DIR to the folder that holds it");
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace uio::data
