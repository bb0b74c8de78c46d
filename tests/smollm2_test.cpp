// tests/smollm2_test.cpp — the real model: SmolLM2-135M-Instruct from its GGUF file (Q4_1, dequantised)
// against HF transformers loaded from the same file (tests/reference/smollm2.py): tokenizer ids,
// float32 logits on three prompts, and identical 32-token greedy continuations.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "model/generate.h"
#include "data/format/safetensors.h"
#include "model/weights.h"
#include "tests/test_util.h"

namespace {

struct SmolReference {
  std::string gguf;
  std::vector<std::string> prompts;
  std::unique_ptr<uio::format::SafetensorsFile> tensors;
};

SmolReference smol_reference() {
  auto dir = uio::test::testdata("smollm2");
  if (!std::filesystem::exists(dir / "reference.json")) return {};
  auto meta = nlohmann::json::parse(std::ifstream(dir / "reference.json"));
  return {meta["gguf"], meta["prompts"],
          std::make_unique<uio::format::SafetensorsFile>((dir / "reference.safetensors").string())};
}

}  // namespace

TEST(SmolLM2, TokenizerLogitsAndGreedyContinuationsMatchHuggingFace) {
  auto ref = smol_reference();
  if (!ref.tensors) GTEST_SKIP() << "no SmolLM2 GGUF under models/ (run scripts/get-model.sh)";
  auto tokenizer = uio::data::load_tokenizer(ref.gguf);
  auto loaded = uio::model::load_model(ref.gguf);
  EXPECT_EQ(loaded.config.num_layers, 30);
  EXPECT_EQ(loaded.config.num_kv_heads, 3);
  EXPECT_TRUE(loaded.config.tie_word_embeddings);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    auto want_ids = ref.tensors->tensor("ids" + std::to_string(i));
    auto ids32 = tokenizer->encode(ref.prompts[i]);
    std::vector<int64_t> ids(ids32.begin(), ids32.end());
    ASSERT_TRUE(torch::equal(torch::tensor(ids).unsqueeze(0), want_ids)) << "prompt " << i;

    auto logits = loaded.model->forward(want_ids);
    auto want = ref.tensors->tensor("logits" + std::to_string(i));
    const double err = (logits - want).abs().max().item<double>() / want.abs().max().item<double>();
    EXPECT_LE(err, 1e-4) << "prompt " << i;
    std::cout << "prompt " << i << " fp32 max rel err " << err << "\n";

    uio::model::SamplingOptions greedy;
    greedy.max_new_tokens = 32;
    auto continuation = uio::model::generate(loaded.model, ids, greedy);
    auto want_greedy = ref.tensors->tensor("greedy" + std::to_string(i))[0];
    EXPECT_TRUE(torch::equal(torch::tensor(continuation), want_greedy))
        << "prompt " << i << ": " << tokenizer->decode(std::vector<int32_t>(continuation.begin(), continuation.end()));
  }
}
