// tests/recompute_test.cpp — activation checkpointing (model/recompute.h): the recomputed piece gives
// the gradients of the plain forward (float64), runs a second time in the backward pass, repeats its
// dropout draws, and the decoder of a Llama model with a memory prefix gives the same gradients with
// every layer recomputed.
#include <gtest/gtest.h>

#include "model/llama.h"
#include "model/recompute.h"
#include "tests/test_util.h"

using namespace uio::model;

TEST(Recompute, GradientsEqualThePlainForwardAndThePieceRunsAgainInBackward) {
  torch::manual_seed(uio::test::test_seed());
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  auto w = torch::randn({6, 5}, opts).requires_grad_();  // a parameter used inside the piece
  auto x = torch::randn({4, 6}, opts).requires_grad_();
  auto y = torch::randn({4, 5}, opts).requires_grad_();
  auto c = torch::randn({4, 5}, opts);  // no gradient wanted
  int calls = 0;
  RecomputeFn fn = [&](const std::vector<torch::Tensor>& in) {
    ++calls;
    auto h = torch::dropout(torch::tanh(in[0].matmul(w)), 0.3, true) * in[1] + in[2];
    return std::vector<torch::Tensor>{h.sin(), h.pow(2).sum(-1)};
  };
  auto loss_of = [](const std::vector<torch::Tensor>& out) { return out[0].sum() * 0.7 + out[1].mean(); };

  torch::manual_seed(5);
  auto plain = loss_of(fn({x, y, c}));
  plain.backward();
  auto gw = w.grad().clone(), gx = x.grad().clone(), gy = y.grad().clone();
  w.mutable_grad() = x.mutable_grad() = y.mutable_grad() = torch::Tensor();

  calls = 0;
  torch::manual_seed(5);
  auto out = recompute_in_backward(fn, {x, y, c});
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(out[0].grad_fn()->name().find("Recompute") == std::string::npos) << out[0].grad_fn()->name();
  torch::manual_seed(123);  // the generator moves on before backward; the replay must not notice
  auto checkpointed = loss_of(out);
  EXPECT_DOUBLE_EQ(checkpointed.item<double>(), plain.item<double>());
  checkpointed.backward();
  EXPECT_EQ(calls, 2) << "the piece runs again inside the backward pass";
  EXPECT_TRUE(torch::allclose(w.grad(), gw, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(x.grad(), gx, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(y.grad(), gy, 1e-12, 1e-12));
  EXPECT_GT(gw.abs().sum().item<double>(), 0.0);
}

TEST(Recompute, WithoutGradModeOrGradientsItIsThePlainForward) {
  torch::manual_seed(uio::test::test_seed());
  auto x = torch::randn({3, 3});
  int calls = 0;
  RecomputeFn fn = [&](const std::vector<torch::Tensor>& in) {
    ++calls;
    return std::vector<torch::Tensor>{in[0].exp()};
  };
  auto out = recompute_in_backward(fn, {x});
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(out[0].requires_grad());
  EXPECT_TRUE(torch::equal(out[0], x.exp()));
}

// A decoder pass with a memory prefix that carries gradient: per-layer recomputation changes nothing
// in the values or the gradients of the prefix.
TEST(Recompute, DecoderLayersWithAPrefixGiveTheSameGradients) {
  torch::manual_seed(uio::test::test_seed());
  ModelConfig c;
  c.vocab_size = 40, c.hidden_size = 16, c.intermediate_size = 24, c.num_layers = 3, c.num_heads = 4;
  c.num_kv_heads = 2, c.head_dim = 4, c.max_position = 64, c.rope_theta = 1000.0;
  CausalLM base(c, torch::TensorOptions().dtype(torch::kDouble));
  for (auto& p : base->parameters()) p.requires_grad_(false);
  const int64_t B = 2, T = 5, P = 6;
  auto ids = torch::randint(40, {B, T}, torch::kInt64);
  std::vector<torch::Tensor> ks, vs;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    ks.push_back(torch::randn({B, 2, P, 4}, torch::kDouble).requires_grad_());
    vs.push_back(torch::randn({B, 2, P, 4}, torch::kDouble).requires_grad_());
  }
  auto run = [&](bool recompute) {
    for (auto* list : {&ks, &vs})
      for (auto& t : *list) t.mutable_grad() = torch::Tensor();
    std::vector<AttentionPrefix> prefix;
    auto [pc, ps] = base->model->rope().cos_sin(torch::arange(P));
    for (int64_t i = 0; i < c.num_layers; ++i) prefix.push_back({ks[i], vs[i], pc, ps});
    ForwardContext ctx;
    ctx.prefix = &prefix;
    ctx.positions = torch::arange(P, P + T);
    ctx.recompute_layers = recompute;
    auto logits = base->forward(ids, ctx);
    logits.log_softmax(-1).select(-1, 3).sum().backward();
    std::vector<torch::Tensor> grads;
    for (auto* list : {&ks, &vs})
      for (auto& t : *list) grads.push_back(t.grad().clone());
    return std::make_pair(logits.detach(), grads);
  };
  auto [plain, plain_grads] = run(false);
  auto [recomputed, recomputed_grads] = run(true);
  EXPECT_TRUE(torch::allclose(recomputed, plain, 1e-12, 1e-12));
  for (size_t i = 0; i < plain_grads.size(); ++i) {
    EXPECT_GT(plain_grads[i].abs().sum().item<double>(), 0.0) << i;
    EXPECT_TRUE(torch::allclose(recomputed_grads[i], plain_grads[i], 1e-12, 1e-12)) << i;
  }
}
