// tools/commands.cpp — the list of subcommands, in the order `uio --help` shows them.
#include "tools/commands.h"

namespace uio::cli {

int info_command(const std::vector<std::string>& args);
int generate_command(const std::vector<std::string>& args);
int prepare_command(const std::vector<std::string>& args);
int bench_command(const std::vector<std::string>& args);
int train_command(const std::vector<std::string>& args);
int export_command(const std::vector<std::string>& args);
int eval_command(const std::vector<std::string>& args);

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"info", "describe a base model (HF directory or .gguf); --forward_tokens N times a forward pass", info_command},
      {"generate", "continue a prompt (--prompt or stdin), streaming tokens; greedy or sampled", generate_command},
      {"prepare", "tokenise text files (files, directories, globs) into a token store for training", prepare_command},
      {"train", "fine-tune the memory compressor on a token store; checkpoints, --resume auto", train_command},
      {"export", "the trained memory compressor as PEFT adapters + <mem> embedding, for other tools", export_command},
      {"eval", "long-context evaluation: memory vs truncation and RoPE scaling (perplexity, passkey, needle)",
       eval_command},
      {"bench", "measure speed: 'uio bench train|memory|tokenizer' (uio bench --help lists them)", bench_command},
  };
  return table;
}

}  // namespace uio::cli
