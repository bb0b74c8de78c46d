// tests/cli_test.cpp — the built `uio` binary (env UIO_BIN, else the one beside uio_tests) run as a child process:
// the command list, `info` on a tiny HF model, option errors (unknown key on the command line and in
// an INI file), `generate` on SmolLM2 against HF's greedy text, `prepare` on a small folder and on an
// empty one, and `bench` dispatch.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <random>

#include <regex>

#include <torch/cuda.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/token_store.h"
#include "data/tokenizer.h"
#include "model/generate.h"
#include "model/memory_reader.h"
#include "model/memory_pass.h"
#include "model/memory_io.h"
#include "model/weights.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"

namespace {

namespace fs = std::filesystem;
using uio::test::Result;
using uio::test::run_uio;

std::string random_prose(std::mt19937_64& rng, int words) {
  static const std::vector<std::string> vocabulary = {"river", "the", "bridge", "was",   "rising", "Öl",    "1923,",
                                                      "geese", "and", "piano.", "naïve", "\n",     "we'll", "—"};
  std::string s;
  for (int w = 0; w < words; ++w) s += vocabulary[rng() % vocabulary.size()] + " ";
  return s;
}

// Tensor count of a safetensors file, from its JSON header (independent of uio's reader).
int64_t safetensors_tensor_count(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  uint64_t len = 0;
  in.read(reinterpret_cast<char*>(&len), 8);
  std::string header(len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(len));
  auto j = nlohmann::json::parse(header);
  return static_cast<int64_t>(j.size()) - (j.contains("__metadata__") ? 1 : 0);
}

}  // namespace

TEST(Cli, HelpListsEveryCommand) {
  const auto r = run_uio({"--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const std::string name : {"info", "generate", "prepare", "bench"})
    EXPECT_NE(r.out.find("\n  " + name + " "), std::string::npos) << name << " missing from:\n" << r.out;
}

TEST(Cli, AMisspeltCommandSuggestsTheClosestOne) {
  const auto r = run_uio({"genrate", "--prompt", "hi"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'genrate'; did you mean 'uio generate'?"), std::string::npos) << r.err;
  const auto far = run_uio({"frobnicate"});
  EXPECT_EQ(far.err.find("did you mean"), std::string::npos) << far.err;
}

TEST(Cli, InfoOnATinyHfModelPrintsItsArchitectureAndTensorTypes) {
  const fs::path dir = uio::test::testdata("hf_models/llama_yarn");
  const auto config = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  const auto r = run_uio({"info", "--model", dir.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string arch = config["model_type"];
  EXPECT_NE(r.out.find("architecture   " + arch + " (" + std::to_string(config["num_hidden_layers"].get<int>()) +
                       " layers, hidden " + std::to_string(config["hidden_size"].get<int>())),
            std::string::npos)
      << r.out;
  // All float32 tensors, listed with their count and the config's dtype.
  const int64_t tensors = safetensors_tensor_count(dir / "model.safetensors");
  EXPECT_NE(r.out.find("weights dtype  safetensors F32 x" + std::to_string(tensors) + " (config torch_dtype "),
            std::string::npos)
      << r.out;
}

TEST(Cli, UnknownCommandLineKeyFailsAndSuggestsTheClosestKey) {
  const auto r =
      run_uio({"info", "--model", uio::test::testdata("hf_models/llama_yarn").string(), "--forward_tokns", "4"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("did you mean '--forward_tokens'"), std::string::npos) << r.err;
}

TEST(Cli, UnknownKeyInAnIniFileIsReportedWithFileAndLine) {
  const auto dir = uio::test::scratch_dir();
  const fs::path ini = dir / "info.ini";
  uio::test::write_file(ini, "# a model to describe\n[info]\nmodel = " +
                                 uio::test::testdata("hf_models/llama_yarn").string() + "\nforward_tokes = 3\n");
  const auto r = run_uio({"info", "--config", ini.string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find(ini.string() + ":4: unknown key 'forward_tokes'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("did you mean 'forward_tokens'"), std::string::npos) << r.err;
}

TEST(Cli, GenerateOnSmolLM2PrintsThePromptAndHuggingFacesGreedyText) {
  const fs::path meta_path = uio::test::testdata("smollm2") / "reference.json";
  if (!fs::exists(meta_path)) GTEST_SKIP() << "no SmolLM2 GGUF under models/ (run scripts/get-model.sh)";
  const auto meta = nlohmann::json::parse(std::ifstream(meta_path));
  ASSERT_TRUE(meta.contains("greedy_text0")) << "rerun tests/make_reference.py (reference.json predates greedy_text0)";
  const std::string prompt = meta["prompts"][0];
  ASSERT_EQ(prompt, "The capital of France is");
  const auto r =
      run_uio({"generate", "--model", meta["gguf"].get<std::string>(), "--prompt", prompt, "--max_new_tokens", "8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, prompt + meta["greedy_text0"].get<std::string>() + "\n");  // the text ends its line
  EXPECT_NE(r.err.find("8 new tokens"), std::string::npos) << r.err;
  // Statistics rounded: "in 0.12 s", "12.3 tokens/s".
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(prompt tokens in \d+\.\d\d s; 8 new tokens, \d+\.\d tokens/s\])")))
      << r.err;
}

TEST(Cli, PrepareStoresThreeTextFilesAndSkipsTheBinaryOne) {
  const auto dir = uio::test::scratch_dir();
  std::mt19937_64 rng(uio::test::test_seed());
  fs::create_directories(dir / "in" / "sub");
  uio::test::write_file(dir / "in" / "a.txt", random_prose(rng, 200));
  uio::test::write_file(dir / "in" / "b.txt", random_prose(rng, 50));
  uio::test::write_file(dir / "in" / "sub" / "c.md", random_prose(rng, 120));
  std::string binary(4096, '\0');
  for (auto& c : binary) c = static_cast<char>(rng());
  binary[100] = '\0';
  uio::test::write_file(dir / "in" / "d.bin", binary);

  const auto r = run_uio({"prepare", "--inputs", (dir / "in").string(), "--out", (dir / "store").string(),
                          "--tokenizer", uio::test::testdata("tokenizer_ref/smollm").string(), "--threads", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("documents: 3 ("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("from 3 files; 1 binary files skipped"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("skipping " + (dir / "in" / "d.bin").string()), std::string::npos) << r.out;
  EXPECT_EQ(uio::data::TokenStore((dir / "store").string()).num_documents(), 3);
}

TEST(Cli, PrepareOnAnEmptyFolderFailsWithNoDocumentsFound) {
  const auto dir = uio::test::scratch_dir();
  fs::create_directories(dir / "empty");
  const auto r = run_uio({"prepare", "--inputs", (dir / "empty").string(), "--out", (dir / "store").string(),
                          "--tokenizer", uio::test::testdata("tokenizer_ref/smollm").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("no documents found"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "store" / "index.bin"));
}

TEST(Cli, PrepareReadsACommaSeparatedListOfInputs) {
  const auto dir = uio::test::scratch_dir();
  std::mt19937_64 rng(uio::test::test_seed());
  fs::create_directories(dir / "x");
  fs::create_directories(dir / "y");
  uio::test::write_file(dir / "x" / "one.txt", random_prose(rng, 30));
  uio::test::write_file(dir / "x" / "two.txt", random_prose(rng, 30));
  uio::test::write_file(dir / "y" / "three.txt", random_prose(rng, 30));
  uio::test::write_file(dir / "y" / "skip.log", random_prose(rng, 30));
  const std::string inputs = (dir / "x" / "one.txt").string() + ", " + (dir / "y" / "*.txt").string();
  const auto r = run_uio({"prepare", "--inputs", inputs, "--out", (dir / "store").string(), "--tokenizer",
                          uio::test::testdata("tokenizer_ref/smollm").string(), "--heldout_fraction", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  uio::data::TokenStore store((dir / "store").string());
  ASSERT_EQ(store.num_documents(), 2);

  const auto bad = run_uio({"prepare", "--inputs", inputs + ",", "--out", (dir / "store2").string(), "--tokenizer",
                            uio::test::testdata("tokenizer_ref/smollm").string()});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("has an empty item"), std::string::npos) << bad.err;
}

TEST(Cli, BenchDispatchesOnItsFirstWord) {
  const auto dir = uio::test::scratch_dir();
  std::mt19937_64 rng(uio::test::test_seed());
  uio::test::write_file(dir / "text.txt", random_prose(rng, 3000));
  const auto r = run_uio({"bench", "tokenizer", "--model", uio::test::testdata("tokenizer_ref/smollm").string(),
                          "--text", (dir / "text.txt").string(), "--hf=false", "--runs", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("uio 1 thread   "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" MB/s"), std::string::npos) << r.out;

  const auto unknown = run_uio({"bench", "tokeniser"});
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.err.find("unknown bench 'tokeniser' (known: tokenizer"), std::string::npos) << unknown.err;
  const auto none = run_uio({"bench"});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("needs a first word"), std::string::npos) << none.err;
}

// `uio prepare` and `uio bench tokenizer` read the same files of a folder: a hidden file, a file with a NUL
// byte and one that is mostly invalid UTF-8 (text by the NUL rule alone) are left out by both.
TEST(Cli, PrepareAndBenchTokenizerCountTheSameFiles) {
  const auto dir = uio::test::scratch_dir();
  std::mt19937_64 rng(uio::test::test_seed());
  fs::create_directories(dir / "in" / "sub");
  uio::test::write_file(dir / "in" / "a.txt", random_prose(rng, 2000));
  uio::test::write_file(dir / "in" / "sub" / "b.txt", random_prose(rng, 1500));
  uio::test::write_file(dir / "in" / ".hidden.txt", random_prose(rng, 500));
  uio::test::write_file(dir / "in" / "nul.bin", random_prose(rng, 300) + std::string(1, '\0') + "tail");
  std::string latin1 = random_prose(rng, 50);
  for (int i = 0; i < 200; ++i) latin1 += static_cast<char>(0xE9);  // Latin-1 bytes: invalid UTF-8
  uio::test::write_file(dir / "in" / "latin1.txt", latin1);
  const auto tokenizer = uio::test::testdata("tokenizer_ref/smollm").string();
  const auto prepared = run_uio(
      {"prepare", "--inputs", (dir / "in").string(), "--out", (dir / "store").string(), "--tokenizer", tokenizer});
  ASSERT_EQ(prepared.exit_code, 0) << prepared.err << prepared.out;
  EXPECT_NE(prepared.out.find("from 2 files; 2 binary files skipped"), std::string::npos) << prepared.out;
  const auto bench = run_uio(
      {"bench", "tokenizer", "--model", tokenizer, "--text", (dir / "in").string(), "--hf=false", "--runs", "1"});
  ASSERT_EQ(bench.exit_code, 0) << bench.err << bench.out;
  EXPECT_NE(bench.out.find(": 2 files, "), std::string::npos) << bench.out;
  EXPECT_NE(bench.out.find("2 binary files skipped"), std::string::npos) << bench.out;
}

namespace {

// `uio generate --memory` of a random compressor on SmolLM2 prints what the library's memory reader greedily
// generates with it; with `decoder_rank` > 0 the compressor has decoder adapters (beyond the paper) and a sink.
void expect_generate_with_memory_matches_the_library(int64_t decoder_rank) {
  const fs::path meta_path = uio::test::testdata("smollm2") / "reference.json";
  if (!fs::exists(meta_path)) GTEST_SKIP() << "no SmolLM2 GGUF under models/ (run scripts/get-model.sh)";
  const std::string gguf = nlohmann::json::parse(std::ifstream(meta_path))["gguf"];
  auto loaded = uio::model::load_model(gguf);
  uio::model::MemoryOptions o;
  o.segment_len = 16, o.num_memory_tokens = 4;
  if (decoder_rank > 0) o.decoder_lora.rank = decoder_rank, o.decoder_lora.alpha = 16.0, o.sink_tokens = 2;
  torch::manual_seed(uio::test::test_seed());
  uio::model::MemoryCompressor compressor(loaded.config, o, torch::randn({loaded.config.hidden_size}) * 0.05);
  {
    torch::NoGradGuard no_grad;
    for (auto& item : compressor->named_parameters())
      if (item.key().find("lora_B") != std::string::npos) item.value().normal_(0, 0.02);
  }
  const auto dir = uio::test::scratch_dir() / "memory";
  uio::model::save_memory(dir.string(), compressor, uio::model::identify(gguf, loaded.config));

  const std::string prompt =
      "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: "
      "once or twice she had peeped into the book her sister was reading. The book was about";
  auto tokenizer = uio::data::load_tokenizer(gguf);
  auto ids32 = tokenizer->encode(prompt);
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  ASSERT_GT(ids.size(), 32u);
  uio::model::MemoryReader reader(loaded.model, compressor);
  uio::model::SamplingOptions greedy;
  greedy.max_new_tokens = 6;
  auto want = uio::model::generate(reader, ids, greedy);

  const auto r =
      run_uio({"generate", "--model", gguf, "--memory", dir.string(), "--prompt", prompt, "--max_new_tokens", "6"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, tokenizer->decode(std::vector<int32_t>(want.begin(), want.end()), /*skip_special=*/true) + "\n");
  EXPECT_NE(r.err.find("reading prompt"), std::string::npos) << r.err;
  if (decoder_rank > 0) {  // the adapters change what is read (so a generate that dropped them would differ)
    torch::NoGradGuard no_grad;
    auto frozen = o;
    frozen.decoder_lora.rank = 0;
    uio::model::MemoryCompressor paper(loaded.config, frozen, torch::zeros({loaded.config.hidden_size}));
    auto ours = compressor->named_parameters();
    for (auto& item : paper->named_parameters()) item.value().copy_(ours[item.key()]);
    uio::model::MemoryReader a(loaded.model, compressor), b(loaded.model, paper);
    EXPECT_GT((a.read(ids) - b.read(ids)).abs().max().item<double>(), 1e-3);
  }
}

}  // namespace

// `uio generate --memory DIR` on SmolLM2 with a saved (random) compressor and l = 16: the prompt spans
// several segments, so it is read with memory; the text equals the library's greedy memory decoding.
TEST(Cli, GenerateWithMemoryMatchesTheLibrarysMemoryDecoding) { expect_generate_with_memory_matches_the_library(0); }

TEST(Cli, GenerateWithMemoryReadsTheDecoderAdapters) { expect_generate_with_memory_matches_the_library(4); }

// --device cuda where no GPU can be used says why (a CPU build, or no GPU visible) instead of libtorch's
// raw message, and fails before any work.
TEST(Cli, CudaOnABuildOrMachineWithoutOneSaysWhichAndHow) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is here";
  const auto r = run_uio({"info", "--model", uio::test::testdata("hf_models/qwen2_bias").string(), "--device", "cuda"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(r.err.find("CPU build") != std::string::npos || r.err.find("sees no GPU") != std::string::npos) << r.err;
}

// Sampling options out of range, a token limit past what the model can hold and a directory as the prompt
// file fail before any work with exit 1 and a message naming the option (and the path).
TEST(Cli, GenerateRefusesBadOptionsNamingTheOption) {
  const fs::path meta_path = uio::test::testdata("smollm2") / "reference.json";
  if (!fs::exists(meta_path)) GTEST_SKIP() << "no SmolLM2 GGUF under models/ (run scripts/get-model.sh)";
  const std::string gguf = nlohmann::json::parse(std::ifstream(meta_path))["gguf"];
  const auto dir = uio::test::scratch_dir();
  const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> cases = {
      {{"--top_p", "0"}, {"--top_p", "(0, 1]"}},
      {{"--top_p", "1.5"}, {"--top_p"}},
      {{"--temperature", "-1"}, {"--temperature", ">= 0"}},
      {{"--temperature", "nan"}, {"--temperature"}},
      {{"--top_k", "-1"}, {"--top_k"}},
      {{"--max_new_tokens", "1000000000"}, {"--max_new_tokens", "1000000000", "8192"}},
      {{"--prompt_file", dir.string()}, {"--prompt_file", dir.string(), "directory"}},
  };
  for (const auto& [extra, needles] : cases) {
    std::vector<std::string> args = {"generate", "--model", gguf};
    if (extra[0] != "--prompt_file") args.insert(args.end(), {"--prompt", "Hello"});
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run_uio(args);
    EXPECT_EQ(r.exit_code, 1) << extra[1] << ": " << r.err;
    for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "missing '" << n << "' in: " << r.err;
  }
}
