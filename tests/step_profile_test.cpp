// tests/step_profile_test.cpp — `uio bench train --profile`: kernel names sorted into kinds, and a
// step on a tiny random model whose phases (model/phase.h ranges) are all found, each taking time,
// and together no more than the step's wall time.
#include <gtest/gtest.h>

#include "data/document_source.h"
#include "data/phase.h"
#include "model/llama.h"
#include "model/memory.h"
#include "tests/test_util.h"
#include "trainer/step_profile.h"
#include "trainer/train.h"

using namespace uio;

TEST(StepProfile, KernelNamesFallIntoKinds) {
  // Names as CUPTI reports them on an H100/H200 (cuBLAS, cuBLASLt, cuDNN and PyTorch kernels).
  EXPECT_EQ(trainer::kernel_kind("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1"),
            "gemm");
  EXPECT_EQ(trainer::kernel_kind("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NNT"), "gemm");
  EXPECT_EQ(
      trainer::kernel_kind("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8>"),
      "gemm");
  EXPECT_EQ(trainer::kernel_kind("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64"),
            "attention");
  EXPECT_EQ(trainer::kernel_kind("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>"),
            "attention");
  EXPECT_EQ(trainer::kernel_kind("fmha_cutlassB_bf16_aligned_64x64_k64_sm80"), "attention");
  EXPECT_EQ(trainer::kernel_kind("Memcpy DtoD (Device -> Device)"), "copy");
  EXPECT_EQ(trainer::kernel_kind("Memset (Device)"), "copy");
  EXPECT_EQ(
      trainer::kernel_kind("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>"),
      "other");
}

TEST(StepProfile, EveryPhaseOfAStepIsFoundAndTheyFitInTheWallTime) {
  torch::manual_seed(uio::test::test_seed());
  const auto c = uio::test::tiny_llama_config();
  model::CausalLM base(c, torch::TensorOptions().dtype(torch::kFloat));
  model::MemoryOptions o;
  o.segment_len = 8, o.num_memory_tokens = 2;
  o.encoder_lora = {4, 8.0, 0.0, {"q_proj", "v_proj"}};
  o.transfer_lora = {4, 8.0, 0.0, {"k_proj", "v_proj"}};
  model::MemoryCompressor memory(c, o, model::eos_memory_init(base));
  data::RandomDocuments docs(48, 6 * 8, uio::test::test_seed());
  trainer::TrainConfig config;
  config.estimator.kind = optim::EstimatorKind::unbiased, config.estimator.window = 2, config.estimator.chunk = 2;
  config.steps = 2;
  trainer::Trainer trainer(config, base, memory, {}, docs, {});
  const auto p = trainer::profile_step([&] { trainer.step(); }, torch::kCPU);
  double phases = 0;
  for (const char* name : {"encode", "transfer", "decode", "decoder_backward", "encoder_backward", "optimizer"}) {
    ASSERT_TRUE(p.phase_host_ms.count(name)) << name << " is missing from\n" << trainer::format_profile(p);
    EXPECT_GT(p.phase_host_ms.at(name), 0.0) << name;
    ASSERT_TRUE(p.phase_host_ops.count(name)) << name;
    EXPECT_GT(p.phase_host_ops.at(name), 0) << name;
    phases += p.phase_host_ms.at(name);
  }
  EXPECT_LE(phases, p.wall_ms);
  EXPECT_EQ(p.kernels, 0) << "no device activities on the CPU";
}

// Host ops count the calls our code makes, not the ops they call in turn: matmul (which runs mm inside)
// and a linear (addmm, t, ...) count once each.
TEST(StepProfile, HostOpsCountOutermostCallsPerPhase) {
  torch::manual_seed(uio::test::test_seed());
  const auto a = torch::randn({7, 5}), b = torch::randn({5, 3}), w = torch::randn({4, 5}), bias = torch::randn({4});
  const int calls = 3 + static_cast<int>(torch::randint(4, {1}).item<int64_t>());
  const auto p = trainer::profile_step(
      [&] {
        data::Phase phase("uio::counted");
        for (int i = 0; i < calls; ++i) torch::matmul(a, b), torch::linear(a, w, bias);
      },
      torch::kCPU);
  EXPECT_EQ(p.phase_host_ops.at("counted"), 2 * calls) << trainer::format_profile(p);
}
