// trainer/train_flops.cpp — FLOP accounting and model shapes for `uio bench train`.
#include "trainer/train_flops.h"

#include <stdexcept>

namespace uio::trainer {

double train_step_flops(const model::ModelConfig& c, int64_t l, int64_t M, int64_t T) {
  const double C = static_cast<double>(c.hidden_size), I = static_cast<double>(c.intermediate_size);
  const double HD = static_cast<double>(c.num_heads * c.head_dim),
               GD = static_cast<double>(c.num_kv_heads * c.head_dim);
  const double layers = static_cast<double>(c.num_layers);
  const double N = layers * (C * HD + 2 * C * GD + HD * C + 3 * C * I);  // q, k, v, o, gate, up, down
  const double head = static_cast<double>(c.vocab_size) * C;
  double flops = 0;
  for (int64_t t = 0; t < T; ++t) {
    const double enc = static_cast<double>(l + M), dec = static_cast<double>(l);
    const double memory = static_cast<double>(t * M);
    flops += 2 * N * enc + layers * 4 * HD * enc * enc / 2;  // encoder forward
    flops += 2 * 2 * (N + head) * dec + layers * 3 * 4 * HD * dec * (memory + dec / 2);  // decoder fwd + bwd
  }
  return flops;
}

const std::vector<std::string>& shape_names() {
  static const std::vector<std::string> names = {"smollm2-135m", "llama2-7b", "llama3-8b"};
  return names;
}

model::ModelConfig named_shape(const std::string& name) {
  model::ModelConfig c;
  if (name == "smollm2-135m") {
    c.vocab_size = 49152, c.hidden_size = 576, c.intermediate_size = 1536, c.num_layers = 30;
    c.num_heads = 9, c.num_kv_heads = 3, c.head_dim = 64, c.rope_theta = 100000.0, c.max_position = 8192;
    c.tie_word_embeddings = true, c.eos_token_id = 2;
  } else if (name == "llama2-7b") {
    c.vocab_size = 32000, c.hidden_size = 4096, c.intermediate_size = 11008, c.num_layers = 32;
    c.num_heads = 32, c.num_kv_heads = 32, c.head_dim = 128, c.rope_theta = 10000.0, c.max_position = 4096;
    c.eos_token_id = 2;
  } else if (name == "llama3-8b") {
    c.vocab_size = 128256, c.hidden_size = 4096, c.intermediate_size = 14336, c.num_layers = 32;
    c.num_heads = 32, c.num_kv_heads = 8, c.head_dim = 128, c.rope_theta = 500000.0, c.max_position = 8192;
    c.eos_token_id = 128001;
  } else {
    std::string known;
    for (const auto& n : shape_names()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("shape '" + name + "' is not one of " + known);
  }
  c.validate("shape " + name);
  return c;
}

}  // namespace uio::trainer
