// model/generate.cpp — sampling and the plain (memory-less) decoding loop.
#include "model/generate.h"

#include <cmath>
#include <stdexcept>

namespace uio::model {

void validate(const SamplingOptions& o) {
  auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
  if (!(o.temperature >= 0) || std::isinf(o.temperature))
    fail("temperature is " + std::to_string(o.temperature) + ", expected a finite value >= 0 (0 = greedy)");
  if (!(o.top_p > 0 && o.top_p <= 1))
    fail("top_p is " + std::to_string(o.top_p) + ", expected a value in (0, 1] (1 = no nucleus cut)");
  if (o.top_k < 0) fail("top_k is " + std::to_string(o.top_k) + ", expected >= 0 (0 = no top-k cut)");
  if (o.max_new_tokens <= 0) fail("max_new_tokens is " + std::to_string(o.max_new_tokens) + ", expected > 0");
}

int64_t sample_token(const torch::Tensor& logits, const SamplingOptions& o, at::Generator& generator) {
  TORCH_CHECK(logits.dim() == 1, "sample_token: expected logits [V], got ", logits.sizes());
  validate(o);
  // One host sync per token either way (argmax or multinomial end in .item()).
  if (!torch::isfinite(logits).all().item<bool>())
    throw NonFiniteLogitsError(
        "generate: the model's logits are not finite (NaN or infinity): its weights hold NaN or "
        "infinite values, or overflow in this dtype; check the weight file, or run in float32");
  if (o.temperature == 0) return logits.argmax().item<int64_t>();
  // In float64, shifted by the maximum before dividing: a temperature of 1e-30 makes huge but finite
  // log-probabilities (0 for the best token), never inf - inf.
  auto l = logits.to(torch::kCPU, torch::kDouble);
  auto scaled = (l - l.max()) / o.temperature;  // [V], max 0
  if (o.top_k > 0 && o.top_k < scaled.size(0)) {
    auto kth = std::get<0>(scaled.topk(o.top_k)).min();
    scaled = scaled.masked_fill(scaled < kth, -INFINITY);
  }
  if (o.top_p < 1.0) {
    auto [sorted, order] = scaled.sort(/*dim=*/0, /*descending=*/true);
    auto probs = sorted.softmax(0);
    // Keep the smallest prefix whose mass reaches top_p: drop ids whose preceding mass already does.
    auto drop = (probs.cumsum(0) - probs) >= o.top_p;
    scaled = scaled.scatter(0, order, sorted.masked_fill(drop, -INFINITY));
  }
  return torch::multinomial(scaled.softmax(0), 1, /*replacement=*/false, generator).item<int64_t>();
}

std::vector<int64_t> generate(CausalLM& model, const std::vector<int64_t>& prompt, const SamplingOptions& o,
                              const std::function<bool(int64_t)>& on_token, const Rope* rope, const LoraSetImpl* lora) {
  TORCH_CHECK(!prompt.empty(), "generate: the prompt is empty");
  torch::NoGradGuard no_grad;
  const auto device = model->output_weight().device();
  validate(o);
  // The cache grows as tokens come (doubling): max_new_tokens is a limit, not a size to allocate up front.
  constexpr int64_t kFirstReserve = 256;
  const int64_t P = static_cast<int64_t>(prompt.size());
  auto cache = model->make_cache(1, P + std::min(o.max_new_tokens, kFirstReserve));
  ForwardContext ctx;
  ctx.cache = &cache;
  ctx.rope = rope;
  ctx.lora = lora;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  auto ids = torch::tensor(prompt, torch::kInt64).unsqueeze(0).to(device);  // [1, T]
  std::vector<int64_t> out;
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    auto logits = model->forward(ids, ctx);  // [1, T, V]
    const int64_t next = sample_token(logits[0][-1], o, generator);
    out.push_back(next);
    if ((on_token && !on_token(next)) || next == o.eos_id) break;
    ids = torch::tensor({next}, torch::kInt64).view({1, 1}).to(device);
    if (cache.length() == cache.capacity()) cache.reserve(2 * cache.capacity());
  }
  return out;
}

std::vector<int64_t> generate(MemoryReader& reader, const std::vector<int64_t>& prompt, const SamplingOptions& o,
                              const std::function<bool(int64_t)>& on_token,
                              const std::function<void(int64_t, int64_t)>& on_segment) {
  TORCH_CHECK(!prompt.empty(), "generate: the prompt is empty");
  validate(o);
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
