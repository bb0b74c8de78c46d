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

struct ExportInput {
  std::string checkpoint, out, model;
  bool force = false;
};

// The compressor to export (trainer::resolve_compressor_dir): it must hold uio_memory.safetensors.
std::string resolve_source(const std::string& path) {
  const auto dir = trainer::resolve_compressor_dir(path, std::cerr);
  if (!std::filesystem::exists(std::filesystem::path(dir) / "uio_memory.safetensors"))
    throw OptionError(dir +
                      ": no uio_memory.safetensors; --checkpoint takes a checkpoint directory "
                      "(<out_dir>/checkpoints/step-N), a run's out_dir, or a compressor directory");
  return dir;
}

}  // namespace

int export_command(const std::vector<std::string>& args) {
  ExportInput opt;
  Schema schema("export",
                "Export the trained memory compressor: encoder and transfer LoRA as PEFT adapters, the "
                "<mem> embedding, and uio_config.json");
  schema
      .add("checkpoint", &opt.checkpoint,
           "a checkpoint directory, a run's out_dir (newest checkpoint) or a "
           "compressor directory")
      .add("out", &opt.out, "the export directory to write: a new or empty one (never a checkpoint or compressor)")
      .add("force", &opt.force, "write into a non-empty --out (files of the export's names are replaced)")
      .add("model", &opt.model,
           "the base model (checked against the compressor's fingerprint); a single-file "
           "model's checksum is then recorded in uio_config.json")
      .required("checkpoint")
      .required("out");
  if (!schema.parse(args, std::cout)) return 0;
  model::check_export_target(opt.out, opt.force);  // before anything is read
  const auto source = resolve_source(opt.checkpoint);
  model::export_memory(source, opt.out, {opt.force, opt.model});
  std::cout << "export: " << source << " -> " << opt.out << "\n"
            << "  encoder_adapter/   PEFT LoRA (load with peft.PeftModel.from_pretrained(base, \"" << opt.out
            << "/encoder_adapter\"))\n"
            << "  transfer_adapter/  PEFT LoRA of the transfer head\n"
            << "  memory_embedding.safetensors, uio_config.json\n"
            << "use it with: uio generate --model BASE --memory " << opt.out << " --prompt_file LONG.txt\n";
  return 0;
}

}  // namespace uio::cli
