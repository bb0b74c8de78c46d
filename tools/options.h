// tools/options.h — the typed option schema behind every `uio <command>`: one config struct per
// command whose member initialisers are the defaults (the one place they live), values read from an
// INI file (`--config FILE`, sections allowed) and then the command line, the command line winning.
// Built on Boost.Program_options; this file owns parsing and error messages, not what options mean.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace uio::cli {

// Bad options: unknown key (with file:line and the closest valid key), bad value (key, value,
// expected type), missing required key, unreadable config file.
class OptionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Schema {
 public:
  Schema(std::string command, std::string summary);
  ~Schema();
  Schema(const Schema&) = delete;
  Schema& operator=(const Schema&) = delete;

  // Registers `key` (snake_case, the struct field's name) bound to `field`; the field's current
  // value is the default. On the command line `--key value`, `--key=value`; `--key-name` is accepted
  // for `--key_name`. A bool is set by `--key` alone, or `--key=true|false|1|0|yes|no`.
  Schema& add(const std::string& key, std::string* field, const std::string& help);
  Schema& add(const std::string& key, int64_t* field, const std::string& help);
  Schema& add(const std::string& key, double* field, const std::string& help);
  Schema& add(const std::string& key, bool* field, const std::string& help);
  // A key that must be given (in the INI file or on the command line).
  Schema& required(const std::string& key);

  // Parses the words after the command name. Returns false when `--help` was given (the help text
  // is then written to `out`); throws OptionError on bad input.
  bool parse(const std::vector<std::string>& args, std::ostream& out);

  std::string help() const;
  // Every key with its resolved value, as INI text (for logs and checkpoints).
  std::string to_ini() const;
  const std::string& command() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Levenshtein distance; used to suggest the closest valid key.
int edit_distance(const std::string& a, const std::string& b);

}  // namespace uio::cli
