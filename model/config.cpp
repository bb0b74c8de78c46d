// model/config.cpp — HF config.json -> ModelConfig, with errors that name the file and the key.
#include "model/config.h"
#include "data/format/json_file.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace uio::model {
namespace {

using Json = nlohmann::json;

std::string type_name(const Json& v) { return v.type_name(); }

[[noreturn]] void fail(const std::string& path, const std::string& msg) {
  throw std::invalid_argument(path + ": " + msg);
}

// Required integer key.
int64_t get_int(const Json& j, const std::string& path, const std::string& key) {
  if (!j.contains(key) || j[key].is_null())
    fail(path, "missing key '" + key + "' (an integer); is this a Llama-family config.json?");
  if (!j[key].is_number_integer())
    fail(path, "key '" + key + "' is a " + type_name(j[key]) + " (" + j[key].dump() + "), expected an integer");
  return j[key].get<int64_t>();
}

int64_t get_int_or(const Json& j, const std::string& path, const std::string& key, int64_t fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return get_int(j, path, key);
}

double get_double_or(const Json& j, const std::string& path, const std::string& key, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number())
    fail(path, "key '" + key + "' is a " + type_name(j[key]) + " (" + j[key].dump() + "), expected a number");
  return j[key].get<double>();
}

bool get_bool_or(const Json& j, const std::string& path, const std::string& key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean())
    fail(path, "key '" + key + "' is a " + type_name(j[key]) + " (" + j[key].dump() + "), expected true or false");
  return j[key].get<bool>();
}

// eos_token_id may be one id or a list (Llama-3 instruct); uio keeps the first.
int64_t get_token_id(const Json& j, const std::string& path, const std::string& key) {
  if (!j.contains(key) || j[key].is_null()) return -1;
  const Json& v = j[key];
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
  if (v.is_number_integer()) return v.get<int64_t>();
  fail(path, "key '" + key + "' is " + v.dump() + ", expected a token id or a list of them");
}

RopeScaling parse_rope(const Json& r, const std::string& path, const std::string& where) {
  RopeScaling s;
  std::string type = "default";
  if (r.contains("rope_type") && r["rope_type"].is_string())
    type = r["rope_type"];
  else if (r.contains("type") && r["type"].is_string())
    type = r["type"];
  if (type == "default") type = "none";
  if (type != "none" && type != "linear" && type != "dynamic" && type != "yarn" && type != "llama3")
    fail(path, where + ".rope_type is '" + type + "', expected one of default, linear, dynamic, yarn, llama3");
  s.type = parse_rope_kind(type);
  s.factor = get_double_or(r, path, "factor", 1.0);
  if (type != "none" && !(s.factor > 0)) fail(path, where + ".factor must be > 0 for rope_type '" + type + "'");
  s.original_max_position = get_int_or(r, path, "original_max_position_embeddings", 0);
  s.low_freq_factor = get_double_or(r, path, "low_freq_factor", 1.0);
  s.high_freq_factor = get_double_or(r, path, "high_freq_factor", 4.0);
  s.beta_fast = get_double_or(r, path, "beta_fast", 32.0);
  s.beta_slow = get_double_or(r, path, "beta_slow", 1.0);
  if (r.contains("attention_factor") && !r["attention_factor"].is_null())
    s.attention_factor = get_double_or(r, path, "attention_factor", 1.0);
  s.mscale = get_double_or(r, path, "mscale", 0.0);
  s.mscale_all_dim = get_double_or(r, path, "mscale_all_dim", 0.0);
  s.truncate = get_bool_or(r, path, "truncate", true);
  if (type == "llama3" && !(s.high_freq_factor > s.low_freq_factor))
    fail(path, where + ": llama3 needs high_freq_factor > low_freq_factor");
  return s;
}

ModelConfig load_hf_config_json(const std::string& path);

}  // namespace

int64_t ModelConfig::num_parameters() const {
  const int64_t q = hidden_size * num_heads * head_dim, kv = 2 * hidden_size * num_kv_heads * head_dim;
  const int64_t o = num_heads * head_dim * hidden_size;
  const int64_t bias =
      (attention_bias ? (num_heads + 2 * num_kv_heads) * head_dim : 0) + (attention_output_bias ? hidden_size : 0);
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  const int64_t per_layer = q + kv + o + bias + mlp + 2 * hidden_size;
  const int64_t embed = vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2);
  return num_layers * per_layer + embed + hidden_size;
}

void ModelConfig::validate(const std::string& source) const {
  // Sizes above 2^31 are no real model's; bounding them keeps every product of two (a weight's element
  // count, heads x head_dim) inside int64 before the weights are checked against them.
  constexpr int64_t kMaxSize = (int64_t{1} << 31) - 1;
  auto positive = [&](int64_t v, const char* key) {
    if (v <= 0 || v > kMaxSize)
      fail(source,
           std::string("'") + key + "' is " + std::to_string(v) + ", expected 1 .. " + std::to_string(kMaxSize));
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_layers, "num_hidden_layers");
  positive(num_heads, "num_attention_heads");
  positive(num_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  if (max_position <= 0)
    fail(source, "'max_position_embeddings' is " + std::to_string(max_position) + ", expected > 0");
  if (num_heads % num_kv_heads != 0)
    fail(source, "num_attention_heads (" + std::to_string(num_heads) + ") is not a multiple of num_key_value_heads (" +
                     std::to_string(num_kv_heads) + ")");
  if (head_dim % 2 != 0) fail(source, "head_dim " + std::to_string(head_dim) + " is odd; RoPE needs it even");
  if (!(rms_norm_eps > 0)) fail(source, "rms_norm_eps must be > 0");
  if (!(rope_theta > 0)) fail(source, "rope_theta must be > 0");
  if (sliding_window && *sliding_window <= 0) fail(source, "sliding_window must be > 0 or null");
}

ModelConfig load_hf_config(const std::string& path) {
  try {
    return load_hf_config_json(path);
  } catch (const Json::exception& e) {  // a value of an unexpected type the checks above did not foresee
    fail(path, std::string("unexpected value: ") + e.what());
  }
}

namespace {

ModelConfig load_hf_config_json(const std::string& path) {
  Json j;
  try {
    j = format::read_json_file(path);
  } catch (const format::FormatError& e) {
    throw std::invalid_argument(std::string(e.what()) + " (expected an HF model directory with config.json)");
  }
  if (!j.is_object()) fail(path, "expected a JSON object at the top level");

  ModelConfig c;
  const std::string model_type = j.value("model_type", std::string("llama"));
  if (model_type != "llama" && model_type != "mistral" && model_type != "qwen2")
    fail(path, "model_type '" + model_type + "' is not supported; expected llama, mistral or qwen2");
  c.architecture = model_type;
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    fail(path, "hidden_act is " + j["hidden_act"].dump() + ", expected \"silu\" (SwiGLU)");
  c.vocab_size = get_int(j, path, "vocab_size");
  c.hidden_size = get_int(j, path, "hidden_size");
  c.intermediate_size = get_int(j, path, "intermediate_size");
  c.num_layers = get_int(j, path, "num_hidden_layers");
  c.num_heads = get_int(j, path, "num_attention_heads");
  c.num_kv_heads = get_int_or(j, path, "num_key_value_heads", c.num_heads);
  c.head_dim = c.num_heads > 0 ? get_int_or(j, path, "head_dim", c.hidden_size / c.num_heads) : 0;
  c.rms_norm_eps = get_double_or(j, path, "rms_norm_eps", 1e-6);
  c.max_position = get_int(j, path, "max_position_embeddings");
  c.tie_word_embeddings = get_bool_or(j, path, "tie_word_embeddings", false);
  // transformers: Qwen2 has q/k/v biases always and no o_proj bias; Llama's attention_bias gives all four
  // projections one; Mistral has none, whatever the key says.
  const bool llama_bias = model_type == "llama" && get_bool_or(j, path, "attention_bias", false);
  c.attention_bias = model_type == "qwen2" || llama_bias;
  c.attention_output_bias = llama_bias;
  if (get_bool_or(j, path, "mlp_bias", false))
    fail(path, "mlp_bias = true is not supported (no Llama-family model in scope uses it)");
  c.bos_token_id = get_token_id(j, path, "bos_token_id");
  c.eos_token_id = get_token_id(j, path, "eos_token_id");
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) c.torch_dtype = j["torch_dtype"];
  if (j.contains("dtype") && j["dtype"].is_string()) c.torch_dtype = j["dtype"];

  // Sliding window: Mistral applies it whenever set; Qwen2 only with use_sliding_window.
  const bool window_on = model_type == "mistral" || get_bool_or(j, path, "use_sliding_window", false);
  if (window_on && j.contains("sliding_window") && !j["sliding_window"].is_null())
    c.sliding_window = get_int(j, path, "sliding_window");
  if (model_type == "qwen2" && c.sliding_window) {
    // Qwen2 slides only in layers >= max_window_layers; uio supports the all-layers case alone.
    if (get_int_or(j, path, "max_window_layers", 0) != 0)
      fail(path, "Qwen2 with use_sliding_window and max_window_layers != 0 (per-layer windows) is not supported");
  }

  // RoPE: transformers 5 writes rope_parameters (with rope_theta inside); older files rope_scaling + rope_theta.
  c.rope_theta = get_double_or(j, path, "rope_theta", 10000.0);
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    c.rope_scaling = parse_rope(j["rope_parameters"], path, "rope_parameters");
    c.rope_theta = get_double_or(j["rope_parameters"], path, "rope_theta", c.rope_theta);
  } else if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    c.rope_scaling = parse_rope(j["rope_scaling"], path, "rope_scaling");
  } else if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    fail(path, "key 'rope_scaling' is a " + type_name(j["rope_scaling"]) + ", expected an object or null");
  }
  if (c.rope_scaling.original_max_position == 0) c.rope_scaling.original_max_position = c.max_position;
  c.validate(path);
  return c;
}

}  // namespace

RopeKind parse_rope_kind(const std::string& name) {
  for (auto kind :
       {RopeKind::none, RopeKind::linear, RopeKind::ntk, RopeKind::dynamic, RopeKind::yarn, RopeKind::llama3})
    if (name == rope_kind_name(kind)) return kind;
  throw std::invalid_argument("RoPE scaling '" + name + "' is not one of none, linear, ntk, dynamic, yarn, llama3");
}

const char* rope_kind_name(RopeKind kind) {
  switch (kind) {
    case RopeKind::none: return "none";
    case RopeKind::linear: return "linear";
    case RopeKind::ntk: return "ntk";
    case RopeKind::dynamic: return "dynamic";
    case RopeKind::yarn: return "yarn";
    case RopeKind::llama3: return "llama3";
  }
  return "?";
}

}  // namespace uio::model
