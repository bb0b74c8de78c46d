// model/gguf_names.cpp — the tables (as data) from llama.cpp's GGUF names and keys to uio's, and the
// loader of one HF-named tensor. Facts from llama.cpp's convert_hf_to_gguf.py and gguf-py constants:
// LlamaModel permutes q_proj/k_proj rows (weights and biases) for ggml's interleaved RoPE; Qwen2Model
// does not (its graph uses NeoX RoPE, HF's rotate_half layout). Llama-3 RoPE scaling is stored as a
// `rope_freqs.weight` tensor of per-frequency factors instead of metadata keys.
#include "model/gguf_names.h"

#include <cmath>
#include <stdexcept>

#include <torch/torch.h>

namespace uio::model {
namespace {

const std::vector<GgufTensorName> kTensorNames = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
    {"blk.{bid}.attn_norm.weight", "model.layers.{bid}.input_layernorm.weight"},
    {"blk.{bid}.attn_q.weight", "model.layers.{bid}.self_attn.q_proj.weight"},
    {"blk.{bid}.attn_k.weight", "model.layers.{bid}.self_attn.k_proj.weight"},
    {"blk.{bid}.attn_v.weight", "model.layers.{bid}.self_attn.v_proj.weight"},
    {"blk.{bid}.attn_q.bias", "model.layers.{bid}.self_attn.q_proj.bias"},
    {"blk.{bid}.attn_k.bias", "model.layers.{bid}.self_attn.k_proj.bias"},
    {"blk.{bid}.attn_v.bias", "model.layers.{bid}.self_attn.v_proj.bias"},
    {"blk.{bid}.attn_output.weight", "model.layers.{bid}.self_attn.o_proj.weight"},
    {"blk.{bid}.attn_output.bias", "model.layers.{bid}.self_attn.o_proj.bias"},
    {"blk.{bid}.ffn_norm.weight", "model.layers.{bid}.post_attention_layernorm.weight"},
    {"blk.{bid}.ffn_gate.weight", "model.layers.{bid}.mlp.gate_proj.weight"},
    {"blk.{bid}.ffn_up.weight", "model.layers.{bid}.mlp.up_proj.weight"},
    {"blk.{bid}.ffn_down.weight", "model.layers.{bid}.mlp.down_proj.weight"},
};

// `{arch}.<suffix>` keys and where they land in ModelConfig.
struct ArchKey {
  const char* suffix;
  bool required;
  void (*apply)(ModelConfig& c, const format::GgufFile& f, const std::string& key);
};

const ArchKey kArchKeys[] = {
    {"context_length", true,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) { c.max_position = f.get_int(k); }},
    {"embedding_length", true,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) { c.hidden_size = f.get_int(k); }},
    {"block_count", true,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) { c.num_layers = f.get_int(k); }},
    {"feed_forward_length", true,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) { c.intermediate_size = f.get_int(k); }},
    {"attention.head_count", true,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) { c.num_heads = f.get_int(k); }},
    {"attention.head_count_kv", false,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) { c.num_kv_heads = f.get_int(k); }},
    {"attention.key_length", false,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) { c.head_dim = f.get_int(k); }},
    {"attention.layer_norm_rms_epsilon", true,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) { c.rms_norm_eps = f.get_float(k); }},
    {"attention.sliding_window", false,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) { c.sliding_window = f.get_int(k); }},
    {"vocab_size", false,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) { c.vocab_size = f.get_int(k); }},
    {"rope.freq_base", false,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) { c.rope_theta = f.get_float(k); }},
    {"rope.scaling.factor", false,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) { c.rope_scaling.factor = f.get_float(k); }},
    {"rope.scaling.original_context_length", false,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) {
       c.rope_scaling.original_max_position = f.get_int(k);
     }},
    {"rope.scaling.yarn_beta_fast", false,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) {
       c.rope_scaling.beta_fast = f.get_float(k);
     }},
    {"rope.scaling.yarn_beta_slow", false,
     [](ModelConfig& c, const format::GgufFile& f, const std::string& k) {
       c.rope_scaling.beta_slow = f.get_float(k);
     }},
};

const char* kBosKey = "tokenizer.ggml.bos_token_id";
const char* kEosKey = "tokenizer.ggml.eos_token_id";
const char* kTokensKey = "tokenizer.ggml.tokens";

[[noreturn]] void fail(const format::GgufFile& f, const std::string& what) {
  throw std::invalid_argument(f.path() + ": " + what);
}

// Matches `name` against a "{bid}" pattern; fills `bid` with the digits it stands for.
bool match(const std::string& pattern, const std::string& name, std::string* bid) {
  const auto at = pattern.find("{bid}");
  if (at == std::string::npos) return pattern == name;
  const std::string prefix = pattern.substr(0, at), suffix = pattern.substr(at + 5);
  if (name.size() <= prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  *bid = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  for (char ch : *bid)
    if (ch < '0' || ch > '9') return false;
  return true;
}

std::string fill(const std::string& pattern, const std::string& bid) {
  std::string out = pattern;
  const auto at = out.find("{bid}");
  return at == std::string::npos ? out : out.replace(at, 5, bid);
}

std::optional<std::string> translate(const std::string& name, bool from_gguf) {
  std::string bid;
  for (const auto& row : kTensorNames)
    if (match(from_gguf ? row.gguf : row.hf, name, &bid)) return fill(from_gguf ? row.hf : row.gguf, bid);
  return std::nullopt;
}

// Llama-3's frequency-dependent RoPE factors (transformers' `_compute_llama3_parameters`).
std::vector<double> llama3_factors(const ModelConfig& c) {
  const auto& s = c.rope_scaling;
  const double old_ctx = static_cast<double>(s.original_max_position);
  const double low_wavelen = old_ctx / s.low_freq_factor, high_wavelen = old_ctx / s.high_freq_factor;
  std::vector<double> out;
  for (int64_t i = 0; i < c.head_dim; i += 2) {
    const double freq = 1.0 / std::pow(c.rope_theta, static_cast<double>(i) / static_cast<double>(c.head_dim));
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < high_wavelen)
      out.push_back(1.0);
    else if (wavelen > low_wavelen)
      out.push_back(s.factor);
    else {
      const double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      out.push_back(1.0 / ((1 - smooth) / s.factor + smooth));
    }
  }
  return out;
}

// llama.cpp keeps Llama-3 scaling only as the factors; uio's RoPE wants (factor, low, high, original
// window). Every Llama-3.x release uses low 1, high 4, window 8192: assume those, and accept them
// only when they reproduce the stored factors.
void read_llama3_rope(const format::GgufFile& f, const std::string& arch, ModelConfig& c) {
  const torch::Tensor stored = f.tensor("rope_freqs.weight").to(torch::kDouble).flatten();
  if (stored.numel() != c.head_dim / 2)
    fail(f, "tensor 'rope_freqs.weight' has " + std::to_string(stored.numel()) +
                " factors, expected head_dim / 2 = " + std::to_string(c.head_dim / 2));
  const double factor = stored.max().item<double>();
  if (factor == 1.0 && stored.min().item<double>() == 1.0) return;  // no scaling
  c.rope_scaling.type = RopeKind::llama3;
  c.rope_scaling.factor = factor;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  const std::string orig_key = arch + ".rope.scaling.original_context_length";
  c.rope_scaling.original_max_position = f.has(orig_key) ? f.get_int(orig_key) : 8192;
  const auto expected = torch::tensor(llama3_factors(c), torch::kDouble);
  if (!torch::allclose(stored, expected, 1e-4, 0.0))
    fail(f, "tensor 'rope_freqs.weight' holds RoPE factors that Llama-3 scaling with factor " + std::to_string(factor) +
                ", low_freq_factor 1, high_freq_factor 4 and original window " +
                std::to_string(c.rope_scaling.original_max_position) +
                " does not reproduce; uio cannot recover other parameters (load the HF checkpoint instead)");
}

}  // namespace

const std::vector<GgufTensorName>& gguf_tensor_names() { return kTensorNames; }

std::optional<std::string> hf_name_from_gguf(const std::string& gguf_name) { return translate(gguf_name, true); }
std::optional<std::string> gguf_name_from_hf(const std::string& hf_name) { return translate(hf_name, false); }

ModelConfig config_from_gguf(const format::GgufFile& f) {
  ModelConfig c;
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama" && arch != "qwen2")
    fail(f, "metadata key 'general.architecture' is '" + arch + "'; uio reads llama and qwen2 GGUF files");
  c.architecture = arch;
  c.num_kv_heads = -1;
  c.head_dim = -1;
  for (const auto& key : kArchKeys) {
    const std::string full = arch + "." + key.suffix;
    if (f.has(full))
      key.apply(c, f, full);
    else if (key.required)
      fail(f, "missing metadata key '" + full + "'; is this a complete llama.cpp GGUF?");
  }
  if (c.num_heads <= 0)
    fail(f, "metadata key '" + arch + ".attention.head_count' is " + std::to_string(c.num_heads) + ", expected > 0");
  if (c.num_kv_heads < 0) c.num_kv_heads = c.num_heads;
  if (c.head_dim < 0) c.head_dim = c.hidden_size / c.num_heads;
  const std::string rope_dim_key = arch + ".rope.dimension_count";
  if (f.has(rope_dim_key) && f.get_int(rope_dim_key) != c.head_dim)
    fail(f, "metadata key '" + rope_dim_key + "' is " + std::to_string(f.get_int(rope_dim_key)) +
                ", but uio rotates whole heads (head_dim " + std::to_string(c.head_dim) +
                "); partial RoPE is not supported");

  // Vocabulary: the explicit key, else the token list, else the embedding's rows.
  if (c.vocab_size == 0 && f.has(kTokensKey)) c.vocab_size = static_cast<int64_t>(f.array_size(kTokensKey));
  if (!f.has_tensor("token_embd.weight")) fail(f, "no tensor 'token_embd.weight' (the token embeddings)");
  const auto embed_shape = f.tensor_info("token_embd.weight").shape();
  if (c.vocab_size == 0 && embed_shape.size() == 2) c.vocab_size = embed_shape[0];
  if (embed_shape != std::vector<int64_t>{c.vocab_size, c.hidden_size})
    fail(f, "tensor 'token_embd.weight' has shape [" +
                (embed_shape.empty() ? std::string() : std::to_string(embed_shape[0])) +
                (embed_shape.size() > 1 ? ", " + std::to_string(embed_shape[1]) : std::string()) +
                "], metadata expects [" + std::to_string(c.vocab_size) + ", " + std::to_string(c.hidden_size) +
                "] (vocab_size, embedding_length)");
  if (f.has(kBosKey)) c.bos_token_id = f.get_int(kBosKey);
  if (f.has(kEosKey)) c.eos_token_id = f.get_int(kEosKey);

  // RoPE scaling: llama.cpp's types none | linear | yarn | longrope; Llama-3 via rope_freqs.weight.
  const std::string scaling_key = arch + ".rope.scaling.type";
  const std::string scaling = f.has(scaling_key) ? f.get_string(scaling_key) : "none";
  if (scaling != "none" && scaling != "linear" && scaling != "yarn")
    fail(f, "metadata key '" + scaling_key + "' is '" + scaling + "', expected none, linear or yarn");
  c.rope_scaling.type = parse_rope_kind(scaling);
  if (scaling == "none" && f.has_tensor("rope_freqs.weight")) read_llama3_rope(f, arch, c);
  if (c.rope_scaling.original_max_position == 0) c.rope_scaling.original_max_position = c.max_position;

  c.tie_word_embeddings = !f.has_tensor("output.weight");
  c.attention_bias = arch == "qwen2" || f.has_tensor("blk.0.attn_q.bias");
  c.attention_output_bias = arch == "llama" && f.has_tensor("blk.0.attn_output.bias");
  const uint32_t embed_type = f.tensor_info("token_embd.weight").type;
  c.torch_dtype = embed_type == 1 ? "float16" : embed_type == 30 ? "bfloat16" : "float32";  // quantised -> fp32
  c.validate(f.path());
  return c;
}

std::vector<std::string> hf_tensor_names(const ModelConfig& c) {
  std::vector<std::string> out = {"model.embed_tokens.weight"};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.push_back(p + "input_layernorm.weight");
    for (const char* proj : {"q_proj", "k_proj", "v_proj"}) {
      out.push_back(p + "self_attn." + proj + ".weight");
      if (c.attention_bias) out.push_back(p + "self_attn." + proj + ".bias");
    }
    out.push_back(p + "self_attn.o_proj.weight");
    if (c.attention_output_bias) out.push_back(p + "self_attn.o_proj.bias");
    out.push_back(p + "post_attention_layernorm.weight");
    for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) out.push_back(p + "mlp." + proj + ".weight");
  }
  out.push_back("model.norm.weight");
  if (!c.tie_word_embeddings) out.push_back("lm_head.weight");
  return out;
}

std::vector<int64_t> hf_tensor_shape(const ModelConfig& c, const std::string& hf_name) {
  const int64_t C = c.hidden_size, D = c.head_dim;
  auto ends_with = [&](const std::string& suffix) {
    return hf_name.size() >= suffix.size() &&
           hf_name.compare(hf_name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with("q_proj.weight")) return {c.num_heads * D, C};
  if (ends_with("k_proj.weight") || ends_with("v_proj.weight")) return {c.num_kv_heads * D, C};
  if (ends_with("q_proj.bias")) return {c.num_heads * D};
  if (ends_with("k_proj.bias") || ends_with("v_proj.bias")) return {c.num_kv_heads * D};
  if (ends_with("o_proj.weight")) return {C, c.num_heads * D};
  if (ends_with("o_proj.bias")) return {C};
  if (ends_with("gate_proj.weight") || ends_with("up_proj.weight")) return {c.intermediate_size, C};
  if (ends_with("down_proj.weight")) return {C, c.intermediate_size};
  if (ends_with("layernorm.weight") || hf_name == "model.norm.weight") return {C};
  return {c.vocab_size, C};  // embed_tokens, lm_head
}

torch::Tensor permute_qk_rows(const torch::Tensor& w, int64_t n_heads) {
  TORCH_CHECK(w.dim() >= 1 && n_heads > 0 && w.size(0) % (2 * n_heads) == 0, "permute_qk_rows: ", w.size(0),
              " rows do not split into ", n_heads, " heads of an even size");
  auto sizes = w.sizes().vec();
  std::vector<int64_t> split = {n_heads, 2, w.size(0) / n_heads / 2};
  split.insert(split.end(), sizes.begin() + 1, sizes.end());
  return w.reshape(split).transpose(1, 2).reshape(sizes).contiguous();  // [H, 2, D/2, ...] -> [H, D/2, 2, ...]
}

torch::Tensor unpermute_qk_rows(const torch::Tensor& w, int64_t n_heads) {
  TORCH_CHECK(w.dim() >= 1 && n_heads > 0 && w.size(0) % (2 * n_heads) == 0, "unpermute_qk_rows: ", w.size(0),
              " rows do not split into ", n_heads, " heads of an even size");
  auto sizes = w.sizes().vec();
  std::vector<int64_t> split = {n_heads, w.size(0) / n_heads / 2, 2};
  split.insert(split.end(), sizes.begin() + 1, sizes.end());
  return w.reshape(split).transpose(1, 2).reshape(sizes).contiguous();  // [H, D/2, 2, ...] -> [H, 2, D/2, ...]
}

torch::Tensor load_gguf_tensor_as_hf(const format::GgufFile& f, const std::string& hf_name, const ModelConfig& c,
                                     torch::ScalarType dtype) {
  const auto gguf_name = gguf_name_from_hf(hf_name);
  if (!gguf_name) fail(f, "no GGUF tensor corresponds to HF tensor '" + hf_name + "'");
  if (hf_name == "lm_head.weight" && c.tie_word_embeddings)
    fail(f, "'lm_head.weight' is tied to 'model.embed_tokens.weight' (the file has no output.weight)");
  if (!f.has_tensor(*gguf_name)) fail(f, "no tensor '" + *gguf_name + "' (HF '" + hf_name + "')");

  const std::vector<int64_t> expected = hf_tensor_shape(c, hf_name);
  int64_t permute_heads = 0;
  auto ends_with = [&](const std::string& suffix) {
    return hf_name.size() >= suffix.size() &&
           hf_name.compare(hf_name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with("q_proj.weight") || ends_with("q_proj.bias")) permute_heads = c.num_heads;
  if (ends_with("k_proj.weight") || ends_with("k_proj.bias")) permute_heads = c.num_kv_heads;

  const auto& info = f.tensor_info(*gguf_name);
  if (info.shape() != expected) {
    auto show = [](const std::vector<int64_t>& s) {
      std::string out = "[";
      for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
      return out + "]";
    };
    fail(f, "tensor '" + *gguf_name + "' (HF '" + hf_name + "') has shape " + show(info.shape()) +
                ", the config expects " + show(expected));
  }
  torch::Tensor t = f.tensor(*gguf_name, torch::kFloat);
  if (c.architecture == "llama" && permute_heads > 0) t = unpermute_qk_rows(t, permute_heads);
  return dtype == torch::kFloat ? t : t.to(dtype);
}

}  // namespace uio::model
