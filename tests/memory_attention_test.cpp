// tests/memory_attention_test.cpp — the fused kernels (model/attention.h, Kernels::fused) against the
// reference formulas in float64: shared-prefix attention (outputs, gradients and routed per-row memory
// gradients) against per-row copies with a boolean mask, the chunked LM head + cross-entropy, and whole
// decoder passes and training steps with each kernel set.
#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "model/loss.h"
#include "model/memory.h"
#include "model/memory_attention.h"
#include "model/memory_pass.h"
#include "model/rope.h"
#include "optim/estimator.h"
#include "tests/test_util.h"

using namespace uio::model;

namespace {

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

struct Inputs {
  torch::Tensor q, k, v, mk, mv, weights, own_mask;
  std::vector<int64_t> visible;
};

// K rows of T tokens, H = 4 query heads over G = 2 KV heads, P memory entries; every value random.
Inputs make_inputs(const std::vector<int64_t>& visible, int64_t P, bool window, torch::Device device = torch::kCPU,
                   torch::ScalarType dtype = torch::kDouble) {
  const int64_t K = static_cast<int64_t>(visible.size()), H = 4, G = 2, T = 6, D = 8;
  auto o = torch::TensorOptions().dtype(dtype).device(device);
  Inputs in;
  in.q = torch::randn({K, H, T, D}, o), in.k = torch::randn({K, G, T, D}, o), in.v = torch::randn({K, G, T, D}, o);
  in.mk = torch::randn({G, P, D}, o), in.mv = torch::randn({G, P, D}, o);
  in.visible = visible;
  // Routing weights: random, some exactly zero, none where a row does not see the entry.
  in.weights = torch::rand({K, P}, torch::kDouble) * (torch::rand({K, P}, torch::kDouble) > 0.4).to(torch::kDouble);
  for (int64_t b = 0; b < K; ++b) in.weights[b].narrow(0, visible[b], P - visible[b]).zero_();
  if (window) {  // a sliding window of 3 over the row's own tokens (Mistral)
    auto i = torch::arange(T).unsqueeze(1), j = torch::arange(T).unsqueeze(0);
    in.own_mask = ((j <= i) & (i - j < 3)).to(device);
  }
  return in;
}

// The reference: each row reads its own copy of its visible memory through SDPA with a boolean mask.
torch::Tensor per_row_attention(const Inputs& in, const torch::Tensor& q, const torch::Tensor& k,
                                const torch::Tensor& v, const std::vector<torch::Tensor>& row_mk,
                                const std::vector<torch::Tensor>& row_mv) {
  std::vector<torch::Tensor> rows;
  const int64_t T = q.size(2);
  auto own = in.own_mask.defined() ? in.own_mask : torch::ones({T, T}, torch::kBool).to(q.device()).tril();
  for (size_t b = 0; b < in.visible.size(); ++b) {
    const int64_t n = in.visible[b];
    auto keys = torch::cat({row_mk[b].narrow(1, 0, n), k[b]}, 1).unsqueeze(0);  // [1, G, n + T, D]
    auto values = torch::cat({row_mv[b].narrow(1, 0, n), v[b]}, 1).unsqueeze(0);
    auto mask = torch::cat({torch::ones({T, n}, own.options()), own}, 1);
    rows.push_back(
        at::scaled_dot_product_attention(q[b].unsqueeze(0), keys, values, mask, 0.0, false, std::nullopt, true));
  }
  return torch::cat(rows);  // [K, H, T, D]
}

// Rotation of the memory keys: none (given rotated), one table for all rows, or a table per row.
enum class Tables { none, shared, per_row };

void check_against_per_row(const std::vector<int64_t>& visible, int64_t P, bool window, Tables tables) {
  auto in = make_inputs(visible, P, window);
  const int64_t K = static_cast<int64_t>(visible.size()), D = in.mk.size(2);
  torch::Tensor cos, sin;  // random angles per row and entry, as RoPE's tables are laid out ([.., D/2] twice)
  if (tables != Tables::none) {
    auto angles = torch::rand({tables == Tables::per_row ? K : 1, P, D / 2}) * 6.0;
    cos = torch::cat({angles.cos(), angles.cos()}, -1), sin = torch::cat({angles.sin(), angles.sin()}, -1);
  }
  auto q = in.q.clone().requires_grad_(), k = in.k.clone().requires_grad_(), v = in.v.clone().requires_grad_();
  auto mk = in.mk.clone().requires_grad_(), mv = in.mv.clone().requires_grad_();
  auto rk = in.mk.clone().requires_grad_(), rv = in.mv.clone().requires_grad_();
  SharedMemoryPrefix m{mk, mv, visible, rk, rv, route_entries(in.weights, visible, torch::kCPU), cos, sin};
  auto out = shared_prefix_attention(q, k, v, m, in.own_mask);
  auto upstream = torch::randn_like(out);
  (out * upstream).sum().backward();

  // Reference with one leaf copy of the memory per row, so each row's gradient is seen on its own.
  auto q2 = in.q.clone().requires_grad_(), k2 = in.k.clone().requires_grad_(), v2 = in.v.clone().requires_grad_();
  std::vector<torch::Tensor> row_mk, row_mv;
  for (int64_t b = 0; b < K; ++b)
    row_mk.push_back(in.mk.clone().requires_grad_()), row_mv.push_back(in.mv.clone().requires_grad_());
  std::vector<torch::Tensor> rotated;  // each row's keys under its own table (the reference's per-row copy)
  for (int64_t b = 0; b < K; ++b)
    rotated.push_back(tables == Tables::none
                          ? row_mk[b]
                          : apply_rope(row_mk[b].unsqueeze(0), cos[cos.size(0) == 1 ? 0 : b].unsqueeze(0),
                                       sin[sin.size(0) == 1 ? 0 : b].unsqueeze(0))[0]);
  auto ref = per_row_attention(in, q2, k2, v2, rotated, row_mv);
  (ref * upstream).sum().backward();

  const std::string where = "visible " + c10::Join(",", visible) + (window ? ", window" : "") + ", tables " +
                            std::to_string(static_cast<int>(tables));
  EXPECT_LT(max_diff(out, ref), 1e-12) << where;
  EXPECT_LT(max_diff(q.grad(), q2.grad()), 1e-11) << where;
  EXPECT_LT(max_diff(k.grad(), k2.grad()), 1e-11) << where;
  EXPECT_LT(max_diff(v.grad(), v2.grad()), 1e-11) << where;
  auto sum_k = torch::zeros_like(in.mk), sum_v = torch::zeros_like(in.mv);
  auto route_k = torch::zeros_like(in.mk), route_v = torch::zeros_like(in.mv);
  for (int64_t b = 0; b < K; ++b) {
    sum_k += row_mk[b].grad(), sum_v += row_mv[b].grad();
    auto w = in.weights[b].view({1, P, 1});
    route_k += row_mk[b].grad() * w, route_v += row_mv[b].grad() * w;
  }
  EXPECT_LT(max_diff(mk.grad(), sum_k), 1e-11) << where;
  EXPECT_LT(max_diff(mv.grad(), sum_v), 1e-11) << where;
  EXPECT_LT(max_diff(rk.grad(), route_k), 1e-11) << where;
  EXPECT_LT(max_diff(rv.grad(), route_v), 1e-11) << where;
  EXPECT_GT(route_k.abs().max().item<double>(), 1e-3) << where;  // the routed gradient is not trivially zero
}

}  // namespace

TEST(SharedPrefixAttention, EqualsPerRowCopiesWithAMaskInValueGradientsAndRoutedGradients) {
  torch::manual_seed(uio::test::test_seed());
  for (auto tables : {Tables::none, Tables::shared, Tables::per_row}) {
    check_against_per_row({3, 5, 7, 9}, 9, false, tables);  // shared part [0, 3), earlier rows' part [3, 9)
    check_against_per_row({3, 5, 7, 9}, 11, true, tables);  // entries past every row's view; a sliding window
    check_against_per_row({0, 2, 4}, 4, false, tables);  // a row that sees no memory: no shared part
    check_against_per_row({5, 5, 5}, 7, false, tables);  // every row sees the same: no per-row part, causal
    check_against_per_row({6}, 6, true, tables);  // one row
  }
}

TEST(SharedPrefixAttention, RefusesMismatchedShapesNamingThem) {
  torch::manual_seed(uio::test::test_seed());
  auto in = make_inputs({2, 3}, 4, false);
  SharedMemoryPrefix m{in.mk, in.mv, {2}, {}, {}, {}};
  EXPECT_THROW(shared_prefix_attention(in.q, in.k, in.v, m, {}), c10::Error);  // 1 count for 2 rows
  m.visible = {2, 5};
  EXPECT_THROW(shared_prefix_attention(in.q, in.k, in.v, m, {}), c10::Error);  // 5 > P = 4
  m.visible = {2, 3};
  EXPECT_THROW(route_entries(in.weights.to(torch::kFloat), m.visible, torch::kCPU), c10::Error);  // not float64
  m.route_k = in.mk, m.route_v = in.mv, m.route = route_entries(in.weights.narrow(0, 0, 1), {2}, torch::kCPU);
  EXPECT_THROW(shared_prefix_attention(in.q, in.k, in.v, m, {}), c10::Error);  // entries for 1 row of 2
}

TEST(LinearCrossEntropy, EqualsTheFullLogitsLossAndGradientForEveryBlockSize) {
  torch::manual_seed(uio::test::test_seed());
  const int64_t N = 37, C = 12, V = 29;
  auto hidden = torch::randn({N, C}, torch::kDouble);
  auto weight = torch::randn({V, C}, torch::kDouble);
  auto targets = torch::randint(V, {N}, torch::kInt64);
  targets.narrow(0, 5, 4).fill_(kIgnoreTarget);
  auto upstream = torch::randn({N}, torch::kDouble);
  auto h_ref = hidden.clone().requires_grad_();
  namespace F = torch::nn::functional;
  auto ref = F::cross_entropy(torch::mm(h_ref, weight.t()), targets,
                              F::CrossEntropyFuncOptions().reduction(torch::kNone).ignore_index(kIgnoreTarget));
  (ref * upstream).sum().backward();
  for (int64_t block : {int64_t{1}, int64_t{5}, int64_t{16}, N, int64_t{0}}) {
    auto h = hidden.clone().requires_grad_();
    auto loss = linear_cross_entropy(h, weight, targets, block);
    (loss * upstream).sum().backward();
    EXPECT_LT(max_diff(loss, ref), 1e-12) << "block " << block;
    EXPECT_LT(max_diff(h.grad(), h_ref.grad()), 1e-12) << "block " << block;
    EXPECT_EQ(h.grad().narrow(0, 5, 4).abs().max().item<double>(), 0.0);  // ignored tokens get nothing
  }
  EXPECT_THROW(linear_cross_entropy(hidden, weight.clone().requires_grad_(), targets), c10::Error);
}

namespace {

struct TinyUio {
  CausalLM base{nullptr};
  MemoryCompressor memory{nullptr};
};

// 2 layers, GQA, l = 6, M = 2, float64, random weights and adapters; optionally Mistral's sliding window.
TinyUio make_tiny_uio(uint64_t seed, int64_t sink, std::optional<int64_t> window, RopeKind rope) {
  torch::manual_seed(seed);
  TinyUio t;
  ModelConfig c;
  c.vocab_size = 40, c.hidden_size = 16, c.intermediate_size = 24, c.num_layers = 2, c.num_heads = 4;
  c.num_kv_heads = 2, c.head_dim = 8, c.max_position = 16, c.rope_theta = 1000.0, c.sliding_window = window;
  t.base = CausalLM(c, torch::TensorOptions().dtype(torch::kDouble));
  torch::NoGradGuard no_grad;
  for (auto& p : t.base->parameters()) p.normal_(0, 0.3), p.requires_grad_(false);
  MemoryOptions o;
  o.segment_len = 6, o.num_memory_tokens = 2, o.sink_tokens = sink, o.memory_rope = rope;
  o.encoder_lora = {4, 8.0, 0.0, {"q_proj", "v_proj"}};
  o.transfer_lora = {3, 5.0, 0.0, {"k_proj", "v_proj"}};
  t.memory = MemoryCompressor(c, o, torch::randn({c.hidden_size}));
  t.memory->to(torch::kDouble);
  for (auto& p : t.memory->parameters()) p.normal_(0, 0.3);
  return t;
}

std::vector<torch::Tensor> gradients(TinyUio& t) {
  std::vector<torch::Tensor> g;
  for (auto& p : t.memory->parameters()) {
    g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    p.mutable_grad() = torch::Tensor();
  }
  return g;
}

}  // namespace

TEST(FusedKernels, DecoderLossAndEveryEstimatorsGradientsEqualTheReferenceKernels) {
  using namespace uio::optim;
  // Rows past max_position = 16 under dynamic NTK rotate the memory each with its own frequencies (per-row
  // tables); earlier chunks and the fixed-frequency RoPE share one table.
  for (auto [sink, window, rope] : {std::tuple{int64_t{0}, std::optional<int64_t>{}, RopeKind::dynamic},
                                    std::tuple{int64_t{2}, std::optional<int64_t>{4}, RopeKind::linear},
                                    std::tuple{int64_t{1}, std::optional<int64_t>{}, RopeKind::yarn}}) {
    auto t = make_tiny_uio(uio::test::test_seed(), sink, window, rope);
    const int64_t segments = 7;
    auto ids = torch::randint(40, {segments * 6}, torch::kInt64);
    const std::string where = "sink " + std::to_string(sink) + ", " + rope_kind_name(rope);
    for (int64_t chunk : {int64_t{1}, int64_t{3}}) {
      t.base->set_kernels(Kernels::fused);
      auto fused_logits = document_logits(t.base, t.memory, ids, chunk);
      t.base->set_kernels(Kernels::reference);
      auto ref_logits = document_logits(t.base, t.memory, ids, chunk);
      EXPECT_LT(max_diff(fused_logits, ref_logits), 1e-11) << where << ", chunk " << chunk;

      for (auto kind : {EstimatorKind::full, EstimatorKind::tbptt, EstimatorKind::unbiased}) {
        EstimatorOptions eo;
        eo.kind = kind, eo.window = 2, eo.chunk = chunk, eo.seed = 5;
        std::vector<std::vector<torch::Tensor>> g;
        std::vector<double> loss;
        for (auto kernels : {Kernels::fused, Kernels::reference}) {
          t.base->set_kernels(kernels);
          GradientEstimator estimator(eo);  // the same seed: the same reservoir draws
          loss.push_back(estimator.backward(t.base, t.memory, ids, 0.05).loss());
          g.push_back(gradients(t));
        }
        EXPECT_NEAR(loss[0], loss[1], 1e-10) << where;
        double diff = 0, norm = 0;
        for (size_t i = 0; i < g[0].size(); ++i)
          diff += (g[0][i] - g[1][i]).pow(2).sum().item<double>(), norm += g[1][i].pow(2).sum().item<double>();
        EXPECT_GT(norm, 0.0);
        EXPECT_LT(std::sqrt(diff / norm), 1e-10)
            << where << ", chunk " << chunk << ", estimator " << estimator_kind_name(kind);
      }
    }
  }
}

TEST(FusedKernels, OnCudaSharedPrefixAttentionMatchesTheReferenceInFloat32AndBfloat16) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(uio::test::test_seed());
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (auto visible :
         {std::vector<int64_t>{40, 72, 104, 136}, std::vector<int64_t>{0, 32, 64}, std::vector<int64_t>{96, 96}}) {
      auto in = make_inputs(visible, 140, false, torch::kCUDA, dtype);
      const int64_t K = static_cast<int64_t>(visible.size()), P = 140;
      auto leaf = [](const torch::Tensor& t) { return t.clone().requires_grad_(); };
      auto q = leaf(in.q), k = leaf(in.k), v = leaf(in.v), mk = leaf(in.mk), mv = leaf(in.mv);
      auto rk = leaf(in.mk), rv = leaf(in.mv);
      auto out = shared_prefix_attention(
          q, k, v, SharedMemoryPrefix{mk, mv, visible, rk, rv, route_entries(in.weights, visible, torch::kCUDA)}, {});
      auto upstream = torch::randn_like(out);
      (out * upstream).sum().backward();
      // Reference in float64 on the CPU, per-row copies.
      Inputs cpu = in;
      for (auto* t : {&cpu.q, &cpu.k, &cpu.v, &cpu.mk, &cpu.mv}) *t = t->to(torch::kCPU, torch::kDouble);
      auto q2 = leaf(cpu.q), k2 = leaf(cpu.k), v2 = leaf(cpu.v);
      std::vector<torch::Tensor> row_mk, row_mv;
      for (int64_t b = 0; b < K; ++b) row_mk.push_back(leaf(cpu.mk)), row_mv.push_back(leaf(cpu.mv));
      auto ref = per_row_attention(cpu, q2, k2, v2, row_mk, row_mv);
      (ref * upstream.to(torch::kCPU, torch::kDouble)).sum().backward();
      auto route_k = torch::zeros_like(cpu.mk);
      for (int64_t b = 0; b < K; ++b) route_k += row_mk[b].grad() * in.weights[b].view({1, P, 1});
      const double tol = dtype == torch::kFloat ? 2e-4 : 5e-2;  // relative to each tensor's largest entry
      auto rel = [](const torch::Tensor& a, const torch::Tensor& b) {
        return max_diff(a.to(torch::kCPU, torch::kDouble), b) / b.abs().max().item<double>();
      };
      const std::string where = std::string(c10::toString(dtype)) + ", visible " + c10::Join(",", visible);
      EXPECT_LT(rel(out, ref), tol) << where;
      EXPECT_LT(rel(q.grad(), q2.grad()), tol) << where;
      EXPECT_LT(rel(k.grad(), k2.grad()), tol) << where;
      EXPECT_LT(rel(rk.grad(), route_k), tol) << where;
    }
  }
}

TEST(FusedKernels, OnCudaATrainingStepsGradientsEqualTheReferenceKernelsInFloat32) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  using namespace uio::optim;
  auto t = make_tiny_uio(uio::test::test_seed(), 1, std::nullopt, RopeKind::linear);
  t.base->to(torch::kCUDA, torch::kFloat), t.memory->to(torch::kCUDA, torch::kFloat);
  auto ids = torch::randint(40, {7 * 6}, torch::kInt64).to(torch::kCUDA);
  for (auto kind : {EstimatorKind::full, EstimatorKind::unbiased}) {
    EstimatorOptions eo;
    eo.kind = kind, eo.window = 2, eo.chunk = 3, eo.seed = 5;
    std::vector<std::vector<torch::Tensor>> g;
    for (auto kernels : {Kernels::fused, Kernels::reference}) {
      t.base->set_kernels(kernels);
      GradientEstimator estimator(eo);
      estimator.backward(t.base, t.memory, ids, 0.05);
      g.push_back(gradients(t));
    }
    double diff = 0, norm = 0;
    for (size_t i = 0; i < g[0].size(); ++i)
      diff += (g[0][i] - g[1][i]).to(torch::kDouble).pow(2).sum().item<double>(),
          norm += g[1][i].to(torch::kDouble).pow(2).sum().item<double>();
    EXPECT_LT(std::sqrt(diff / norm), 1e-4) << estimator_kind_name(kind);
  }
}
