// model/loss.cpp — next-token targets and per-row cross-entropy.
#include "model/loss.h"

#include <algorithm>

namespace uio::model {

torch::Tensor next_token_targets(const torch::Tensor& ids) {
  TORCH_CHECK(ids.dim() == 1 && ids.size(0) > 0, "loss: expected document ids [n], got ", ids.sizes());
  auto targets = torch::full_like(ids, kIgnoreTarget);
  targets.narrow(0, 0, ids.size(0) - 1).copy_(ids.narrow(0, 1, ids.size(0) - 1));
  return targets;
}

namespace {

// Float32 for half types, float64 for a float64 model: the precision the softmax runs in.
torch::ScalarType softmax_dtype(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
}

// Rows of the flattened tokens handled at once: about 256 MB of float32 logits, at least 64 rows.
int64_t token_block(int64_t vocab) { return std::max<int64_t>(64, (int64_t{1} << 26) / std::max<int64_t>(vocab, 1)); }

// Per-token cross-entropy [N] of the LM head `weight` [V, C] over hidden states [N, C], one token block
// at a time: only a block's logits ever exist. The backward recomputes each block's logits and gives the
// hidden states their gradient (softmax - one-hot) W; the LM head is frozen, so it gets none.
struct LinearCrossEntropy : public torch::autograd::Function<LinearCrossEntropy> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& weight, const torch::Tensor& targets, int64_t block) {
    const int64_t N = hidden.size(0);
    const auto acc = softmax_dtype(hidden);
    auto valid = targets != kIgnoreTarget;
    auto safe = targets.masked_fill(valid.logical_not(), 0).unsqueeze(1);  // [N, 1]
    auto loss = torch::empty({N}, hidden.options().dtype(acc));
    auto lse = torch::empty({N}, hidden.options().dtype(acc));
    for (int64_t n0 = 0; n0 < N; n0 += block) {
      const int64_t n = std::min(block, N - n0);
      auto logits = torch::mm(hidden.narrow(0, n0, n), weight.t()).to(acc);  // [n, V]
      auto block_lse = logits.logsumexp(1);
      lse.narrow(0, n0, n).copy_(block_lse);
      loss.narrow(0, n0, n).copy_(block_lse - logits.gather(1, safe.narrow(0, n0, n)).squeeze(1));
    }
    loss.masked_fill_(valid.logical_not(), 0);
    ctx->save_for_backward({hidden, weight, safe, valid, lse});
    ctx->saved_data["block"] = block;
    return loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto saved = ctx->get_saved_variables();
    const auto &hidden = saved[0], &weight = saved[1], &safe = saved[2], &valid = saved[3], &lse = saved[4];
    const int64_t N = hidden.size(0), block = ctx->saved_data["block"].toInt();
    auto g = (grad[0].to(lse.scalar_type()) * valid).unsqueeze(1);  // [N, 1]: ignored tokens get none
    auto dhidden = torch::empty_like(hidden);
    for (int64_t n0 = 0; n0 < N; n0 += block) {
      const int64_t n = std::min(block, N - n0);
      auto logits = torch::mm(hidden.narrow(0, n0, n), weight.t()).to(lse.scalar_type());
      auto dlogits = (logits - lse.narrow(0, n0, n).unsqueeze(1)).exp_();  // softmax [n, V]
      dlogits.scatter_add_(1, safe.narrow(0, n0, n), torch::full({n, 1}, -1.0, dlogits.options()));
      dlogits.mul_(g.narrow(0, n0, n));
      dhidden.narrow(0, n0, n).copy_(torch::mm(dlogits.to(hidden.scalar_type()), weight));
    }
    return {dhidden, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor linear_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight,
                                   const torch::Tensor& targets, int64_t block) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1) && targets.dim() == 1 &&
                  targets.size(0) == hidden.size(0),
              "loss: hidden [N, C], weight [V, C] and targets [N] disagree: ", hidden.sizes(), ", ", weight.sizes(),
              ", ", targets.sizes());
  TORCH_CHECK(!weight.requires_grad(), "loss: the chunked LM head is for a frozen output weight");
  return LinearCrossEntropy::apply(hidden, weight, targets, block > 0 ? block : token_block(weight.size(0)));
}

torch::Tensor row_cross_entropy(CausalLM& base, const torch::Tensor& hidden, const torch::Tensor& targets) {
  TORCH_CHECK(
      hidden.dim() == 3 && targets.dim() == 2 && hidden.size(0) == targets.size(0) && hidden.size(1) == targets.size(1),
      "loss: hidden [K, T, C] and targets [K, T] disagree: ", hidden.sizes(), " vs ", targets.sizes());
  const int64_t K = hidden.size(0), T = hidden.size(1);
  const auto weight = base->output_weight();
  if (base->kernels() == Kernels::fused && !weight.requires_grad()) {
    auto flat = hidden.reshape({K * T, hidden.size(2)});
    return linear_cross_entropy(flat, weight, targets.reshape({K * T})).view({K, T}).sum(1);  // [K]
  }
  auto logits = base->logits(hidden);  // [K, T, V]
  auto flat = logits.reshape({K * T, -1});
  if (flat.scalar_type() != torch::kDouble) flat = flat.to(torch::kFloat);
  namespace F = torch::nn::functional;
  auto ce = F::cross_entropy(flat, targets.reshape({K * T}),
                             F::CrossEntropyFuncOptions().reduction(torch::kNone).ignore_index(kIgnoreTarget));
  return ce.view({K, T}).sum(1);  // [K]
}

}  // namespace uio::model
