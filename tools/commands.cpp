// tools/commands.cpp — the list of subcommands, in the order `uio --help` shows them.
#include "tools/commands.h"

namespace uio::cli {

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {};
  return table;
}

}  // namespace uio::cli
