// tests/sdpa_test.cpp — on CUDA, the attention calls uio makes reach a fused SDPA kernel (flash,
// memory-efficient or cuDNN), not the math fallback. Skipped without a GPU.
#include <gtest/gtest.h>

#include "model/attention.h"

namespace {

// at::_fused_sdp_choice's codes (aten/src/ATen/native/transformers/sdp_utils_cpp.h).
const char* backend_name(int64_t code) {
  switch (code) {
    case 0: return "math";
    case 1: return "flash";
    case 2: return "efficient";
    case 3: return "cudnn";
    default: return "other";
  }
}

}  // namespace

TEST(Sdpa, CudaAttentionUsesFusedKernels) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const int64_t B = 2, H = 9, G = 3, T = 256, D = 64, P = 64;  // SmolLM2's head layout
  auto q = torch::randn({B, H, T, D}, opts), k = torch::randn({B, G, T, D}, opts), v = torch::randn({B, G, T, D}, opts);
  // Plain causal self-attention (no prefix, no cache): is_causal, grouped-query heads.
  auto causal = at::_fused_sdp_choice(q, k, v, std::nullopt, 0.0, true, std::nullopt, true);
  // With prefix entries: an explicit boolean mask over P + T keys (see default_attention_mask).
  auto mask = uio::model::default_attention_mask(T, P, 0, std::nullopt, torch::kCUDA);
  auto kp = torch::randn({B, G, P + T, D}, opts), vp = torch::randn({B, G, P + T, D}, opts);
  auto masked = at::_fused_sdp_choice(q, kp, vp, mask, 0.0, false, std::nullopt, true);
  auto masked_full_heads = at::_fused_sdp_choice(q, kp.repeat_interleave(H / G, 1), vp.repeat_interleave(H / G, 1),
                                                 mask, 0.0, false, std::nullopt, false);
  // The batched memory decoder: a per-row mask [K, 1, T, P + T] (row k sees its first t_k M entries).
  auto rows = torch::stack({mask.unsqueeze(0), mask.unsqueeze(0)});  // [2, 1, T, P + T]
  rows[0][0].narrow(1, 0, P).fill_(false);  // row 0: segment 0, no memory
  auto per_row = at::_fused_sdp_choice(q, kp, vp, rows, 0.0, false, std::nullopt, true);
  std::cout << "SDPA backends: causal+gqa " << backend_name(causal) << ", mask+gqa " << backend_name(masked)
            << ", mask+full heads " << backend_name(masked_full_heads) << ", per-row mask+gqa " << backend_name(per_row)
            << "\n";
  EXPECT_NE(per_row, 0) << "the batched decoder's per-row mask fell back to the math kernel";
  EXPECT_NE(causal, 0) << "causal GQA attention fell back to the math kernel";
  EXPECT_NE(masked, 0) << "masked GQA attention fell back to the math kernel";
}
