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
