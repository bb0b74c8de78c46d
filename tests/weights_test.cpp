// tests/weights_test.cpp — loading a base model from files that disagree with their config: counts and
// sizes checked against the tensors the file holds before any layer is built, and tensors the model does
// not use reported as errors (as transformers reports unused weights), for HF directories and GGUF files.
#include <chrono>
#include <cstring>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/weights.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using uio::model::load_model;

namespace {

// A copy of the tiny HF model `name` whose config.json has `key` set to `value`.
fs::path hf_model_with(const std::string& name, const std::string& key, const nlohmann::json& value) {
  const auto src = uio::test::testdata("hf_models/" + name);
  const auto dir = uio::test::scratch_dir() / name;
  fs::create_directories(dir);
  for (const auto& entry : fs::directory_iterator(src)) fs::copy_file(entry.path(), dir / entry.path().filename());
  auto config = nlohmann::json::parse(uio::test::read_file(dir / "config.json"));
  config[key] = value;
  uio::test::write_file(dir / "config.json", config.dump(2));
  return dir;
}

// The test GGUF `name` (tests/reference/gguf_ref.py) with the UINT32 metadata value of `key` set to `value`.
fs::path gguf_with(const std::string& name, const std::string& key, uint32_t value) {
  std::string bytes = uio::test::read_file(uio::test::testdata("gguf_ref") / name);
  std::string needle(8, '\0');
  const uint64_t len = key.size();
  std::memcpy(needle.data(), &len, 8);
  needle += key;
  const auto at = bytes.find(needle);
  EXPECT_NE(at, std::string::npos) << key;
  uint32_t type = 0;
  std::memcpy(&type, bytes.data() + at + needle.size(), 4);
  EXPECT_EQ(type, 4u) << key << " is not UINT32";
  std::memcpy(bytes.data() + at + needle.size() + 4, &value, 4);
  const auto path = uio::test::scratch_dir() / name;
  uio::test::write_file(path, bytes);
  return path;
}

// Expects load_model(path) to throw within `seconds`, with every one of `needles` in the message.
void expect_load_error(const fs::path& path, const std::vector<std::string>& needles, double seconds = 5) {
  const auto t0 = std::chrono::steady_clock::now();
  try {
    load_model(path.string());
    ADD_FAILURE() << path << ": expected an error containing '" << needles.front() << "'";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "missing '" << n << "' in: " << msg;
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), seconds)
      << path << ": the error came late (were layers built first?)";
}

}  // namespace

TEST(Weights, AbsurdLayerCountIsCheckedAgainstTheFileBeforeBuildingLayers) {
  const auto dir = hf_model_with("llama_yarn", "num_hidden_layers", 1000000000);
  expect_load_error(dir, {(dir / "config.json").string(), "num_hidden_layers", "1000000000", "3 layers",
                          (dir / "model.safetensors").string()});
  const auto gguf = gguf_with("llama.gguf", "llama.block_count", 0x7fffffff);
  expect_load_error(gguf, {gguf.string(), "block_count", "2147483647", "2 layers"});
}

TEST(Weights, AbsurdSizesAreCheckedAgainstTheFileBeforeBuildingLayers) {
  for (const auto& [key, needle] : {std::pair<std::string, std::string>{"hidden_size", "model.embed_tokens.weight"},
                                    {"intermediate_size", "mlp.gate_proj.weight"},
                                    {"vocab_size", "model.embed_tokens.weight"},
                                    {"head_dim", "self_attn.q_proj.weight"}}) {
    SCOPED_TRACE(key);
    const auto dir = hf_model_with("llama_yarn", key, 1000000000);
    expect_load_error(dir, {(dir / "model.safetensors").string(), needle, "config.json expects"});
  }
  const auto gguf = gguf_with("llama.gguf", "llama.feed_forward_length", 0x7fffffff);
  expect_load_error(gguf, {gguf.string(), "ffn_gate.weight", "2147483647"});
}

// A config with fewer layers than the file: transformers reports the rest as unused weights; uio refuses.
TEST(Weights, UnusedTensorsAreAnErrorNamingTheFileAndTheFirstOfThem) {
  const auto dir = hf_model_with("llama_yarn", "num_hidden_layers", 1);
  expect_load_error(dir, {(dir / "model.safetensors").string(), "not used", "'model.layers.1.", "num_hidden_layers"});
  const auto sharded = hf_model_with("llama_untied_linear", "num_hidden_layers", 2);
  expect_load_error(sharded, {"model-0000", "not used", "'model.layers.2."});
  const auto gguf = gguf_with("llama.gguf", "llama.block_count", 1);
  expect_load_error(gguf, {gguf.string(), "not used", "'blk.1."});
  // The full models load (every tensor used, rope_freqs.weight by the RoPE scaling).
  EXPECT_NO_THROW(load_model(uio::test::testdata("gguf_ref/llama.gguf").string()));
  EXPECT_NO_THROW(load_model(uio::test::testdata("hf_models/llama_untied_linear").string()));
}
