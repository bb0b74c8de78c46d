// tools/commands.h — the table of `uio` subcommands. Each command parses its options into a config
// struct (tools/options.h) and calls one library function; only commands that work are listed.
#pragma once

#include <string>
#include <vector>

namespace uio::cli {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& args);
};

const std::vector<Command>& commands();

}  // namespace uio::cli
