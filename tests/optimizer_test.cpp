// tests/optimizer_test.cpp — AdamW against PyTorch's torch.optim.AdamW with clip_grad_norm_
// (tests/reference/adamw.py), the gradient norm against a float64 recomputation, clipping, decoupled
// decay per group, checkpoint state (bit-identical resume, errors naming the key), the undo point, and
// the schedule; the fused (multi-tensor) update against the per-parameter reference in float64.
#include <algorithm>
#include <cmath>
#include <functional>
#include <iostream>
#include <limits>

#include <gtest/gtest.h>

#include "data/format/safetensors.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "tests/test_util.h"

using namespace uio::optim;
using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;

namespace {

torch::Tensor param(std::vector<int64_t> shape) { return torch::randn(shape).requires_grad_(); }

// LoRA-like matrices and a <mem>-like vector, fresh random values from the test's seed.
NamedParams make_params() {
  torch::manual_seed(uio::test::test_seed());
  return {{"lora.A", param({4, 6})}, {"lora.B", param({6, 4})}, {"mem", param({6})}};
}

NamedParams clone_params(const NamedParams& params) {
  NamedParams out;
  for (const auto& [name, p] : params) out.emplace_back(name, p.detach().clone().requires_grad_());
  return out;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

// The multi-tensor (fused) update and the per-parameter reference run the same tests.
class BothUpdates : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(Optimizer, BothUpdates, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "fused" : "reference"; });

}  // namespace

// PyTorch runs in float32 too, but not the same kernels: its AdamW updates exp_avg with lerp_ (ours:
// mul_ + add_) and its clip_grad_norm_ sums the norm in float32 (ours: float64), so the moments and the
// clip factor differ by a few float32 ulps (~1e-7 relative). Adam divides the first moment by the root
// of the second, which keeps such relative errors relative, and each step moves a parameter by about
// lr <= 0.05; after 5 steps the parameters agree to a few ulps of 1, well inside 1e-6 * max(1, |p|).
TEST_P(BothUpdates, MatchPyTorchAdamWWithClippingStepByStep) {
  const uio::format::SafetensorsFile ref((uio::test::testdata("adamw") / "adamw.safetensors").string());
  NamedParams params = {{"w", ref.tensor("w").clone().requires_grad_()},
                        {"b", ref.tensor("b").clone().requires_grad_()}};
  OptimizerOptions o;
  o.beta1 = 0.9, o.beta2 = 0.95, o.eps = 1e-8, o.weight_decay = 0.1, o.grad_clip = 1.0;
  o.fused = GetParam();
  Optimizer opt(params, o);
  const auto lrs = ref.tensor("lr"), norms = ref.tensor("norm");
  double max_error = 0.0;
  int clipped = 0;
  for (int64_t k = 0; k < lrs.size(0); ++k) {
    for (auto& [name, p] : params) p.mutable_grad() = ref.tensor("grad." + std::to_string(k) + "." + name).clone();
    const double norm = opt.grad_norm(), ref_norm = norms[k].item<double>();
    EXPECT_NEAR(norm, ref_norm, 1e-6 * ref_norm) << "step " << k;
    clipped += norm > o.grad_clip;
    opt.step(lrs[k].item<double>(), norm);
    opt.zero_grad();
    for (const auto& [name, p] : params) {
      const auto expected = ref.tensor("after." + std::to_string(k) + "." + name);
      const auto error = ((p.detach() - expected).abs() / expected.abs().clamp_min(1.0)).max().item<double>();
      EXPECT_LE(error, 1e-6) << "parameter " << name << " after step " << k;
      max_error = std::max(max_error, error);
    }
  }
  EXPECT_GT(clipped, 0);
  EXPECT_LT(clipped, lrs.size(0));
  EXPECT_EQ(opt.steps(), lrs.size(0));
  std::cout << (o.fused ? "fused" : "reference") << " update, max error against torch.optim.AdamW: " << max_error
            << " (relative to max(1, |p|))\n";
}

TEST_P(BothUpdates, GradNormEqualsFloat64Recomputation) {
  auto params = make_params();
  OptimizerOptions o;
  o.fused = GetParam();
  Optimizer opt(params, o);
  EXPECT_EQ(opt.grad_norm(), 0.0);
  double sum = 0.0;
  for (auto& [name, p] : params) {
    if (name == "mem") continue;  // no .grad: counts zero
    p.mutable_grad() = torch::randn(p.sizes()) * 3.0;
    sum += p.grad().to(torch::kDouble).square().sum().item<double>();
  }
  EXPECT_NEAR(opt.grad_norm(), std::sqrt(sum), 1e-12 * std::sqrt(sum));
}

TEST_P(BothUpdates, ClippingScalesGradientsToExactlyGradClip) {
  auto params = make_params();
  OptimizerOptions o;
  o.grad_clip = 0.7, o.fused = GetParam();
  Optimizer opt(params, o);
  for (auto& [name, p] : params) p.mutable_grad() = torch::randn(p.sizes()) * 5.0;
  const double norm = opt.grad_norm();
  ASSERT_GT(norm, 2 * o.grad_clip);
  opt.step(1e-3, norm);
  // (norm + 1e-6) in the divisor, as in clip_grad_norm_, leaves the result 1e-6 / norm below grad_clip.
  EXPECT_NEAR(opt.grad_norm(), o.grad_clip, 1e-6 * o.grad_clip);

  // Below the threshold, or with clipping off, gradients are untouched.
  for (const double clip : {1e6, 0.0}) {
    o.grad_clip = clip;
    auto fresh = make_params();
    Optimizer unclipped(fresh, o);
    std::vector<torch::Tensor> before;
    for (auto& [name, p] : fresh) p.mutable_grad() = torch::randn(p.sizes()) * 5.0, before.push_back(p.grad().clone());
    unclipped.step(1e-3, unclipped.grad_norm());
    for (size_t i = 0; i < fresh.size(); ++i) EXPECT_TRUE(torch::equal(fresh[i].second.grad(), before[i])) << clip;
  }
}

// A [1, n] matrix and an [n] vector with the same values and gradients take the same Adam update; only
// the matrix is decayed, by exactly lr * weight_decay * p. A parameter without a gradient is skipped.
TEST_P(BothUpdates, DecayMatricesOnlyAndSkipParametersWithoutGradient) {
  torch::manual_seed(uio::test::test_seed());
  const auto values = torch::randn({9}), grad = torch::randn({9});
  auto matrix = values.view({1, 9}).clone().requires_grad_(), vector = values.clone().requires_grad_();
  auto idle = param({3, 3});
  const auto idle_before = idle.detach().clone();
  OptimizerOptions o;
  o.weight_decay = 0.1, o.fused = GetParam();
  Optimizer opt({{"matrix", matrix}, {"vector", vector}, {"idle", idle}}, o);
  matrix.mutable_grad() = grad.view({1, 9}).clone(), vector.mutable_grad() = grad.clone();
  const double lr = 0.03;
  opt.step(lr, opt.grad_norm());
  const auto difference = matrix.detach().view({9}) - vector.detach();
  EXPECT_TRUE(torch::allclose(difference, -lr * o.weight_decay * values, 0.0, 3e-7))
      << difference << -lr * o.weight_decay * values;
  EXPECT_TRUE(torch::equal(idle.detach(), idle_before));
  EXPECT_EQ(opt.state().count("idle.exp_avg"), 0u);
}

TEST(Optimizer, NonFiniteNormThrowsAndChangesNothing) {
  auto params = make_params();
  Optimizer opt(params, {});
  for (auto& [name, p] : params) p.mutable_grad() = torch::randn(p.sizes());
  const auto before = clone_params(params);
  for (const double norm : {std::nan(""), std::numeric_limits<double>::infinity()})
    EXPECT_THROW(opt.step(1e-3, norm), std::invalid_argument);
  EXPECT_THROW(opt.step(-1.0, 1.0), std::invalid_argument);
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(torch::equal(params[i].second, before[i].second));
  EXPECT_EQ(opt.steps(), 0);
  EXPECT_TRUE(opt.state().empty());
}

TEST(Optimizer, ZeroGradLeavesGradientsUndefined) {
  auto params = make_params();
  Optimizer opt(params, {});
  for (auto& [name, p] : params) p.mutable_grad() = torch::randn(p.sizes());
  opt.step(1e-3, opt.grad_norm());
  opt.zero_grad();
  for (const auto& [name, p] : params) EXPECT_FALSE(p.grad().defined()) << name;
  EXPECT_EQ(opt.steps(), 1);
}

TEST(Optimizer, ConstructorRejectsBadParameters) {
  torch::manual_seed(uio::test::test_seed());
  EXPECT_NE(message_of([] {
              Optimizer({{"a", param({2})}, {"a", param({2})}}, {});
            }).find("'a' appears twice"),
            std::string::npos);
  EXPECT_NE(message_of([] {
              Optimizer({{"frozen", torch::randn({2})}}, {});
            }).find("'frozen' does not require grad"),
            std::string::npos);
  EXPECT_THROW(Optimizer({}, {}), std::invalid_argument);
  OptimizerOptions bad;
  bad.beta2 = 1.5;
  EXPECT_THROW(Optimizer({{"a", param({2})}}, bad), std::invalid_argument);
}

// 2N steps in one go against N steps, state through a safetensors file into a fresh optimiser over fresh
// parameter tensors, and N more. "mem" misses its gradient at step 1, so its own step count (bias
// correction) differs from the optimiser's and must survive the checkpoint too.
TEST_P(BothUpdates, ResumingFromSavedStateIsBitIdentical) {
  const int64_t N = 4;
  const auto initial = make_params();
  std::vector<NamedParams> grads;
  for (int64_t k = 0; k < 2 * N; ++k) {
    NamedParams g;
    for (const auto& [name, p] : initial)
      if (!(name == "mem" && k == 1)) g.emplace_back(name, torch::randn(p.sizes()) * (k % 2 ? 0.1 : 4.0));
    grads.push_back(g);
  }
  ScheduleOptions schedule;
  schedule.warmup_steps = 2, schedule.total_steps = 2 * N;
  auto train = [&](Optimizer& opt, NamedParams& params, int64_t from, int64_t to) {
    for (int64_t k = from; k < to; ++k) {
      for (const auto& [name, g] : grads[k])
        for (auto& [pname, p] : params)
          if (pname == name) p.mutable_grad() = g.clone();
      opt.step(learning_rate(schedule, 3e-2, k), opt.grad_norm());
      opt.zero_grad();
    }
  };
  auto straight = clone_params(initial);
  OptimizerOptions o;
  o.fused = GetParam();
  Optimizer straight_opt(straight, o);
  train(straight_opt, straight, 0, 2 * N);

  auto first = clone_params(initial);
  Optimizer first_opt(first, o);
  train(first_opt, first, 0, N);
  const auto saved = first_opt.state();
  EXPECT_EQ(saved.at("mem.step").item<int64_t>(), N - 1);
  EXPECT_EQ(saved.at("lora.A.step").item<int64_t>(), N);
  const auto path = (uio::test::scratch_dir() / "optimizer.safetensors").string();
  uio::format::write_safetensors(path, {saved.begin(), saved.end()});
  const uio::format::SafetensorsFile file(path);
  std::map<std::string, torch::Tensor> loaded;
  for (const auto& info : file.tensors()) loaded[info.name] = file.tensor(info.name);

  auto resumed = clone_params(first);
  Optimizer resumed_opt(resumed, o);
  resumed_opt.load_state(loaded, first_opt.steps());
  train(resumed_opt, resumed, N, 2 * N);
  EXPECT_EQ(resumed_opt.steps(), 2 * N);
  for (size_t i = 0; i < straight.size(); ++i)
    EXPECT_TRUE(torch::equal(straight[i].second, resumed[i].second)) << straight[i].first;
  for (const auto& [key, t] : straight_opt.state()) EXPECT_TRUE(torch::equal(t, resumed_opt.state().at(key))) << key;
}

TEST(Optimizer, LoadStateRejectsWrongNameOrShapeNamingTheKey) {
  auto params = make_params();
  Optimizer opt(params, {});
  for (auto& [name, p] : params) p.mutable_grad() = torch::randn(p.sizes());
  opt.step(1e-3, opt.grad_norm());
  const auto good = opt.state();
  auto expect_error = [&](std::map<std::string, torch::Tensor> state, int64_t steps, const std::string& text) {
    const auto message = message_of([&] { opt.load_state(state, steps); });
    EXPECT_NE(message.find(text), std::string::npos) << "expected '" << text << "' in: " << message;
  };
  auto renamed = good;
  renamed["lora.C.exp_avg"] = renamed.at("lora.A.exp_avg");
  expect_error(renamed, 1, "'lora.C.exp_avg' belongs to no trainable parameter");
  auto reshaped = good;
  reshaped["lora.B.exp_avg_sq"] = torch::rand({4, 6});
  expect_error(reshaped, 1, "'lora.B.exp_avg_sq' has shape [4, 6], parameter 'lora.B' expects [6, 4]");
  auto partial = good;
  partial.erase("mem.exp_avg");
  expect_error(partial, 1, "'mem.exp_avg' is missing");
  auto retyped = good;
  retyped["mem.exp_avg"] = retyped.at("mem.exp_avg").to(torch::kDouble);
  expect_error(retyped, 1, "'mem.exp_avg' has dtype Double");
  expect_error(good, 0, "'lora.A.step' is 1, expected 1..0");
  EXPECT_THROW(opt.load_state(good, 0), std::runtime_error);
  // A failed load changes nothing.
  for (const auto& [key, t] : good) EXPECT_TRUE(torch::equal(t, opt.state().at(key))) << key;
  EXPECT_EQ(opt.steps(), 1);
}

// The fused kernels against the per-parameter rule in float64, step by step, with clipping, both groups
// and a parameter that misses its gradient now and then (its own bias correction): they agree to
// float64 rounding.
TEST(Optimizer, FusedUpdateEqualsReferenceInFloat64) {
  torch::manual_seed(uio::test::test_seed());
  NamedParams init = {{"lora.A", torch::randn({5, 7}, torch::kDouble)},
                      {"lora.B", torch::randn({7, 3}, torch::kDouble)},
                      {"mem", torch::randn({7}, torch::kDouble)}};
  for (auto& [name, p] : init) p.requires_grad_();
  auto fused = clone_params(init), reference = clone_params(init);
  OptimizerOptions o;
  o.weight_decay = 0.2, o.grad_clip = 2.0, o.beta2 = 0.99;
  o.fused = true;
  Optimizer fused_opt(fused, o);
  o.fused = false;
  Optimizer reference_opt(reference, o);
  int clipped = 0;
  for (int k = 0; k < 12; ++k) {
    const double lr = 0.01 * (1 + torch::rand({1}).item<double>());
    for (size_t i = 0; i < init.size(); ++i) {
      if (init[i].first == "mem" && k % 3 == 1) continue;
      const auto g = torch::randn(init[i].second.sizes(), torch::kDouble) * (k % 2 ? 0.3 : 3.0);
      fused[i].second.mutable_grad() = g.clone(), reference[i].second.mutable_grad() = g.clone();
    }
    const double a = fused_opt.grad_norm(), b = reference_opt.grad_norm();
    EXPECT_NEAR(a, b, 1e-13 * b) << "step " << k;
    clipped += a > o.grad_clip;
    fused_opt.step(lr, a), reference_opt.step(lr, b);
    fused_opt.zero_grad(), reference_opt.zero_grad();
    for (size_t i = 0; i < init.size(); ++i)
      EXPECT_TRUE(torch::allclose(fused[i].second, reference[i].second, 1e-12, 1e-12))
          << init[i].first << " after step " << k << ": " << (fused[i].second - reference[i].second).abs().max();
  }
  EXPECT_GT(clipped, 0);
  const auto fs = fused_opt.state(), rs = reference_opt.state();
  ASSERT_EQ(fs.size(), rs.size());
  for (const auto& [key, t] : rs) EXPECT_TRUE(torch::allclose(fs.at(key), t, 1e-12, 1e-14)) << key;
  EXPECT_EQ(fs.at("mem.step").item<int64_t>(), 8);
}

// remember() then a step then restore() gives back the weights, the moments and the step counts bit for
// bit, and a parameter whose first state came with that step has none again.
TEST_P(BothUpdates, RestoreTakesBackAStepExactly) {
  auto params = make_params();
  OptimizerOptions o;
  o.fused = GetParam();
  Optimizer opt(params, o);
  EXPECT_THROW(opt.restore(), std::logic_error);
  for (auto& [name, p] : params)
    if (name != "mem") p.mutable_grad() = torch::randn(p.sizes());
  opt.step(1e-2, opt.grad_norm());
  opt.zero_grad();
  for (int round = 0; round < 2; ++round) {  // the second round reuses the buffers
    const auto before = clone_params(params);
    const auto state_before = opt.state();
    opt.remember();
    for (auto& [name, p] : params) p.mutable_grad() = torch::randn(p.sizes());
    opt.step(5e-2, opt.grad_norm());
    opt.zero_grad();
    ASSERT_FALSE(torch::equal(params[0].second, before[0].second));
    ASSERT_EQ(opt.state().count("mem.exp_avg"), 1u);  // its first state
    opt.restore();
    EXPECT_EQ(opt.state().count("mem.exp_avg"), 0u);
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_TRUE(torch::equal(params[i].second, before[i].second)) << params[i].first;
    const auto state_after = opt.state();
    ASSERT_EQ(state_after.size(), state_before.size());
    for (const auto& [key, t] : state_before) EXPECT_TRUE(torch::equal(t, state_after.at(key))) << key;
    EXPECT_EQ(opt.steps(), 1);
  }
  // Stepping on after a restore is the same as never having taken the undone step.
  auto twin = clone_params(params);
  Optimizer twin_opt(twin, o);
  twin_opt.load_state(opt.state(), opt.steps());
  for (size_t i = 0; i < params.size(); ++i) {
    const auto g = torch::randn(params[i].second.sizes());
    params[i].second.mutable_grad() = g.clone(), twin[i].second.mutable_grad() = g.clone();
  }
  opt.step(1e-2, opt.grad_norm()), twin_opt.step(1e-2, twin_opt.grad_norm());
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(torch::equal(params[i].second, twin[i].second));
}

TEST_P(BothUpdates, ParametersFiniteFindsNaNAndInfinity) {
  auto params = make_params();
  OptimizerOptions o;
  o.fused = GetParam();
  Optimizer opt(params, o);
  EXPECT_TRUE(opt.parameters_finite());
  torch::NoGradGuard no_grad;
  for (const double bad :
       {std::nan(""), std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()})
    for (auto& [name, p] : params) {
      const auto i = torch::randint(p.numel(), {1}).item<int64_t>();
      const float kept = p.view(-1)[i].item<float>();
      p.view(-1)[i].fill_(bad);
      EXPECT_FALSE(opt.parameters_finite()) << name << " holding " << bad;
      p.view(-1)[i].fill_(kept);
      EXPECT_TRUE(opt.parameters_finite());
    }
}

TEST(Schedule, WarmupRampsLinearlyIntoThePeak) {
  ScheduleOptions o;
  o.warmup_steps = 4, o.total_steps = 20;
  const double peak = 2e-3;
  for (int64_t s = 0; s < 4; ++s) EXPECT_DOUBLE_EQ(learning_rate(o, peak, s), peak * double(s + 1) / 5.0) << s;
  EXPECT_DOUBLE_EQ(learning_rate(o, peak, 4), peak);
  o.warmup_steps = 0, o.total_steps = 1;
  EXPECT_DOUBLE_EQ(learning_rate(o, peak, 0), peak);
}

TEST(Schedule, CosineRunsFromPeakToMinimumAtTheLastStep) {
  ScheduleOptions o;
  o.warmup_steps = 3, o.total_steps = 14, o.min_lr_ratio = 0.2;
  const double peak = 1e-3, min = peak * 0.2;
  EXPECT_DOUBLE_EQ(learning_rate(o, peak, 3), peak);
  EXPECT_NEAR(learning_rate(o, peak, 8), (peak + min) / 2, 1e-18);  // halfway between steps 3 and 13
  EXPECT_NEAR(learning_rate(o, peak, 4), min + (peak - min) * (1 + std::cos(M_PI / 10)) / 2, 1e-18);
  EXPECT_DOUBLE_EQ(learning_rate(o, peak, 13), min);
  EXPECT_DOUBLE_EQ(learning_rate(o, peak, 100), min);
}

TEST(Schedule, CosineDecreasesMonotonicallyAfterWarmup) {
  ScheduleOptions o;
  o.warmup_steps = 5, o.total_steps = 200, o.min_lr_ratio = 0.0;
  for (int64_t s = 5; s < 199; ++s) EXPECT_LT(learning_rate(o, 1.0, s + 1), learning_rate(o, 1.0, s)) << s;
  EXPECT_EQ(learning_rate(o, 1.0, 199), 0.0);
}

TEST(Schedule, ConstantHoldsThePeakAfterWarmup) {
  ScheduleOptions o;
  o.kind = ScheduleKind::constant, o.warmup_steps = 3, o.total_steps = 10;
  EXPECT_DOUBLE_EQ(learning_rate(o, 5e-4, 0), 5e-4 / 4);
  for (int64_t s = 3; s < 15; ++s) EXPECT_EQ(learning_rate(o, 5e-4, s), 5e-4) << s;
}

TEST(Schedule, BadOptionsAreRejectedNamingTheField) {
  auto expect_field = [](ScheduleOptions o, const std::string& field) {
    EXPECT_THROW(check_schedule(o), std::invalid_argument) << field;
    EXPECT_NE(message_of([&] { check_schedule(o); }).find(field), std::string::npos) << field;
  };
  ScheduleOptions o;
  o.total_steps = 10, o.warmup_steps = 2;
  EXPECT_NO_THROW(check_schedule(o));
  auto bad = o;
  bad.total_steps = 0, bad.warmup_steps = 0;
  expect_field(bad, "total_steps");
  bad = o, bad.warmup_steps = -1;
  expect_field(bad, "warmup_steps");
  bad = o, bad.warmup_steps = 10;
  expect_field(bad, "warmup_steps");
  bad = o, bad.min_lr_ratio = 1.5;
  expect_field(bad, "min_lr_ratio");
  bad = o, bad.min_lr_ratio = -0.1;
  expect_field(bad, "min_lr_ratio");
  bad = o, bad.min_lr_ratio = std::nan("");
  expect_field(bad, "min_lr_ratio");
  EXPECT_EQ(parse_schedule_kind("constant"), ScheduleKind::constant);
  try {
    parse_schedule_kind("linear");
    ADD_FAILURE() << "schedule 'linear' was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("not one of cosine, constant"), std::string::npos) << e.what();
  }
  EXPECT_THROW(learning_rate(o, 1e-3, -1), std::invalid_argument);
  EXPECT_THROW(learning_rate(o, -1e-3, 0), std::invalid_argument);
}

// On a GPU the fused update runs libtorch's CUDA multi-tensor kernels (_fused_adamw_, _foreach_norm):
// float32 parameters on the device, with clipping, both groups and a parameter that misses its gradient
// now and then, against the per-parameter rule on the same device and against float64 on the CPU; the
// undo point and the finiteness check on the device.
TEST(Optimizer, OnCudaFusedEqualsReferenceAndFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(uio::test::test_seed());
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  NamedParams init = {
      {"lora.A", torch::randn({64, 96})}, {"lora.B", torch::randn({96, 32})}, {"mem", torch::randn({96})}};
  auto on = [&](torch::Device device, torch::Dtype dtype) {
    NamedParams out;
    for (const auto& [name, p] : init) out.emplace_back(name, p.to(device, dtype).requires_grad_());
    return out;
  };
  auto fused = on(torch::kCUDA, torch::kFloat), reference = on(torch::kCUDA, torch::kFloat),
       exact = on(torch::kCPU, torch::kDouble);
  OptimizerOptions o;
  o.weight_decay = 0.1, o.grad_clip = 1.5;
  o.fused = true;
  Optimizer fused_opt(fused, o), exact_opt(exact, o);
  o.fused = false;
  Optimizer reference_opt(reference, o);
  EXPECT_TRUE(fused_opt.parameters_finite());
  int clipped = 0;
  for (int k = 0; k < 8; ++k) {
    for (size_t i = 0; i < init.size(); ++i) {
      if (init[i].first == "mem" && k % 3 == 1) continue;
      const auto g = torch::randn(init[i].second.sizes()) * (k % 2 ? 0.05 : 2.0);
      fused[i].second.mutable_grad() = g.to(cuda.device());
      reference[i].second.mutable_grad() = g.to(cuda.device());
      exact[i].second.mutable_grad() = g.to(torch::kDouble);
    }
    const double a = fused_opt.grad_norm(), b = reference_opt.grad_norm(), c = exact_opt.grad_norm();
    EXPECT_NEAR(a, c, 1e-5 * c) << "step " << k;
    EXPECT_NEAR(b, c, 1e-5 * c) << "step " << k;
    clipped += c > o.grad_clip;
    NamedParams before;
    if (k == 7) before = clone_params(fused), fused_opt.remember();
    fused_opt.step(2e-3, a), reference_opt.step(2e-3, b), exact_opt.step(2e-3, c);
    fused_opt.zero_grad(), reference_opt.zero_grad(), exact_opt.zero_grad();
    for (size_t i = 0; i < init.size(); ++i) {
      const auto f = fused[i].second.cpu().to(torch::kDouble), r = reference[i].second.cpu().to(torch::kDouble);
      EXPECT_TRUE(torch::allclose(f, r, 1e-5, 1e-6)) << init[i].first << " step " << k << ": " << (f - r).abs().max();
      EXPECT_TRUE(torch::allclose(f, exact[i].second, 1e-5, 1e-6))
          << init[i].first << " step " << k << ": " << (f - exact[i].second).abs().max();
    }
    if (k == 7) {  // the undo point on the device takes the last step back bit for bit
      fused_opt.restore();
      EXPECT_EQ(fused_opt.steps(), 7);
      for (size_t i = 0; i < init.size(); ++i)
        EXPECT_TRUE(torch::equal(fused[i].second, before[i].second)) << init[i].first;
    }
  }
  EXPECT_GT(clipped, 0);
  {
    torch::NoGradGuard no_grad;
    fused[0].second.view(-1)[3].fill_(std::nan(""));
  }
  EXPECT_FALSE(fused_opt.parameters_finite());
}
