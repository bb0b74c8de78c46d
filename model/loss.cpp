// model/loss.cpp — next-token targets and per-row cross-entropy.
#include "model/loss.h"

namespace uio::model {

torch::Tensor next_token_targets(const torch::Tensor& ids) {
  TORCH_CHECK(ids.dim() == 1 && ids.size(0) > 0, "loss: expected document ids [n], got ", ids.sizes());
  auto targets = torch::full_like(ids, kIgnoreTarget);
  targets.narrow(0, 0, ids.size(0) - 1).copy_(ids.narrow(0, 1, ids.size(0) - 1));
  return targets;
}

torch::Tensor row_cross_entropy(CausalLM& base, const torch::Tensor& hidden, const torch::Tensor& targets) {
  TORCH_CHECK(
      hidden.dim() == 3 && targets.dim() == 2 && hidden.size(0) == targets.size(0) && hidden.size(1) == targets.size(1),
      "loss: hidden [K, T, C] and targets [K, T] disagree: ", hidden.sizes(), " vs ", targets.sizes());
  const int64_t K = hidden.size(0), T = hidden.size(1);
  auto logits = base->logits(hidden);  // [K, T, V]
  auto flat = logits.reshape({K * T, -1});
  if (flat.scalar_type() != torch::kDouble) flat = flat.to(torch::kFloat);
  namespace F = torch::nn::functional;
  auto ce = F::cross_entropy(flat, targets.reshape({K * T}),
                             F::CrossEntropyFuncOptions().reduction(torch::kNone).ignore_index(kIgnoreTarget));
  return ce.view({K, T}).sum(1);  // [K]
}

}  // namespace uio::model
