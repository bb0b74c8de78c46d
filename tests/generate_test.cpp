// tests/generate_test.cpp — the sampler: greedy is argmax; temperature, top-k and top-p draw from the
// distribution recomputed here in float64 (empirical frequencies over many draws).
#include <cmath>

#include <gtest/gtest.h>

#include "model/generate.h"
#include "tests/test_util.h"

using uio::model::sample_token;
using uio::model::SamplingOptions;

namespace {

// Frequencies of `draws` samples.
std::vector<double> frequencies(const torch::Tensor& logits, const SamplingOptions& o, int draws) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(uio::test::test_seed());
  std::vector<double> f(logits.size(0), 0.0);
  for (int i = 0; i < draws; ++i) f[sample_token(logits, o, gen)] += 1.0 / draws;
  return f;
}

// softmax(logits / T) over `keep` (float64), zero elsewhere.
std::vector<double> expected(const std::vector<double>& logits, double T, const std::vector<bool>& keep) {
  std::vector<double> p(logits.size(), 0.0);
  double z = 0;
  for (size_t i = 0; i < logits.size(); ++i)
    if (keep[i]) z += p[i] = std::exp(logits[i] / T);
  for (auto& v : p) v /= z;
  return p;
}

}  // namespace

TEST(Sampler, GreedyIsArgmaxAndSamplingFollowsTopKAndTopP) {
  torch::manual_seed(uio::test::test_seed());
  auto logits = torch::randn({7}, torch::kDouble) * 1.5;
  std::vector<double> l(logits.data_ptr<double>(), logits.data_ptr<double>() + 7);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  SamplingOptions greedy;
  EXPECT_EQ(sample_token(logits.to(torch::kFloat), greedy, gen), logits.argmax().item<int64_t>());

  auto order = logits.argsort(0, /*descending=*/true);
  const int draws = 40000;
  const double tol = 4 * std::sqrt(0.25 / draws);  // 4 standard deviations of a frequency

  SamplingOptions top_k;
  top_k.temperature = 0.8, top_k.top_k = 3;
  std::vector<bool> keep(7, false);
  for (int i = 0; i < 3; ++i) keep[order[i].item<int64_t>()] = true;
  auto want = expected(l, 0.8, keep), got = frequencies(logits.to(torch::kFloat), top_k, draws);
  for (int i = 0; i < 7; ++i) EXPECT_NEAR(got[i], want[i], tol) << "top-k id " << i;

  // Nucleus: the smallest prefix (by probability) whose mass reaches 0.7.
  SamplingOptions top_p;
  top_p.temperature = 1.3, top_p.top_p = 0.7;
  auto full = expected(l, 1.3, std::vector<bool>(7, true));
  std::fill(keep.begin(), keep.end(), false);
  double mass = 0;
  for (int i = 0; i < 7 && mass < 0.7; ++i) {
    const int64_t id = order[i].item<int64_t>();
    keep[id] = true;
    mass += full[id];
  }
  want = expected(l, 1.3, keep), got = frequencies(logits.to(torch::kFloat), top_p, draws);
  for (int i = 0; i < 7; ++i) EXPECT_NEAR(got[i], want[i], tol) << "top-p id " << i;
}

// Options outside their range name the option; top_p 0 or a temperature of 1e-30 never reach torch's
// "probability tensor contains inf/nan".
TEST(Sampler, OptionsOutOfRangeNameTheOption) {
  auto logits = torch::randn({9});
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto expect_error = [&](SamplingOptions o, const std::string& needle) {
    try {
      sample_token(logits, o, gen);
      ADD_FAILURE() << "expected an error naming " << needle;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  SamplingOptions o;
  o.temperature = 1.0;
  for (double p : {0.0, -0.5, 1.5, double(NAN)}) o.top_p = p, expect_error(o, "top_p");
  o.top_p = 1.0;
  for (double t : {-1.0, double(NAN), double(INFINITY)}) o.temperature = t, expect_error(o, "temperature");
  o.temperature = 1.0, o.top_k = -3;
  expect_error(o, "top_k");
}

TEST(Sampler, TinyTemperaturesAndTinyTopPSampleTheMostLikelyToken) {
  torch::manual_seed(uio::test::test_seed());
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(uio::test::test_seed());
  for (int trial = 0; trial < 50; ++trial) {
    auto logits = torch::randn({50}) * 30;
    const int64_t best = logits.argmax().item<int64_t>();
    for (double t : {1e-30, 1e-300, 1e-7}) {
      SamplingOptions o;
      o.temperature = t;
      EXPECT_EQ(sample_token(logits, o, gen), best) << "temperature " << t;
      o.top_k = 5, o.top_p = 0.5;
      const auto bf16 = logits.to(torch::kBFloat16);  // ties at the top are possible: any of them will do
      EXPECT_EQ(bf16[sample_token(bf16, o, gen)].item<float>(), bf16.max().item<float>()) << "temperature " << t;
    }
    SamplingOptions nucleus;
    nucleus.temperature = 1.0, nucleus.top_p = 1e-12;
    EXPECT_EQ(sample_token(logits, nucleus, gen), best);
  }
}

namespace {

// A tiny random model, float32, on the CPU.
uio::model::CausalLM tiny_model() {
  torch::manual_seed(uio::test::test_seed());
  uio::model::CausalLM model(uio::test::tiny_llama_config());
  model->eval();
  return model;
}

}  // namespace

TEST(Generate, NonFiniteLogitsStopGenerationWithAMessage) {
  auto model = tiny_model();
  {
    torch::NoGradGuard no_grad;
    model->model->norm->weight[3] = NAN;
  }
  SamplingOptions o;
  o.max_new_tokens = 4;
  for (double temperature : {0.0, 0.7}) {
    o.temperature = temperature;
    try {
      uio::model::generate(model, {3, 4, 5}, o);
      ADD_FAILURE() << "expected an error (temperature " << temperature << ")";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("not finite"), std::string::npos) << e.what();
    }
  }
}

// max_new_tokens is a limit, not a size: a billion costs nothing until tokens are made (the KV cache grows
// as they are), and the tokens equal those of a small limit.
TEST(Generate, AHugeTokenLimitAllocatesOnlyWhatIsGenerated) {
  auto model = tiny_model();
  SamplingOptions small, huge;
  small.max_new_tokens = 40;
  huge.max_new_tokens = 1000000000;
  const auto want = uio::model::generate(model, {3, 4, 5, 6}, small);
  int64_t count = 0;
  const auto got = uio::model::generate(model, {3, 4, 5, 6}, huge, [&](int64_t) { return ++count < 40; });
  EXPECT_EQ(got, want);
}
