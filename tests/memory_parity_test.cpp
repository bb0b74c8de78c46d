// tests/memory_parity_test.cpp — the memory model against the independent Python reference written on
// HF transformers (tests/reference/uio_memory.py): per-layer memory hidden states, keys and values,
// and decoder logits of every segment and the residual tail, on tiny Llama / Qwen2 models and on
// SmolLM2, with plain and linearly scaled memory positions.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/memory.h"
#include "model/memory_pass.h"
#include "model/memory_reader.h"
#include "data/format/safetensors.h"
#include "model/weights.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace uio::model;

namespace {

struct Case {
  nlohmann::json config;
  LoadedModel base;
  MemoryCompressor memory{nullptr};
  std::unique_ptr<uio::format::SafetensorsFile> ref;
};

Case load_case(const std::string& name, const std::string& memory_rope, const torch::Device& device,
               torch::ScalarType dtype) {
  const auto dir = uio::test::testdata("uio_memory/" + name);
  Case c;
  c.config = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  // Tiny cases ship their HF directory; the SmolLM2 case names the GGUF it used.
  const auto model =
      fs::exists(dir / "model" / "config.json") ? (dir / "model").string() : c.config["model"].get<std::string>();
  LoadOptions load;
  load.device = device;
  load.dtype = dtype;  // the base model's compute dtype; adapters stay fp32 (cast per use)
  c.base = load_model(model, load);
  MemoryOptions o;
  o.segment_len = c.config["l"], o.num_memory_tokens = c.config["M"];
  o.encoder_lora = {c.config["encoder"]["r"], c.config["encoder"]["alpha"], 0.0,
                    c.config["encoder"]["targets"].get<std::vector<std::string>>()};
  o.transfer_lora = {c.config["transfer"]["r"], c.config["transfer"]["alpha"], 0.0,
                     c.config["transfer"]["targets"].get<std::vector<std::string>>()};
  o.memory_rope = parse_rope_kind(memory_rope);
  o.memory_rope_factor = c.config.value("memory_rope_linear_factor", 1.0);
  c.memory = MemoryCompressor(c.base.config, o, torch::zeros({c.base.config.hidden_size}, device));
  uio::format::SafetensorsFile weights((dir / "uio_weights.safetensors").string());
  torch::NoGradGuard no_grad;
  for (auto& item : c.memory->named_parameters()) {
    if (!weights.contains(item.key())) throw std::runtime_error("reference lacks " + item.key());
    item.value().copy_(weights.tensor(item.key()));
  }
  c.ref = std::make_unique<uio::format::SafetensorsFile>((dir / "reference.safetensors").string());
  return c;
}

double rel(const torch::Tensor& a, const torch::Tensor& b) {
  auto a64 = a.to(torch::kCPU, torch::kDouble), b64 = b.to(torch::kCPU, torch::kDouble);
  return (a64 - b64).abs().max().item<double>() / b64.abs().max().item<double>();
}

// fp32 on CPU and CUDA at `tol`; bf16 on CUDA at a stated 1e-1: 8-bit mantissas through three passes
// (encoder, transfer head, decoder) of random weights; measured 0.025-0.061 on the H100 (docs/gpu.md).
void check_case(const std::string& name, const std::string& memory_rope, const std::string& logits_key, double fp32_tol,
                bool bf16 = true) {
  std::vector<std::pair<torch::Device, torch::ScalarType>> runs = {{torch::kCPU, torch::kFloat}};
  if (torch::cuda::is_available()) runs.emplace_back(torch::kCUDA, torch::kFloat);
  if (torch::cuda::is_available() && bf16) runs.emplace_back(torch::kCUDA, torch::kBFloat16);
  if (std::getenv("UIO_TEST_CPU_BF16")) runs.emplace_back(torch::kCPU, torch::kBFloat16);  // slow; by hand
  for (const auto& [device, dtype] : runs) {
    const double tol = dtype == torch::kFloat ? fp32_tol : 1e-1;
    auto c = load_case(name, memory_rope, device, dtype);
    torch::NoGradGuard no_grad;
    const int64_t l = c.config["l"], T = c.config["T"];
    auto ids = c.ref->tensor("ids").to(device);
    auto segments = ids.narrow(0, 0, T * l).view({T, l});
    // Per-layer memory states, keys and values of every segment (one batched call).
    auto hidden = c.memory->encode(c.base.model, segments);
    auto [keys, values] = c.memory->transfer(c.base.model, hidden);
    double worst = 0;
    for (int64_t s = 0; s < T; ++s)
      for (int64_t i = 0; i < c.base.config.num_layers; ++i) {
        const auto suffix = std::to_string(s) + "." + std::to_string(i);
        worst = std::max({worst, rel(hidden[i][s], c.ref->tensor("h_mem." + suffix)),
                          rel(keys[i][s], c.ref->tensor("k_mem." + suffix)),
                          rel(values[i][s], c.ref->tensor("v_mem." + suffix))});
      }
    EXPECT_LE(worst, tol) << name << " memory states on " << device;
    // Decoder logits of each segment and of the residual, through the document forward (chunks of 2).
    auto logits = document_logits(c.base.model, c.memory, ids, 2);
    double worst_logits = 0;
    int64_t start = 0;
    for (int64_t t = 0; t <= T; ++t) {
      auto want = c.ref->tensor(logits_key + "." + std::to_string(t));
      const double e = rel(logits.narrow(0, start, want.size(0)), want);
      if (std::getenv("UIO_TEST_CPU_BF16")) std::cout << "  segment " << t << " logits rel err " << e << "\n";
      worst_logits = std::max(worst_logits, e);
      start += want.size(0);
    }
    EXPECT_EQ(start, ids.size(0));
    EXPECT_LE(worst_logits, tol) << name << " " << memory_rope << " logits on " << device;
    std::cout << name << " " << memory_rope << " " << device << " " << c10::toString(dtype) << ": memory max rel err "
              << worst << ", logits " << worst_logits << "\n";
  }
}

}  // namespace

TEST(MemoryParity, TinyLlamaMatchesTheHfReference) {
  check_case("llama_l16_m4", "none", "logits", 1e-5);
  check_case("llama_l16_m8", "none", "logits", 1e-5);
}

TEST(MemoryParity, LinearlyScaledMemoryPositionsMatchTheHfReference) {
  check_case("llama_l16_m4", "linear", "logits_linear", 1e-5);
}

TEST(MemoryParity, Qwen2WithBiasesMatchesTheHfReference) { check_case("qwen2_l16_m4", "none", "logits", 1e-5); }

TEST(MemoryParity, SmolLM2MatchesTheHfReference) {
  if (!fs::exists(uio::test::testdata("uio_memory/smollm2_l64_m8/config.json")))
    GTEST_SKIP() << "no SmolLM2 GGUF under models/ (scripts/get-model.sh)";
  // fp32 only: this case is ill-conditioned in bf16. HF transformers itself, run in bf16, lands 0.41 /
  // 0.43 (relative) away from its fp32 logits on segments 1 and 2; uio's bf16 lands 0.46 / 0.37 away.
  check_case("smollm2_l64_m8", "none", "logits", 1e-4, /*bf16=*/false);
}
