// tests/export_test.cpp — `uio export` output loads elsewhere: PEFT (peft.PeftModel.from_pretrained on
// the HF base model, tests/python/peft_export.py) gives the same LoRA'd q/v (encoder), k/v (transfer)
// and, when on, q/k/v/o (decoder) projections as uio on random inputs, for a tiny random Qwen2 and for
// SmolLM2 from its GGUF file; reloading the export in uio gives the checkpoint's weights and logits exactly;
// PEFT names round-trip.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/memory_io.h"
#include "model/memory_reader.h"
#include "model/memory_pass.h"
#include "model/peft.h"
#include "data/format/fingerprint.h"
#include "data/format/safetensors.h"
#include "model/weights.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"

using namespace uio;
namespace fs = std::filesystem;

namespace {

// A compressor with every adapter weight random (B too, so the LoRA term is not zero); with decoder
// adapters on q, k, v, o and a sink whose keys they compute when `decoder_rank` > 0.
model::MemoryCompressor random_compressor(const model::ModelConfig& config, uint64_t seed, int64_t decoder_rank = 0) {
  torch::manual_seed(seed);
  model::MemoryOptions o;
  o.segment_len = 16, o.num_memory_tokens = 4;
  o.encoder_lora = {4, 12.0, 0.0, {"q_proj", "v_proj"}};
  o.transfer_lora = {6, 9.0, 0.0, {"k_proj", "v_proj"}};
  if (decoder_rank > 0)
    o.decoder_lora = {decoder_rank, 10.0, 0.0, {"q_proj", "k_proj", "v_proj", "o_proj"}}, o.sink_tokens = 2;
  model::MemoryCompressor c(config, o, torch::randn({config.hidden_size}));
  torch::NoGradGuard no_grad;
  for (auto& p : c->parameters()) p.normal_(0, 0.05);
  return c;
}

// uio's projections with the compressor's adapters against PEFT's on the same random inputs.
void check_against_peft(const std::string& base_path, double tolerance, int64_t decoder_rank = 0) {
  auto loaded = model::load_model(base_path);
  auto compressor = random_compressor(loaded.config, uio::test::test_seed(), decoder_rank);
  const auto dir = uio::test::scratch_dir();
  model::save_memory((dir / "compressor").string(), compressor, model::identify(base_path, loaded.config));
  model::export_memory((dir / "compressor").string(), (dir / "export").string(), {false, base_path});

  auto x = torch::randn({7, loaded.config.hidden_size});
  auto xo = torch::randn({7, loaded.config.num_heads * loaded.config.head_dim});  // o_proj's input
  uio::format::write_safetensors((dir / "x.safetensors").string(), {{"x", x}, {"xo", xo}});
  const std::string command = uio::test::shell_quote(UIO_PYTHON_EXE) + " " +
                              uio::test::shell_quote(std::string(UIO_SOURCE_DIR) + "/tests/python/peft_export.py") +
                              " " + uio::test::shell_quote((dir / "export").string()) + " " +
                              uio::test::shell_quote(base_path) + " " +
                              uio::test::shell_quote((dir / "x.safetensors").string()) + " " +
                              uio::test::shell_quote((dir / "peft.safetensors").string()) + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  uio::format::SafetensorsFile peft((dir / "peft.safetensors").string());
  torch::NoGradGuard no_grad;
  int checked = 0;
  for (int64_t i = 0; i < loaded.config.num_layers; ++i) {
    auto& attn = *loaded.model->model->layers[i]->as<model::DecoderLayer>()->self_attn;
    const auto& enc = compressor->encoder->layer(i);
    const auto& tr = compressor->transfer_head->layer(i);
    std::vector<std::pair<std::string, torch::Tensor>> ours = {
        {"encoder.layers." + std::to_string(i) + ".q_proj", attn.q_proj(x, enc.q_proj)},
        {"encoder.layers." + std::to_string(i) + ".v_proj", attn.v_proj(x, enc.v_proj)},
        {"transfer.layers." + std::to_string(i) + ".k_proj", attn.k_proj(x, tr.k_proj)},
        {"transfer.layers." + std::to_string(i) + ".v_proj", attn.v_proj(x, tr.v_proj)}};
    if (decoder_rank > 0) {
      const auto& dec = compressor->decoder->layer(i);
      const auto prefix = "decoder.layers." + std::to_string(i);
      ours.push_back({prefix + ".q_proj", attn.q_proj(x, dec.q_proj)});
      ours.push_back({prefix + ".k_proj", attn.k_proj(x, dec.k_proj)});
      ours.push_back({prefix + ".v_proj", attn.v_proj(x, dec.v_proj)});
      ours.push_back({prefix + ".o_proj", attn.o_proj(xo, dec.o_proj)});
    }
    for (const auto& [name, y] : ours) {
      auto reference = peft.tensor(name);
      const double err = ((y - reference).norm() / reference.norm()).item<double>();
      EXPECT_LT(err, tolerance) << name;
      // The adapters really move the projection (so a dropped adapter would fail the check).
      auto plain = name.find(".q_proj") != std::string::npos   ? attn.q_proj(x)
                   : name.find(".k_proj") != std::string::npos ? attn.k_proj(x)
                   : name.find(".o_proj") != std::string::npos ? attn.o_proj(xo)
                                                               : attn.v_proj(x);
      EXPECT_GT(((plain - reference).norm() / reference.norm()).item<double>(), 100 * tolerance) << name;
      ++checked;
    }
  }
  EXPECT_EQ(checked, (decoder_rank > 0 ? 8 : 4) * loaded.config.num_layers);
  EXPECT_EQ(fs::exists(dir / "export/decoder_adapter/adapter_model.safetensors"), decoder_rank > 0);

  // Reloaded from the export, uio has the checkpoint's weights and gives identical logits.
  auto from_export = model::load_memory((dir / "export").string(), loaded.config,
                                        model::identify(base_path, loaded.config), torch::kCPU);
  for (const auto& item : compressor->named_parameters())
    EXPECT_TRUE(torch::equal(item.value(), from_export.compressor->named_parameters()[item.key()])) << item.key();
  auto ids = torch::randint(loaded.config.vocab_size, {3 * 16 + 5}, torch::kInt64);
  compressor->eval(), from_export.compressor->eval();
  EXPECT_TRUE(torch::equal(model::document_logits(loaded.model, compressor, ids),
                           model::document_logits(loaded.model, from_export.compressor, ids)));
  auto config = nlohmann::json::parse(std::ifstream(dir / "export/uio_config.json"));
  EXPECT_EQ(config["format"], "uio-export");
  EXPECT_EQ(config["num_memory_tokens"], 4);
  EXPECT_FALSE(config["base_model"]["fingerprint"].get<std::string>().empty());
  EXPECT_TRUE(config["base_model"].contains("checksum") || fs::is_directory(base_path));
  EXPECT_EQ(config.contains("decoder_lora"), decoder_rank > 0) << config.dump();
  if (decoder_rank > 0) {
    EXPECT_EQ(config["decoder_lora"]["rank"], decoder_rank);
    EXPECT_TRUE(config["files"].contains("decoder_adapter")) << config.dump();
    // An export that lost its decoder adapter is refused naming it, not read as the paper's decoder.
    fs::rename(dir / "export/decoder_adapter", dir / "decoder_adapter.moved");
    try {
      model::load_memory((dir / "export").string(), loaded.config, model::identify(base_path, loaded.config),
                         torch::kCPU);
      ADD_FAILURE() << "an export without its decoder adapter was accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("decoder_adapter"), std::string::npos) << e.what();
    }
    // And one whose config says no decoder adapters but that holds some is refused too.
    fs::rename(dir / "decoder_adapter.moved", dir / "export/decoder_adapter");
    config.erase("decoder_lora");
    uio::test::write_file(dir / "export/uio_config.json", config.dump(2));
    EXPECT_THROW(model::load_memory((dir / "export").string(), loaded.config, model::identify(base_path, loaded.config),
                                    torch::kCPU),
                 std::runtime_error);
  }
}

}  // namespace

TEST(Export, PeftLoadsTheAdaptersOfATinyQwen2AndUioReloadsTheExportExactly) {
  check_against_peft(uio::test::testdata("hf_models/qwen2_bias").string(), 1e-5);
}

TEST(Export, PeftLoadsTheAdaptersOnSmolLM2FromItsGguf) {
  const auto ref = uio::test::testdata("smollm2") / "reference.json";
  if (!fs::exists(ref)) GTEST_SKIP() << "no SmolLM2 GGUF under models/ (run scripts/get-model.sh)";
  check_against_peft(nlohmann::json::parse(std::ifstream(ref))["gguf"].get<std::string>(), 1e-4);
}

// Beyond the paper: decoder adapters export as a third PEFT adapter (decoder_adapter/, q, k, v, o) that PEFT
// applies as uio does, and the export reloads with them exactly.
TEST(Export, DecoderAdaptersExportAsAThirdPeftAdapterAndReloadExactly) {
  check_against_peft(uio::test::testdata("hf_models/qwen2_bias").string(), 1e-5, /*decoder_rank=*/5);
}

TEST(Export, PeftNamesRoundTripAndUnknownNamesAreRefused) {
  EXPECT_EQ(model::peft_tensor_name("layers.3.v_proj.lora_B"),
            "base_model.model.model.layers.3.self_attn.v_proj.lora_B.weight");
  EXPECT_EQ(model::peft_tensor_name("layers.0.down_proj.lora_A"),
            "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight");
  for (const char* name : {"layers.12.q_proj.lora_A", "layers.1.gate_proj.lora_B", "layers.7.o_proj.lora_A"})
    EXPECT_EQ(model::uio_tensor_name(model::peft_tensor_name(name)), name);
  EXPECT_THROW(model::peft_tensor_name("layers.1.qkv.lora_A"), std::invalid_argument);
  EXPECT_THROW(model::uio_tensor_name("base_model.model.model.layers.1.mlp.q_proj.lora_A.weight"),
               std::invalid_argument);
}

TEST(Export, CliExportsARunsNewestCheckpointAndRefusesADamagedOne) {
  auto loaded = model::load_model(uio::test::testdata("hf_models/qwen2_bias").string());
  auto compressor = random_compressor(loaded.config, 3);
  const auto dir = uio::test::scratch_dir();
  model::save_memory((dir / "compressor").string(), compressor, model::identify("tiny", loaded.config));
  auto r =
      uio::test::run_uio({"export", "--checkpoint", (dir / "compressor").string(), "--out", (dir / "out").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir / "out/encoder_adapter/adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "out/transfer_adapter/adapter_config.json"));
  EXPECT_TRUE(fs::exists(dir / "out/memory_embedding.safetensors"));
  auto bad = uio::test::run_uio({"export", "--checkpoint", (dir / "nothing").string(), "--out", (dir / "o2").string()});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("no uio_memory.safetensors"), std::string::npos) << bad.err;
}

// The trained compressor committed in exports/smollm2-135m (the README's headline run) loads against the
// SmolLM2 GGUF it was trained on (shapes, fingerprint, adapters) and generates on the CPU, its prompt read
// through memory (one 4,096-token segment compressed, a 128-token tail decoded with it and the sink).
TEST(Export, TheCommittedTrainedCompressorGeneratesOnTheCpu) {
  const auto ref = uio::test::testdata("smollm2") / "reference.json";
  if (!fs::exists(ref)) GTEST_SKIP() << "no SmolLM2 GGUF under models/ (run scripts/get-model.sh)";
  const std::string gguf = nlohmann::json::parse(std::ifstream(ref))["gguf"];
  const fs::path exported = fs::path(UIO_SOURCE_DIR) / "exports" / "smollm2-135m";
  const auto config = nlohmann::json::parse(std::ifstream(exported / "uio_config.json"));
  ASSERT_EQ(config["segment_len"], 4096);
  ASSERT_EQ(config["sink_tokens"], 4);
  // Text of more than one segment: numbered lines, so the tokens are many and the ids varied.
  std::string text;
  std::mt19937_64 rng(uio::test::test_seed());
  for (int i = 0; text.size() < 4096 * 3; ++i) text += "Line " + std::to_string(rng() % 100000) + " of the ledger.\n";
  const auto dir = uio::test::scratch_dir();
  { std::ofstream(dir / "prompt.txt") << text; }
  const auto r = uio::test::run_uio({"generate", "--model", gguf, "--memory", exported.string(), "--prompt_file",
                                     (dir / "prompt.txt").string(), "--max_new_tokens", "4", "--device", "cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE((r.out + r.err).find("prompt tokens"), std::string::npos) << r.err << r.out;
}

// `uio export --out` never writes into a compressor, a checkpoint or a run (their uio_config.json would be
// overwritten), --force or not; a non-empty directory needs --force (which leaves other files there).
TEST(Export, RefusesACheckpointAndANonEmptyTargetUnlessForceWhichNeverReachesACheckpoint) {
  auto loaded = model::load_model(uio::test::testdata("hf_models/qwen2_bias").string());
  auto compressor = random_compressor(loaded.config, 4);
  const auto dir = uio::test::scratch_dir();
  const auto source = dir / "compressor";
  model::save_memory(source.string(), compressor, model::identify("tiny", loaded.config));
  const auto checkpoint = dir / "run" / "checkpoints" / "step-00000001";
  model::save_memory(checkpoint.string(), compressor, model::identify("tiny", loaded.config));
  uio::test::write_file(checkpoint / "trainer_state.json", "{}");
  const auto config_before = uio::test::read_file(checkpoint / "uio_config.json");
  auto run = [&](const fs::path& out, bool force) {
    std::vector<std::string> args = {"export", "--checkpoint", source.string(), "--out", out.string()};
    if (force) args.push_back("--force");
    return uio::test::run_uio(args);
  };
  for (const bool force : {false, true}) {
    for (const auto& target : {checkpoint, source, dir / "run", dir / "run" / "checkpoints" / "step-00000002"}) {
      const auto r = run(target, force);
      EXPECT_EQ(r.exit_code, 1) << target << (force ? " --force" : "");
      EXPECT_NE(r.err.find(target.string() + ": "), std::string::npos) << r.err;
    }
  }
  EXPECT_EQ(uio::test::read_file(checkpoint / "uio_config.json"), config_before);
  EXPECT_FALSE(fs::exists(checkpoint / "encoder_adapter"));
  EXPECT_FALSE(fs::exists(dir / "run" / "checkpoints" / "step-00000002"));

  fs::create_directories(dir / "notes");
  uio::test::write_file(dir / "notes" / "readme.txt", "mine");
  const auto refused = run(dir / "notes", false);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("is not empty"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("--force"), std::string::npos) << refused.err;
  EXPECT_FALSE(fs::exists(dir / "notes" / "uio_config.json"));
  const auto forced = run(dir / "notes", true);
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_EQ(uio::test::read_file(dir / "notes" / "readme.txt"), "mine");
  EXPECT_TRUE(fs::exists(dir / "notes" / "uio_config.json"));
  fs::create_directories(dir / "empty");
  EXPECT_EQ(run(dir / "empty", false).exit_code, 0);
}

// A full disk during an export (a small tmpfs, filled to leave 0, 4, 8, ... KiB): every attempt either
// writes a whole export that loads, or fails naming the file and "No space left", and never leaves a
// 0-byte or partial file under its final name.
TEST(Export, AFullDiskFailsNamingTheFileAndLeavesNoEmptyOrPartialFile) {
  const auto scratch = uio::test::scratch_dir();
  const auto mount = scratch / "tmpfs";
  fs::create_directories(mount);
  const std::string mount_cmd =
      "mount -t tmpfs -o size=512k tmpfs " + uio::test::shell_quote(mount.string()) + " 2>/dev/null";
  if (std::system(mount_cmd.c_str()) != 0) GTEST_SKIP() << "cannot mount a tmpfs here (not root?)";
  struct Unmount {
    std::string path;
    ~Unmount() { std::system(("umount " + uio::test::shell_quote(path)).c_str()); }
  } unmount{mount.string()};

  auto loaded = model::load_model(uio::test::testdata("hf_models/qwen2_bias").string());
  auto compressor = random_compressor(loaded.config, 5);
  const auto source = scratch / "compressor";
  model::save_memory(source.string(), compressor, model::identify("tiny", loaded.config));
  int failed = 0, written = 0;
  for (int free_kib = 0; free_kib <= 64; free_kib += 4) {
    SCOPED_TRACE("free KiB: " + std::to_string(free_kib));
    const auto out = mount / "export";
    {
      const auto space = fs::space(mount);
      const auto filler = space.available > static_cast<uintmax_t>(free_kib) * 1024
                              ? space.available - static_cast<uintmax_t>(free_kib) * 1024
                              : 0;
      std::ofstream(mount / "filler", std::ios::binary) << std::string(filler, 'f');
    }
    try {
      model::export_memory(source.string(), out.string());
      ++written;
      auto back = model::load_memory(out.string(), loaded.config, model::identify("tiny", loaded.config), torch::kCPU);
      for (const auto& item : compressor->named_parameters())
        EXPECT_TRUE(torch::equal(item.value(), back.compressor->named_parameters()[item.key()])) << item.key();
    } catch (const std::exception& e) {
      ++failed;
      const std::string what = e.what();
      EXPECT_NE(what.find("No space left on device"), std::string::npos) << what;
      EXPECT_NE(what.find(out.string()), std::string::npos) << what;
    }
    if (fs::exists(out)) {
      for (const auto& e : fs::recursive_directory_iterator(out)) {
        EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "left behind: " << e.path();
        if (e.is_regular_file()) {
          EXPECT_GT(fs::file_size(e.path()), 0u) << "an empty file: " << e.path();
        }
      }
    }
    fs::remove_all(out);
    fs::remove(mount / "filler");
  }
  EXPECT_GT(failed, 0) << "no attempt ran out of space";
  EXPECT_GT(written, 0) << "no attempt had room enough";
}

// base_model.path in a compressor's uio_config.json records the path given when training; export never
// opens it (a moved model, or a record edited to name any file). The checksum goes into the export only
// for a base model the user names with --model, after its fingerprint matched the compressor's.
TEST(Export, NeverOpensTheBaseModelPathTheConfigRecordsOnlyTheOneTheUserNames) {
  auto loaded = model::load_model(uio::test::testdata("hf_models/qwen2_bias").string());
  auto compressor = random_compressor(loaded.config, 6);
  const auto dir = uio::test::scratch_dir();
  const auto base = dir / "base.gguf";
  uio::test::write_file(base, std::string(1 << 20, 'b'));
  model::save_memory((dir / "compressor").string(), compressor, model::identify(base.string(), loaded.config));
  auto config_of = [&](const fs::path& out) { return nlohmann::json::parse(std::ifstream(out / "uio_config.json")); };

  auto r = uio::test::run_uio({"export", "--checkpoint", (dir / "compressor").string(), "--out", (dir / "a").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(config_of(dir / "a")["base_model"].contains("checksum")) << config_of(dir / "a").dump();
  EXPECT_EQ(config_of(dir / "a")["base_model"]["path"], base.string());

  r = uio::test::run_uio({"export", "--checkpoint", (dir / "compressor").string(), "--out", (dir / "b").string(),
                          "--model", base.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(config_of(dir / "b")["base_model"]["checksum"].get<uint64_t>(), uio::format::file_checksum(base.string()));

  uio::test::write_file(dir / "other.gguf", std::string(1 << 20, 'o'));
  r = uio::test::run_uio({"export", "--checkpoint", (dir / "compressor").string(), "--out", (dir / "c").string(),
                          "--model", (dir / "other.gguf").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("other weights than the base model"), std::string::npos) << r.err;
}
