// model/generate.cpp — sampling and the plain (memory-less) decoding loop.
#include "model/generate.h"

namespace uio::model {

int64_t sample_token(const torch::Tensor& logits, const SamplingOptions& o, at::Generator& generator) {
  TORCH_CHECK(logits.dim() == 1, "sample_token: expected logits [V], got ", logits.sizes());
  if (o.temperature <= 0) return logits.argmax().item<int64_t>();
  auto scaled = logits.to(torch::kCPU, torch::kFloat) / o.temperature;
  if (o.top_k > 0 && o.top_k < scaled.size(0)) {
    auto kth = std::get<0>(scaled.topk(o.top_k)).min();
    scaled = scaled.masked_fill(scaled < kth, -INFINITY);
  }
  if (o.top_p < 1.0) {
    auto [sorted, order] = scaled.sort(/*dim=*/0, /*descending=*/true);
    auto cumulative = sorted.softmax(0).cumsum(0);
    // Keep the smallest prefix whose mass reaches top_p: drop ids whose preceding mass already does.
    auto drop = (cumulative - sorted.softmax(0)) >= o.top_p;
    scaled = scaled.scatter(0, order, sorted.masked_fill(drop, -INFINITY));
  }
  auto probs = scaled.softmax(0);
  return torch::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
}

std::vector<int64_t> generate(CausalLM& model, const std::vector<int64_t>& prompt, const SamplingOptions& o,
                              const std::function<bool(int64_t)>& on_token, const Rope* rope) {
  TORCH_CHECK(!prompt.empty(), "generate: the prompt is empty");
  torch::NoGradGuard no_grad;
  const auto device = model->output_weight().device();
  auto cache = model->make_cache(1, static_cast<int64_t>(prompt.size()) + o.max_new_tokens);
  ForwardContext ctx;
  ctx.cache = &cache;
  ctx.rope = rope;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  auto ids = torch::tensor(prompt, torch::kInt64).unsqueeze(0).to(device);  // [1, T]
  std::vector<int64_t> out;
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    auto logits = model->forward(ids, ctx);  // [1, T, V]
    const int64_t next = sample_token(logits[0][-1], o, generator);
    out.push_back(next);
    if ((on_token && !on_token(next)) || next == o.eos_id) break;
    ids = torch::tensor({next}, torch::kInt64).view({1, 1}).to(device);
  }
  return out;
}

std::vector<int64_t> generate(MemoryReader& reader, const std::vector<int64_t>& prompt, const SamplingOptions& o,
                              const std::function<bool(int64_t)>& on_token,
                              const std::function<void(int64_t, int64_t)>& on_segment) {
  TORCH_CHECK(!prompt.empty(), "generate: the prompt is empty");
  torch::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  auto logits = reader.read(prompt, on_segment);  // [V]
  std::vector<int64_t> out;
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    const int64_t next = sample_token(logits, o, generator);
    out.push_back(next);
    if ((on_token && !on_token(next)) || next == o.eos_id || step + 1 == o.max_new_tokens) break;
    logits = reader.read({next});
  }
  return out;
}

}  // namespace uio::model
