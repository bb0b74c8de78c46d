// tools/export.cpp — `uio export`: the trained memory compressor alone, in formats other tools read
// (two PEFT LoRA adapters, the <mem> embedding, uio_config.json; model/memory_io.h). `uio generate
// --memory DIR` takes the result as it takes a checkpoint.
#include <filesystem>
#include <iostream>

#include "model/memory_io.h"
#include "tools/options.h"
#include "trainer/checkpoint.h"

namespace uio::cli {
namespace {

struct ExportOptions {
  std::string checkpoint, out;
};

// A checkpoint directory (verified), a run's out_dir (its newest complete checkpoint), or a compressor
// directory (uio_config.json + uio_memory.safetensors, e.g. <out_dir>/compressor).
std::string resolve_source(const std::string& path) {
  namespace fs = std::filesystem;
  if (fs::is_directory(fs::path(path) / "checkpoints")) {
    auto found = trainer::CheckpointStore((fs::path(path) / "checkpoints").string(), {}).find_latest(std::cerr);
    if (!found) throw OptionError(path + "/checkpoints holds no complete checkpoint");
    return *found;
  }
  if (fs::exists(fs::path(path) / "trainer_state.json") || fs::path(path).filename().string().rfind("step-", 0) == 0)
    trainer::verify_checkpoint(path);
  if (!fs::exists(fs::path(path) / "uio_memory.safetensors"))
    throw OptionError(path + ": no uio_memory.safetensors; --checkpoint takes a checkpoint directory "
                      "(<out_dir>/checkpoints/step-N), a run's out_dir, or a compressor directory");
  return path;
}

}  // namespace

int export_command(const std::vector<std::string>& args) {
  ExportOptions opt;
  Schema schema("export", "Export the trained memory compressor: encoder and transfer LoRA as PEFT adapters, the "
                          "<mem> embedding, and uio_config.json");
  schema.add("checkpoint", &opt.checkpoint, "a checkpoint directory, a run's out_dir (newest checkpoint) or a "
                                            "compressor directory")
      .add("out", &opt.out, "the export directory to write")
      .required("checkpoint")
      .required("out");
  if (!schema.parse(args, std::cout)) return 0;
  const auto source = resolve_source(opt.checkpoint);
  model::export_memory(source, opt.out);
  std::cout << "export: " << source << " -> " << opt.out << "\n"
            << "  encoder_adapter/   PEFT LoRA (load with peft.PeftModel.from_pretrained(base, \"" << opt.out
            << "/encoder_adapter\"))\n"
            << "  transfer_adapter/  PEFT LoRA of the transfer head\n"
            << "  memory_embedding.safetensors, uio_config.json\n"
            << "use it with: uio generate --model BASE --memory " << opt.out << " --prompt_file LONG.txt\n";
  return 0;
}

}  // namespace uio::cli
