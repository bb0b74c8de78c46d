// tools/main.cpp — `uio <command> [options]`: dispatches to a command and turns any exception into
// one clear line on stderr and a non-zero exit. The only place that catches.
#include <algorithm>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "tools/commands.h"
#include "tools/options.h"

namespace {

void print_usage(std::ostream& out) {
  out << "uio — teach a Llama-family LLM to read 100K-token contexts through compressed memory\n\n"
         "usage: uio <command> [options]      (uio <command> --help for its options)\n\ncommands:\n";
  for (const auto& c : uio::cli::commands())
    out << "  " << c.name << std::string(12 - std::string(c.name).size(), ' ') << c.summary << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    print_usage(std::cout);
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  for (const auto& c : uio::cli::commands()) {
    if (name != c.name) continue;
    try {
      return c.run(std::vector<std::string>(argv + 2, argv + argc));
    } catch (const std::exception& e) {
      std::string msg = e.what();
      // c10::Error appends a C++ backtrace after the message; keep the first line(s) that matter.
      if (auto cut = msg.find("\nException raised from"); cut != std::string::npos) msg.resize(cut);
      std::cerr << "uio " << name << ": error: " << msg << "\n";
      return 1;
    }
  }
  std::string hint;  // the closest command to a misspelt one ("genrate" -> "generate")
  int best = std::max<int>(2, static_cast<int>(name.size()) / 3) + 1;
  for (const auto& c : uio::cli::commands())
    if (const int d = uio::cli::edit_distance(name, c.name); d < best) best = d, hint = c.name;
  std::cerr << "uio: unknown command '" << name << "'" << (hint.empty() ? "" : "; did you mean 'uio " + hint + "'?")
            << "\n";
  print_usage(std::cerr);
  return 2;
}
