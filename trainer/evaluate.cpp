// trainer/evaluate.cpp — scoring and greedy answers per method.
#include "trainer/evaluate.h"

#include <stdexcept>

#include "model/generate.h"
#include "model/loss.h"
#include "model/memory_pass.h"
#include "model/memory_reader.h"

namespace uio::trainer {

EvalMethod parse_eval_method(const std::string& name) {
  if (name == "uio") return EvalMethod::uio;
  if (name == "truncate") return EvalMethod::truncate;
  if (name == "truncate_lora") return EvalMethod::truncate_lora;
  if (name == "linear" || name == "pi") return EvalMethod::linear;
  if (name == "ntk") return EvalMethod::ntk;
  if (name == "dynamic") return EvalMethod::dynamic;
  if (name == "yarn") return EvalMethod::yarn;
  throw std::invalid_argument("eval method '" + name +
                              "' is not one of uio, truncate, truncate_lora, linear, ntk, dynamic, yarn");
}

const char* eval_method_name(EvalMethod m) {
  switch (m) {
    case EvalMethod::uio: return "uio";
    case EvalMethod::truncate: return "truncate";
    case EvalMethod::truncate_lora: return "truncate_lora";
    case EvalMethod::linear: return "linear";
    case EvalMethod::ntk: return "ntk";
    case EvalMethod::dynamic: return "dynamic";
    case EvalMethod::yarn: return "yarn";
  }
  return "?";
}

model::Rope baseline_rope(const model::ModelConfig& config, EvalMethod method, int64_t length) {
  TORCH_CHECK(method != EvalMethod::uio && method != EvalMethod::truncate && method != EvalMethod::truncate_lora,
              "eval: ", eval_method_name(method), " has no RoPE scaling of its own");
  TORCH_CHECK(config.rope_scaling.type == model::RopeKind::none, "eval: the base model already scales RoPE ('",
              model::rope_kind_name(config.rope_scaling.type),
              "'); the RoPE-scaling baselines assume a plain RoPE base model");
  const double factor = std::max(1.0, static_cast<double>(length) / static_cast<double>(config.max_position));
  model::RopeScaling s;
  if (factor > 1.0) {
    s.type = model::parse_rope_kind(eval_method_name(method));
    s.factor = factor;
    s.original_max_position = config.max_position;
  }
  return model::Rope(config.head_dim, config.rope_theta, s, config.max_position);
}

bool needs_memory(EvalMethod method) { return method == EvalMethod::uio || method == EvalMethod::truncate_lora; }

int64_t Evaluator::window() const { return truncate_window > 0 ? truncate_window : trained_window(); }

namespace {

// Summed cross-entropy of hidden states [1, n, C] against the next tokens `targets` [n].
std::pair<double, int64_t> tail_loss(model::CausalLM& base, const torch::Tensor& hidden, const torch::Tensor& targets) {
  auto loss = model::row_cross_entropy(base, hidden, targets.unsqueeze(0));  // [1]
  return {loss.item<double>(), targets.size(0)};
}

// The decoder adapters `truncate_lora` reads through (none for every other method).
const model::LoraSetImpl* window_lora(EvalMethod method, const model::MemoryCompressor& compressor) {
  if (method != EvalMethod::truncate_lora) return nullptr;
  TORCH_CHECK(compressor && compressor->decoder,
              "eval: method truncate_lora needs a memory export with decoder adapters (trained with "
              "decoder_lora_rank > 0); this one has none, so truncate_lora would equal truncate");
  return compressor->decoder.get();
}

}  // namespace

std::pair<double, int64_t> Evaluator::score_tail(EvalMethod method, const torch::Tensor& prefix, int64_t scored) {
  torch::NoGradGuard no_grad;
  const int64_t L = prefix.size(0);
  TORCH_CHECK(prefix.dim() == 1 && scored >= 1 && L > scored, "eval: scoring the last ", scored,
              " predictions needs a prefix of more tokens, got ", prefix.sizes());
  const auto device = base->output_weight().device();
  auto ids = prefix.to(device);
  const int64_t first = L - scored - 1;  // the position whose output predicts the first scored token
  auto targets = ids.narrow(0, first + 1, scored);

  if (method == EvalMethod::truncate || method == EvalMethod::truncate_lora) {
    const int64_t W = std::min(L, window());
    TORCH_CHECK(W > scored, "eval: truncate_window ", W, " must exceed the scored tokens (", scored, ")");
    model::ForwardContext ctx;
    ctx.lora = window_lora(method, compressor);
    auto hidden = base->hidden_states(ids.narrow(0, L - W, W).unsqueeze(0), ctx);  // [1, W, C]
    return tail_loss(base, hidden.narrow(1, W - scored - 1, scored), targets);
  }
  if (method != EvalMethod::uio) {
    auto rope = baseline_rope(base->config(), method, L);
    model::ForwardContext ctx;
    ctx.rope = &rope;
    auto hidden = base->hidden_states(ids.unsqueeze(0), ctx);  // [1, L, C]
    return tail_loss(base, hidden.narrow(1, first, scored), targets);
  }

  // uio: read the prefix through memory, decoding only the segments that hold the scored region.
  TORCH_CHECK(compressor, "eval: method uio needs a memory compressor (--memory)");
  const int64_t l = compressor->segment_len(), first_segment = first / l;
  std::vector<torch::Tensor> hidden;  // [1, n, C] pieces covering positions first_segment * l ..
  model::MemoryPass(base, compressor, chunk)
      .read(
          ids,
          [&](int64_t, const torch::Tensor& h) {
            hidden.push_back(h.reshape({1, -1, h.size(-1)}));
          },
          first_segment);
  auto all = torch::cat(hidden, 1);  // positions first_segment * l .. L - 1
  return tail_loss(base, all.narrow(1, first - first_segment * l, scored), targets);
}

std::vector<int64_t> Evaluator::greedy(EvalMethod method, const std::vector<int64_t>& prompt, int64_t max_new) {
  model::SamplingOptions o;
  o.max_new_tokens = max_new;
  o.eos_id = base->config().eos_token_id;
  if (method == EvalMethod::uio) {
    TORCH_CHECK(compressor, "eval: method uio needs a memory compressor (--memory)");
    model::MemoryReader reader(base, compressor, chunk);
    return model::generate(reader, prompt, o);
  }
  if (method == EvalMethod::truncate || method == EvalMethod::truncate_lora) {
    const int64_t W = std::max<int64_t>(1, window() - max_new);  // room for the answer inside the window
    const auto start = prompt.size() > static_cast<size_t>(W) ? prompt.end() - W : prompt.begin();
    return model::generate(base, std::vector<int64_t>(start, prompt.end()), o, {}, nullptr,
                           window_lora(method, compressor));
  }
  auto rope = baseline_rope(base->config(), method, static_cast<int64_t>(prompt.size()) + max_new);
  return model::generate(base, prompt, o, {}, &rope);
}

}  // namespace uio::trainer
