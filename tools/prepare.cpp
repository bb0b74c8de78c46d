// tools/prepare.cpp — `uio prepare`: text files in, a token store out (data/prepare.h does the work).
// This file owns the option names and the comma-separated --inputs syntax, nothing else.
#include <iostream>

#include "data/prepare.h"
#include "data/tokenizer.h"
#include "tools/commands.h"
#include "tools/options.h"

namespace uio::cli {
namespace {

struct PrepareCommandOptions {
  std::string inputs;
  std::string out;
  std::string tokenizer;
  std::string separator;
  double heldout_fraction = 0.01;
  int64_t seed = 0;
  int64_t threads = 0;
};

// "a, b,c" -> {"a", "b", "c"}; an empty item (",," or a trailing comma) is an error, not skipped.
std::vector<std::string> split_inputs(const std::string& list) {
  std::vector<std::string> items;
  size_t start = 0;
  for (;;) {
    const size_t comma = list.find(',', start);
    std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const size_t first = item.find_first_not_of(" \t");
    const size_t last = item.find_last_not_of(" \t");
    item = first == std::string::npos ? "" : item.substr(first, last - first + 1);
    if (item.empty())
      throw OptionError("--inputs '" + list +
                        "' has an empty item; expected a comma-separated list such as "
                        "--inputs 'corpus/austen,notes.txt,corpus/linux/*.txt'");
    items.push_back(item);
    if (comma == std::string::npos) return items;
    start = comma + 1;
  }
}

int run_prepare(const std::vector<std::string>& args) {
  PrepareCommandOptions opt;
  const data::PrepareOptions defaults;
  opt.heldout_fraction = defaults.heldout_fraction;
  opt.seed = static_cast<int64_t>(defaults.seed);
  opt.threads = defaults.threads;
  Schema schema("prepare",
                "Tokenise text files into a token store (tokens.bin + index.bin) for training.\n"
                "--inputs is a comma-separated list; each item is a file, a directory (read recursively,\n"
                "names starting with '.' skipped) or a glob pattern (quote it so the shell leaves it alone; a\n"
                "pattern that matches no file is an error),\n"
                "e.g. --inputs 'corpus/austen,corpus/linux/*.txt,notes.txt'. File names with commas are not\n"
                "supported. Binary files (a NUL byte, or >1% invalid UTF-8) are skipped with a warning.");
  schema.add("inputs", &opt.inputs, "comma-separated files, directories and glob patterns to read")
      .add("out", &opt.out, "the token store directory to write (created; an existing store is replaced)")
      .add("tokenizer", &opt.tokenizer, "model whose tokenizer to use: a .gguf file or an HF directory")
      .add("separator", &opt.separator, "split files into documents at lines equal to this (empty: one per file)")
      .add("heldout_fraction", &opt.heldout_fraction, "fraction of documents held out for evaluation, in [0, 1]")
      .add("seed", &opt.seed, "seed of the held-out assignment (a document's split depends on its name and this)")
      .add("threads", &opt.threads, "tokenising threads (0 = all cores)")
      .required("inputs")
      .required("out")
      .required("tokenizer");
  if (!schema.parse(args, std::cout)) return 0;
  if (opt.seed < 0) throw OptionError("--seed must be >= 0, got " + std::to_string(opt.seed));
  if (opt.threads < 0) throw OptionError("--threads must be >= 0 (0 = all cores), got " + std::to_string(opt.threads));
  if (!(opt.heldout_fraction >= 0 && opt.heldout_fraction <= 1))
    throw OptionError("--heldout_fraction must lie in [0, 1], got " + std::to_string(opt.heldout_fraction));

  data::PrepareOptions prepare;
  prepare.inputs = split_inputs(opt.inputs);
  prepare.out_dir = opt.out;
  prepare.separator = opt.separator;
  prepare.heldout_fraction = opt.heldout_fraction;
  prepare.seed = static_cast<uint64_t>(opt.seed);
  prepare.threads = static_cast<int>(opt.threads);

  const auto tokenizer = data::load_tokenizer(opt.tokenizer);
  std::cout << "tokenizer: " << opt.tokenizer << " (" << data::tokenizer_identity(*tokenizer) << ")\n";
  data::prepare_corpus(prepare, *tokenizer, std::cout);  // logs progress and the summary
  std::cout << "token store: " << opt.out << "\n";
  return 0;
}

}  // namespace

int prepare_command(const std::vector<std::string>& args) { return run_prepare(args); }

}  // namespace uio::cli
