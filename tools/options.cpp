// tools/options.cpp — parsing of `uio <command>` options: Boost.Program_options reads the command line
// and keeps the precedence (what is stored first wins: command line, then INI, then the field's own
// default); the INI file is read here so that every error can name its file and line.
#include "tools/options.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <ostream>
#include <sstream>
#include <variant>

#include <boost/program_options.hpp>

namespace po = boost::program_options;

namespace uio::cli {
namespace {

using Field = std::variant<std::string*, int64_t*, double*, bool*>;
using Value = std::variant<std::string, int64_t, double, bool>;  // same order as Field

struct Option {
  std::string key, help;
  Field field;
  Value default_value;
  bool required = false;
};

// One `key = value` line of the INI file.
struct IniEntry {
  std::string key, value, section;
  int line;
};

[[noreturn]] void fail(const std::string& message) { throw OptionError(message); }

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

// `--key-name` and `key-name` read as `key_name`.
std::string normalize_key(std::string key) {
  std::replace(key.begin(), key.end(), '-', '_');
  return key;
}

const char* type_name(const Field& f) {
  static const char* names[] = {"a string", "an integer", "a number", "true or false"};
  return names[f.index()];
}

const char* type_word(const Field& f) {
  static const char* words[] = {"STRING", "INT", "NUMBER", "[BOOL]"};
  return words[f.index()];
}

// Converts `text` to the type of `field`; nullopt when it is not a valid value of that type.
std::optional<Value> parse_value(const Field& field, const std::string& text) {
  const char* begin = text.data();
  const char* end = begin + text.size();
  switch (field.index()) {
    case 0: return Value(text);
    case 1: {
      int64_t v = 0;
      auto [ptr, ec] = std::from_chars(begin, end, v);
      if (ec != std::errc() || ptr != end || text.empty()) return std::nullopt;
      return Value(v);
    }
    case 2: {
      double v = 0;
      auto [ptr, ec] = std::from_chars(begin, end, v, std::chars_format::general);
      if (ec != std::errc() || ptr != end || text.empty() || !std::isfinite(v)) return std::nullopt;
      return Value(v);
    }
    default: {
      std::string t = text;
      std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
      if (t == "true" || t == "1" || t == "yes") return Value(true);
      if (t == "false" || t == "0" || t == "no") return Value(false);
      return std::nullopt;
    }
  }
}

// A string is quoted only when reading it back unquoted would change it.
std::string quote_if_needed(const std::string& s) {
  const bool plain = !s.empty() && s.front() != '"' && trim(s) == s && s.find_first_of("#;\n\t") == std::string::npos;
  if (plain) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : std::string(1, c);
  return q + "\"";
}

std::string format_value(const Value& v) {
  switch (v.index()) {
    case 0: return quote_if_needed(std::get<std::string>(v));
    case 1: return std::to_string(std::get<int64_t>(v));
    case 2: {
      char buf[64];
      auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, std::get<double>(v));  // shortest exact
      return std::string(buf, ptr);
    }
    default: return std::get<bool>(v) ? "true" : "false";
  }
}

// The value part of an INI line: `"quoted, \" escapes"` or bare text up to a ` #` / ` ;` comment.
std::string ini_value(const std::string& rest, const std::string& where) {
  if (rest.empty() || rest.front() != '"') {
    size_t cut = rest.size();
    for (size_t i = 0; i < rest.size(); ++i) {
      if ((rest[i] == '#' || rest[i] == ';') && (i == 0 || rest[i - 1] == ' ' || rest[i - 1] == '\t')) {
        cut = i;
        break;
      }
    }
    return trim(rest.substr(0, cut));
  }
  std::string v;
  for (size_t i = 1; i < rest.size(); ++i) {
    if (rest[i] == '"') {
      const std::string after = trim(rest.substr(i + 1));
      if (!after.empty() && after[0] != '#' && after[0] != ';')
        fail(where + ": unexpected text '" + after + "' after the closing quote");
      return v;
    }
    if (rest[i] == '\\' && i + 1 < rest.size()) {
      const char c = rest[++i];
      v += c == 'n' ? '\n' : c;
    } else {
      v += rest[i];
    }
  }
  fail(where + ": unterminated quoted value (a value that starts with '\"' must end with '\"')");
}

std::vector<IniEntry> read_ini(const std::string& path) {
  if (!std::filesystem::exists(path)) fail("config file '" + path + "' (from --config) does not exist");
  if (!std::filesystem::is_regular_file(path))  // checked before opening: a FIFO would block open()
    fail("config file '" + path + "' (from --config) is not a regular file (a directory?)");
  std::ifstream in(path);
  if (!in) fail("cannot read config file '" + path + "' (from --config)");
  std::vector<IniEntry> entries;
  std::string raw, section;
  for (int line = 1; std::getline(in, raw); ++line) {
    // A UTF-8 byte-order mark (editors on Windows write one) is not part of the first key.
    if (line == 1 && raw.rfind("\xEF\xBB\xBF", 0) == 0) raw.erase(0, 3);
    const std::string text = trim(raw);
    const std::string where = path + ":" + std::to_string(line);
    if (text.empty() || text[0] == '#' || text[0] == ';') continue;
    if (text[0] == '[') {
      if (text.back() != ']' || trim(text.substr(1, text.size() - 2)).empty())
        fail(where + ": malformed section header '" + text + "'; expected '[name]'");
      section = trim(text.substr(1, text.size() - 2));
      continue;
    }
    const auto eq = text.find('=');
    if (eq == std::string::npos) fail(where + ": expected 'key = value' or '[section]', got '" + text + "'");
    const std::string key = normalize_key(trim(text.substr(0, eq)));
    if (key.empty()) fail(where + ": missing key before '=' in '" + text + "'");
    entries.push_back({key, ini_value(trim(text.substr(eq + 1)), where), section, line});
  }
  if (in.bad()) fail("cannot read config file '" + path + "' (from --config)");
  return entries;
}

}  // namespace

int edit_distance(const std::string& a, const std::string& b) {
  std::vector<int> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1] ? 1 : 0)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

struct Schema::Impl {
  std::string command, summary;
  std::vector<Option> options;  // in registration order
  po::options_description desc;

  std::string name() const { return "'uio " + command + "'"; }

  Option* find(const std::string& key) {
    for (auto& o : options)
      if (o.key == key) return &o;
    return nullptr;
  }

  // The closest valid key to a misspelt one, if it is close enough to be a plausible typo, or the key
  // another trainer's name for it maps to (HF Trainer and PyTorch words a user brings along).
  std::optional<std::string> closest(const std::string& key, bool with_builtins) const {
    static const std::vector<std::pair<std::string, std::string>> kOtherNames = {
        {"learning_rate", "lr"},
        {"max_steps", "steps"},
        {"num_train_steps", "steps"},
        {"gradient_accumulation_steps", "accumulation"},
        {"max_grad_norm", "grad_clip"},
        {"output_dir", "out_dir"},
        {"warmup", "warmup_steps"},
        {"lr_scheduler_type", "schedule"},
        {"model_name_or_path", "model"},
        {"adam_beta1", "beta1"},
        {"adam_beta2", "beta2"},
        {"adam_epsilon", "eps"},
        {"logging_steps", "log_every"},
        {"save_steps", "checkpoint_every"},
        {"eval_steps", "val_every"},
        {"torch_dtype", "dtype"},
        {"max_new_length", "max_new_tokens"}};
    for (const auto& [other, ours] : kOtherNames)
      if (key == other) {
        for (const auto& o : options)
          if (o.key == ours) return ours;
      }
    std::vector<std::string> keys;
    for (const auto& o : options) keys.push_back(o.key);
    if (with_builtins) keys.insert(keys.end(), {"config", "help"});
    std::optional<std::string> best;
    int best_d = std::max(2, static_cast<int>(key.size()) / 3) + 1;
    for (const auto& k : keys) {
      const int d = edit_distance(key, k);
      if (d < best_d) best_d = d, best = k;
    }
    return best;
  }

  std::string unknown_hint(const std::string& key, bool cmdline) const {
    const std::string dashes = cmdline ? "--" : "";
    if (auto k = closest(key, cmdline)) return "; did you mean '" + dashes + *k + "'?";
    return "; run 'uio " + command + " --help' to see the valid " + (cmdline ? "options" : "keys");
  }

  template <typename T>
  void add(const std::string& key, T* field, const std::string& help) {
    if (key.empty() || normalize_key(key) != key || key == "config" || key == "help" || find(key))
      throw std::invalid_argument("uio " + command + ": option key '" + key +
                                  "' is reserved, repeated or not snake_case");
    options.push_back({key, help, field, Value(*field)});
    auto* semantic = po::value<std::string>();
    if constexpr (std::is_same_v<T, bool>) semantic->implicit_value("true");  // `--flag` alone is true
    desc.add_options()(key.c_str(), semantic, help.c_str());
  }

  po::parsed_options parse_command_line(std::vector<std::string> args) {
    for (auto& a : args)
      if (a.rfind("--", 0) == 0 && a.size() > 2) {
        const auto eq = a.find('=');
        a = "--" + normalize_key(a.substr(2, eq == std::string::npos ? eq : eq - 2)) +
            (eq == std::string::npos ? "" : a.substr(eq));
      }
    namespace style = po::command_line_style;  // long options only, no abbreviations
    try {
      auto parsed = po::command_line_parser(args)
                        .options(desc)
                        .style(style::allow_long | style::long_allow_adjacent | style::long_allow_next)
                        .run();
      for (const auto& o : parsed.options) {
        if (o.string_key.empty())
          fail("unexpected argument '" + o.value.at(0) + "' for " + name() + " (options are written '--key value')");
        if (o.original_tokens.size() == 2 && o.value.at(0).rfind("--", 0) == 0)
          fail("missing value after '--" + o.string_key + "' (the next word, '" + o.value[0] +
               "', is an option; write '--" + o.string_key + "=VALUE' for a value that starts with '--')");
      }
      return parsed;
    } catch (const po::unknown_option& e) {
      const std::string opt = e.get_option_name().substr(0, e.get_option_name().find('='));
      fail("unknown option '" + opt + "' for " + name() +
           unknown_hint(opt.substr(std::min<size_t>(2, opt.size())), true));
    } catch (const po::invalid_command_line_syntax& e) {
      const std::string opt = e.get_option_name();
      if (e.kind() == po::invalid_syntax::missing_parameter)
        fail("missing value after '" + opt + "' (write '" + opt + " VALUE')");
      fail("bad option syntax for " + name() + ": " + e.what());
    } catch (const po::error& e) {
      fail("bad options for " + name() + ": " + e.what());
    }
  }

  // Checks every INI entry (known key, given once, valid value) and returns them as Boost options.
  po::parsed_options ini_options(const std::string& path) {
    po::parsed_options parsed(&desc);
    std::vector<IniEntry> entries = read_ini(path);
    for (size_t i = 0; i < entries.size(); ++i) {
      const IniEntry& e = entries[i];
      const std::string where = path + ":" + std::to_string(e.line);
      const Option* o = find(e.key);
      if (!o) {
        fail(where + ": unknown key '" + e.key + "'" + (e.section.empty() ? "" : " (section [" + e.section + "])") +
             " for " + name() + unknown_hint(e.key, false));
      }
      for (size_t j = 0; j < i; ++j)
        if (entries[j].key == e.key)
          fail(where + ": key '" + e.key + "' is given twice (first at line " + std::to_string(entries[j].line) +
               "); keep one");
      if (!parse_value(o->field, e.value))
        fail(where + ": bad value '" + e.value + "' for key '" + e.key + "': expected " + type_name(o->field));
      parsed.options.emplace_back(e.key, std::vector<std::string>{e.value});
    }
    return parsed;
  }
};

Schema::Schema(std::string command, std::string summary) : impl_(std::make_unique<Impl>()) {
  impl_->command = std::move(command);
  impl_->summary = std::move(summary);
  impl_->desc.add_options()("config", po::value<std::string>(), "")("help", "");
}

Schema::~Schema() = default;

const std::string& Schema::command() const { return impl_->command; }

Schema& Schema::add(const std::string& key, std::string* field, const std::string& help) {
  impl_->add(key, field, help);
  return *this;
}
Schema& Schema::add(const std::string& key, int64_t* field, const std::string& help) {
  impl_->add(key, field, help);
  return *this;
}
Schema& Schema::add(const std::string& key, double* field, const std::string& help) {
  impl_->add(key, field, help);
  return *this;
}
Schema& Schema::add(const std::string& key, bool* field, const std::string& help) {
  impl_->add(key, field, help);
  return *this;
}

Schema& Schema::required(const std::string& key) {
  Option* o = impl_->find(key);
  if (!o) throw std::invalid_argument("uio " + impl_->command + ": required() of unregistered key '" + key + "'");
  o->required = true;
  return *this;
}

bool Schema::parse(const std::vector<std::string>& args, std::ostream& out) {
  if (std::find(args.begin(), args.end(), "--help") != args.end()) {
    out << help();
    return false;
  }
  Impl& impl = *impl_;
  po::variables_map vm;
  try {
    po::store(impl.parse_command_line(args), vm);  // stored first, so it wins over the INI file
  } catch (const po::multiple_occurrences& e) {
    fail("option '" + e.get_option_name() + "' is given more than once on the command line");
  }
  for (const auto& o : impl.options)
    if (vm.count(o.key) && !parse_value(o.field, vm[o.key].as<std::string>()))
      fail("bad value '" + vm[o.key].as<std::string>() + "' for '--" + o.key + "': expected " + type_name(o.field));
  if (vm.count("config")) po::store(impl.ini_options(vm["config"].as<std::string>()), vm);

  // Resolve everything before writing anything, so a failed parse leaves the struct untouched.
  std::vector<Value> resolved;
  for (const auto& o : impl.options) {
    if (vm.count(o.key)) {
      resolved.push_back(*parse_value(o.field, vm[o.key].as<std::string>()));
    } else if (o.required) {
      fail("missing required option '--" + o.key + "' for " + impl.name() +
           " (give it on the command line or in the --config file)");
    } else {
      resolved.push_back(o.default_value);
    }
  }
  for (size_t i = 0; i < resolved.size(); ++i)
    std::visit([&](auto* field) { *field = std::get<std::decay_t<decltype(*field)>>(resolved[i]); },
               impl.options[i].field);
  return true;
}

std::string Schema::help() const {
  const Impl& impl = *impl_;
  std::vector<std::pair<std::string, std::string>> rows = {
      {"--config FILE",
       "read options from an INI file ('key = value', [sections] allowed); the command line wins. "
       "Paths in the file, like those on the command line, are relative to the working directory"},
      {"--help", "print this help and exit"}};
  for (const auto& o : impl.options)
    rows.push_back({"--" + o.key + " " + type_word(o.field),
                    o.help + (o.required ? " (required)" : " (default: " + format_value(o.default_value) + ")")});
  size_t width = 0;
  for (const auto& r : rows) width = std::max(width, r.first.size());
  std::ostringstream s;
  s << "usage: uio " << impl.command << " [--config FILE] [options]\n\n" << impl.summary << "\n\noptions:\n";
  for (const auto& r : rows) s << "  " << r.first << std::string(width + 2 - r.first.size(), ' ') << r.second << "\n";
  return s.str();
}

std::string Schema::to_ini() const {
  std::ostringstream s;
  s << "[" << impl_->command << "]\n";
  for (const auto& o : impl_->options) {
    const Value v = std::visit([](auto* field) { return Value(*field); }, o.field);
    s << o.key << " = " << format_value(v) << "\n";
  }
  return s.str();
}

}  // namespace uio::cli
