// tests/gguf_test.cpp — the GGUF reader against files written by gguf-py (tests/reference/gguf_ref.py):
// metadata of every value type, dequantisation bit for bit against gguf.quants.dequantize, llama.cpp
// names and metadata -> ModelConfig, the Q/K row permutation against transformers' reverse, and
// clear errors for broken files.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "data/format/dequant.h"
#include "data/format/gguf.h"
#include "model/gguf_names.h"
#include "tests/test_util.h"

using uio::format::GgufFile;
using uio::format::GgufValueType;

namespace {

std::string ref_path(const std::string& name) { return (uio::test::testdata("gguf_ref") / name).string(); }

nlohmann::json manifest() {
  return nlohmann::json::parse(uio::test::read_file(uio::test::testdata("gguf_ref") / "manifest.json"));
}

// A raw float32 reference file as a tensor of `shape`.
torch::Tensor load_ref(const std::string& file, const std::vector<int64_t>& shape) {
  const std::string bytes = uio::test::read_file(uio::test::testdata("gguf_ref") / file);
  auto t = torch::empty(shape, torch::kFloat);
  EXPECT_EQ(bytes.size(), static_cast<size_t>(t.numel()) * 4) << file;
  std::memcpy(t.data_ptr<float>(), bytes.data(), std::min<size_t>(bytes.size(), t.numel() * 4));
  return t;
}

// Bit-for-bit equality (NaN-safe, -0 != +0), with the first differing element in the message.
::testing::AssertionResult bits_equal(const torch::Tensor& got, const torch::Tensor& want) {
  if (got.sizes() != want.sizes())
    return ::testing::AssertionFailure() << "shape " << got.sizes() << " vs " << want.sizes();
  auto g = got.contiguous().view(torch::kInt32).flatten(), w = want.contiguous().view(torch::kInt32).flatten();
  auto diff = torch::nonzero(g != w);
  if (diff.size(0) == 0) return ::testing::AssertionSuccess();
  const int64_t i = diff[0].item<int64_t>();
  return ::testing::AssertionFailure() << diff.size(0) << " elements differ; first at flat index " << i << ": got "
                                       << got.flatten()[i].item<float>() << ", want "
                                       << want.flatten()[i].item<float>();
}

// Expects `fn` to throw std::exception whose message contains every one of `needles`.
template <class Fn>
void expect_error(Fn fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing '" << needles.front() << "'";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "missing '" << n << "' in: " << msg;
  }
}

// Hand-built GGUF bytes, for inputs gguf-py refuses to write.
struct GgufBytes {
  std::string b;
  template <class T>
  GgufBytes& put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  GgufBytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    b += s;
    return *this;
  }
  GgufBytes& header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    b += "GGUF";
    return put(version).put(n_tensors).put(n_kv);
  }
  GgufBytes& tensor_info(const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    str(name).put<uint32_t>(dims.size());
    for (auto d : dims) put(d);
    return put(type).put(offset);
  }
  GgufBytes& pad_to(size_t alignment) {
    while (b.size() % alignment) b += '\0';
    return *this;
  }
  std::string write() const {
    auto path = uio::test::scratch_dir() / "hand.gguf";
    uio::test::write_file(path, b);
    return path.string();
  }
};

}  // namespace

TEST(Gguf, ReadsMetadataOfEveryValueType) {
  uio::format::GgufFile f(ref_path("types.gguf"));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.value("test.u8").type, uio::format::GgufValueType::UINT8);
  EXPECT_EQ(f.get_int("test.u8"), 200);
  EXPECT_EQ(f.get_int("test.i8"), -100);
  EXPECT_EQ(f.get_int("test.u16"), 60000);
  EXPECT_EQ(f.get_int("test.i16"), -30000);
  EXPECT_EQ(f.get_int("test.u32"), 4000000000LL);
  EXPECT_EQ(f.get_int("test.i32"), -2000000000LL);
  EXPECT_EQ(f.get_float("test.f32"), static_cast<double>(0.1f));
  EXPECT_TRUE(f.get_bool("test.bool"));
  EXPECT_EQ(f.get_string("test.string"), "h\xc3\xa9llo w\xc3\xb6rld");
  EXPECT_EQ(f.value("test.u64").type, uio::format::GgufValueType::UINT64);
  EXPECT_EQ(f.get_int("test.u64"), int64_t(1) << 60);
  EXPECT_EQ(f.get_int("test.i64"), -(int64_t(1) << 60));
  EXPECT_EQ(f.get_float("test.f64"), 0.1);
  EXPECT_EQ(f.get_int_array("test.arr_u8"), (std::vector<int64_t>{1, 2, 255}));
  EXPECT_EQ(f.get_int_array("test.arr_i16"), (std::vector<int64_t>{-5, 7}));
  EXPECT_EQ(f.get_int_array("test.arr_u64"), (std::vector<int64_t>{int64_t(1) << 40, 3}));
  EXPECT_EQ(f.get_float_array("test.arr_f64"), (std::vector<float>{0.25f, -1.5f}));
  EXPECT_EQ(f.value("test.arr_bool").to_string(), "[true, false, true] (3 x BOOL)");
  const auto& nested = std::get<uio::format::GgufArray>(f.value("test.nested").data);
  ASSERT_EQ(nested.element_type, uio::format::GgufValueType::ARRAY);
  ASSERT_EQ(nested.items.size(), 2u);
  EXPECT_EQ(nested.items[0].to_string(), "[1, 2] (2 x INT32)");
  EXPECT_EQ(nested.items[1].to_string(), "[3] (1 x INT32)");

  // Tokenizer metadata, as the tokenizer helper will read it.
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens"), (std::vector<std::string>{"<s>", "</s>", "a", "b", "ab"}));
  EXPECT_EQ(f.get_float_array("tokenizer.ggml.scores"), (std::vector<float>{0.0f, -1.0f, -2.5f, -3.0f, -4.0f}));
  EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type"), (std::vector<int64_t>{3, 3, 1, 1, 1}));
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.merges"), (std::vector<std::string>{"a b"}));
  EXPECT_EQ(f.get_int("tokenizer.ggml.bos_token_id"), 0);
  EXPECT_EQ(f.get_int("tokenizer.ggml.eos_token_id"), 1);
  EXPECT_TRUE(f.get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(f.get_string("tokenizer.chat_template"), "{% for m in messages %}{{ m['content'] }}{% endfor %}");
  EXPECT_EQ(f.array_size("tokenizer.ggml.tokens"), 5u);
  EXPECT_NE(uio::format::describe_gguf(f).find("tokenizer.ggml.tokens (ARRAY) = [\"<s>\", \"</s>\""),
            std::string::npos);
}

TEST(Gguf, WronglyTypedOrMissingKeysNameFileAndKey) {
  const auto path = ref_path("types.gguf");
  uio::format::GgufFile f(path);
  expect_error([&] { f.get_int("test.string"); }, {path, "'test.string' is STRING", "expected an integer"});
  expect_error([&] { f.get_string("test.u8"); }, {path, "'test.u8' is UINT8", "expected STRING"});
  expect_error([&] { f.get_string_array("tokenizer.ggml.scores"); }, {path, "expected an ARRAY of STRING"});
  expect_error([&] { f.get_float("no.such.key"); }, {path, "missing metadata key 'no.such.key'"});
  expect_error([&] { f.tensor("no_such_tensor"); }, {path, "no tensor named 'no_such_tensor'"});
}

TEST(Gguf, DequantisesEveryTypeBitForBitLikeGgufPy) {
  std::map<std::string, std::unique_ptr<uio::format::GgufFile>> files;
  std::set<std::string> types;
  for (const auto& e : manifest()) {
    const std::string file = e["file"], name = e["tensor"], type = e["type"];
    auto& f = files[file];
    if (!f) f = std::make_unique<uio::format::GgufFile>(ref_path(file));
    const std::vector<int64_t> shape = e["shape"];
    const auto& info = f->tensor_info(name);
    EXPECT_EQ(info.type_name(), type) << name;
    EXPECT_EQ(info.shape(), shape) << name;
    EXPECT_TRUE(bits_equal(f->tensor(name), load_ref(e["ref"], shape))) << file << ": " << name << " (" << type << ")";
    types.insert(type);
  }
  for (const char* t : {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K"})
    EXPECT_TRUE(types.count(t)) << "no reference tensor of type " << t;
}

TEST(Gguf, ReadsVersion2WithCustomAlignment) {
  uio::format::GgufFile f(ref_path("v2.gguf"));
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.get_string("test.string"), "version two");
  EXPECT_EQ(f.data_offset() % 64, 0u);
  ASSERT_GT(f.tensors().size(), 10u);
  for (const auto& t : f.tensors()) EXPECT_EQ((t.offset - f.data_offset()) % 64, 0u) << t.name;
  EXPECT_EQ(f.tensor_info("v2.q8_0_3d").dims, (std::vector<int64_t>{64, 3, 2}));  // ne[0] first
}

TEST(Gguf, Bf16OutputOfBf16TensorKeepsTheStoredBits) {
  uio::format::GgufFile f(ref_path("types.gguf"));
  const auto& info = f.tensor_info("bf16");
  auto t = f.tensor("bf16", torch::kBFloat16);
  ASSERT_EQ(t.scalar_type(), torch::kBFloat16);
  ASSERT_EQ(static_cast<uint64_t>(t.numel()) * 2, info.nbytes);
  EXPECT_EQ(std::memcmp(t.data_ptr(), f.tensor_data(info), info.nbytes), 0);
  // Quantised sources are computed in fp32, then rounded once.
  EXPECT_TRUE(torch::equal(f.tensor("q4_k_bits", torch::kBFloat16), f.tensor("q4_k_bits").to(torch::kBFloat16)));
}

TEST(Gguf, Fp16ConversionCoversSubnormalsInfinitiesAndSignedZero) {
  using uio::format::fp16_to_fp32;
  EXPECT_EQ(uio::format::fp16_to_fp32(0x3C00), 1.0f);
  EXPECT_EQ(uio::format::fp16_to_fp32(0xC000), -2.0f);
  EXPECT_EQ(uio::format::fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(uio::format::fp16_to_fp32(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(uio::format::fp16_to_fp32(0x7BFF), 65504.0f);
  EXPECT_TRUE(std::isinf(uio::format::fp16_to_fp32(0xFC00)) && uio::format::fp16_to_fp32(0xFC00) < 0);
  EXPECT_TRUE(std::isnan(uio::format::fp16_to_fp32(0x7E00)));
  EXPECT_TRUE(std::signbit(uio::format::fp16_to_fp32(0x8000)));
  // Every half agrees with libtorch's conversion (NaNs aside).
  for (uint32_t h = 0; h < 65536; ++h) {
    const float want = static_cast<float>(c10::Half(static_cast<uint16_t>(h), c10::Half::from_bits()));
    const float got = uio::format::fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(want)) continue;
    ASSERT_EQ(std::memcmp(&got, &want, 4), 0) << "half bits " << h;
  }
}

// ---- llama.cpp names and metadata ----

TEST(GgufNames, TensorNameTableTranslatesBothWays) {
  using uio::model::gguf_name_from_hf;
  using uio::model::hf_name_from_gguf;
  EXPECT_EQ(hf_name_from_gguf("blk.12.ffn_down.weight"), "model.layers.12.mlp.down_proj.weight");
  EXPECT_EQ(hf_name_from_gguf("blk.0.attn_norm.weight"), "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(hf_name_from_gguf("blk.3.ffn_norm.weight"), "model.layers.3.post_attention_layernorm.weight");
  EXPECT_EQ(hf_name_from_gguf("output.weight"), "lm_head.weight");
  EXPECT_EQ(hf_name_from_gguf("token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(gguf_name_from_hf("model.layers.7.self_attn.k_proj.bias"), "blk.7.attn_k.bias");
  EXPECT_EQ(gguf_name_from_hf("model.norm.weight"), "output_norm.weight");
  EXPECT_FALSE(hf_name_from_gguf("blk.x.attn_q.weight"));
  EXPECT_FALSE(hf_name_from_gguf("blk..attn_q.weight"));
  EXPECT_FALSE(hf_name_from_gguf("rope_freqs.weight"));
  for (const auto& row : uio::model::gguf_tensor_names()) {
    std::string g = row.gguf, h = row.hf;
    if (g.find("{bid}") != std::string::npos) g.replace(g.find("{bid}"), 5, "31"), h.replace(h.find("{bid}"), 5, "31");
    EXPECT_EQ(hf_name_from_gguf(g), h);
    EXPECT_EQ(gguf_name_from_hf(h), g);
  }
}

TEST(GgufNames, UnpermuteInvertsLlamaCppPermutation) {
  torch::manual_seed(uio::test::test_seed());
  for (auto [heads, head_dim, cols] : {std::tuple<int64_t, int64_t, int64_t>{4, 16, 24}, {2, 8, 5}, {1, 4, 3}}) {
    auto w = torch::randn({heads * head_dim, cols}, torch::kDouble);
    auto p = uio::model::permute_qk_rows(w, heads);
    EXPECT_FALSE(torch::equal(p, w));
    // llama.cpp's layout: row h*D + 2i + s holds HF row h*D + s*D/2 + i.
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < head_dim / 2; ++i)
        for (int64_t s = 0; s < 2; ++s)
          ASSERT_TRUE(torch::equal(p[h * head_dim + 2 * i + s], w[h * head_dim + s * head_dim / 2 + i]));
    EXPECT_TRUE(torch::equal(uio::model::unpermute_qk_rows(p, heads), w));
    auto bias = torch::randn({heads * head_dim}, torch::kDouble);
    EXPECT_TRUE(torch::equal(uio::model::unpermute_qk_rows(uio::model::permute_qk_rows(bias, heads), heads), bias));
  }
}

TEST(GgufNames, LlamaConfigComesFromMetadata) {
  const auto path = ref_path("llama.gguf");
  uio::format::GgufFile f(path);
  auto c = uio::model::config_from_gguf(f);
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.vocab_size, 40);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 96);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.max_position, 256);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, static_cast<double>(1e-6f));
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.rope_scaling.type, uio::model::RopeKind::llama3);  // recognised from rope_freqs.weight
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.original_max_position, 8192);

  uio::format::GgufFile q(ref_path("qwen2.gguf"));
  auto cq = uio::model::config_from_gguf(q);
  EXPECT_EQ(cq.architecture, "qwen2");
  EXPECT_TRUE(cq.tie_word_embeddings);
  EXPECT_TRUE(cq.attention_bias);
  EXPECT_EQ(cq.rope_scaling.type, uio::model::RopeKind::none);
  EXPECT_EQ(uio::model::hf_tensor_names(cq).size(), 1 + 2 * 12 + 1u);

  const auto types = ref_path("types.gguf");
  expect_error([&] { uio::model::config_from_gguf(uio::format::GgufFile(types)); },
               {types, "missing metadata key 'llama.context_length'"});
}

TEST(GgufNames, HfTensorsMatchTransformersReversePermutation) {
  const auto refs = manifest();
  for (const char* file : {"llama.gguf", "qwen2.gguf"}) {
    uio::format::GgufFile f(ref_path(file));
    const auto c = uio::model::config_from_gguf(f);
    std::map<std::string, nlohmann::json> by_hf;
    for (const auto& e : refs)
      if (e["file"] == file && e.contains("hf_name")) by_hf[e["hf_name"]] = e;
    const auto names = uio::model::hf_tensor_names(c);
    EXPECT_EQ(names.size(), by_hf.size()) << file;
    for (const auto& name : names) {
      ASSERT_TRUE(by_hf.count(name)) << file << ": no reference for " << name;
      const auto& e = by_hf[name];
      const std::vector<int64_t> shape = e["shape"];
      auto t = uio::model::load_gguf_tensor_as_hf(f, name, c);
      EXPECT_TRUE(bits_equal(t, load_ref(e["hf_ref"], shape))) << file << ": " << name;
    }
    if (c.tie_word_embeddings)
      expect_error([&] { uio::model::load_gguf_tensor_as_hf(f, "lm_head.weight", c); }, {"tied"});
  }
  // Without the un-permutation llama's q_proj would come back in llama.cpp's row order.
  uio::format::GgufFile f(ref_path("llama.gguf"));
  EXPECT_FALSE(torch::equal(f.tensor("blk.1.attn_q.weight"),
                            uio::model::load_gguf_tensor_as_hf(f, "model.layers.1.self_attn.q_proj.weight",
                                                               uio::model::config_from_gguf(f))));
}

// ---- broken input ----

TEST(GgufErrors, NonGgufFileIsNamedAsSuch) {
  auto path = (uio::test::scratch_dir() / "model.safetensors").string();
  uio::test::write_file(path, std::string("\x08\x00\x00\x00\x00\x00\x00\x00{}      ", 16));
  expect_error([&] { uio::format::GgufFile f(path); }, {path, "not a GGUF file"});
  uio::test::write_file(path, "GG");
  expect_error([&] { uio::format::GgufFile f(path); }, {path, "not a GGUF file"});
  uio::test::write_file(path, "");
  expect_error([&] { uio::format::GgufFile f(path); }, {path, "not a GGUF file"});
  expect_error([&] { uio::format::GgufFile f(path + ".missing"); }, {path + ".missing", "cannot open"});
}

TEST(GgufErrors, TruncatedFileIsRejectedWhereverItIsCut) {
  const std::string bytes = uio::test::read_file(ref_path("llama.gguf"));
  size_t data_offset;
  {
    uio::format::GgufFile whole(ref_path("llama.gguf"));
    data_offset = whole.data_offset();
  }
  const auto path = (uio::test::scratch_dir() / "cut.gguf").string();
  // Header, metadata, tensor infos (every few bytes), then inside the data section.
  std::vector<size_t> cuts;
  for (size_t cut = 4; cut < data_offset; cut += 7) cuts.push_back(cut);
  for (size_t cut : {data_offset, data_offset + 100, bytes.size() / 2, bytes.size() - 1}) cuts.push_back(cut);
  for (size_t cut : cuts) {
    uio::test::write_file(path, bytes.substr(0, cut));
    SCOPED_TRACE("cut at byte " + std::to_string(cut) + " of " + std::to_string(bytes.size()));
    expect_error([&] { uio::format::GgufFile f(path); }, {path, "truncated"});
  }
  // Cut inside the data: the error names the tensor that runs past the end.
  uio::test::write_file(path, bytes.substr(0, bytes.size() - 1));
  expect_error([&] { uio::format::GgufFile f(path); }, {"tensor 'rope_freqs.weight'", "past the end of the file"});
}

TEST(GgufErrors, TensorPastEndOfFileIsNamed) {
  GgufBytes g;
  g.header(3, 1, 0).tensor_info("blk.0.attn_q.weight", {32, 2}, 8 /*Q8_0*/, 64).pad_to(32);
  g.b += std::string(2 * 34, '\x01');  // the tensor's 68 bytes sit at offset 0, the info says 64
  const auto path = g.write();
  expect_error([&] { uio::format::GgufFile f(path); },
               {path, "tensor 'blk.0.attn_q.weight'", "Q8_0", "past the end of the file"});
}

TEST(GgufErrors, UnknownGgmlTypeIsNamedWithTensorAndId) {
  GgufBytes g;
  g.header(3, 1, 0).tensor_info("token_embd.weight", {32, 2}, 99, 0).pad_to(32);
  g.b += std::string(256, '\x01');
  const auto path = g.write();
  expect_error([&] { uio::format::GgufFile f(path); }, {path, "tensor 'token_embd.weight'", "unknown ggml type id 99"});
}

TEST(GgufErrors, KnownTypeWithoutDequantiserIsRejectedOnRead) {
  GgufBytes g;
  g.header(3, 1, 0).tensor_info("w", {256, 1}, 13 /*Q5_K*/, 0).pad_to(32);
  g.b += std::string(176, '\x01');
  const auto path = g.write();
  uio::format::GgufFile f(path);
  EXPECT_EQ(f.tensor_info("w").type_name(), "Q5_K");
  expect_error([&] { f.tensor("w"); }, {path, "tensor 'w' is Q5_K", "cannot dequantise", "Q4_K"});
}

TEST(GgufErrors, AbsurdLengthsAreRejectedBeforeAllocating) {
  {
    GgufBytes g;
    g.header(3, 0, 1).put<uint64_t>(uint64_t(1) << 62).put<uint64_t>(0);  // key length, then 8 bytes
    const auto path = g.write();
    expect_error([&] { uio::format::GgufFile f(path); },
                 {path, "metadata entry #0", "claims 4611686018427387904 bytes"});
  }
  {
    GgufBytes g;
    g.header(3, 0, 1).str("general.name").put<uint32_t>(8).put<uint64_t>(uint64_t(1) << 40);  // string value
    const auto path = g.write();
    expect_error([&] { uio::format::GgufFile f(path); },
                 {path, "metadata key 'general.name'", "claims 1099511627776 bytes"});
  }
  {
    GgufBytes g;
    g.header(3, 0, 1).str("tokenizer.ggml.tokens").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(uint64_t(1) << 50);
    const auto path = g.write();
    expect_error([&] { uio::format::GgufFile f(path); },
                 {path, "'tokenizer.ggml.tokens'", "array of 1125899906842624 STRING items"});
  }
  {
    GgufBytes g;
    g.header(3, uint64_t(1) << 60, 0);
    const auto path = g.write();
    expect_error([&] { uio::format::GgufFile f(path); }, {path, "tensor count 1152921504606846976"});
  }
  {
    GgufBytes g;
    g.header(3, 1, 0).tensor_info("w", {32, 3, 4, 5, 6}, 0, 0);
    const auto path = g.write();
    expect_error([&] { uio::format::GgufFile f(path); }, {path, "tensor 'w'", "5 dimensions"});
  }
  {
    GgufBytes g;
    g.header(3, 1, 0).tensor_info("w", {33, 2}, 2 /*Q4_0*/, 0).pad_to(32);
    g.b += std::string(64, '\0');
    const auto path = g.write();
    expect_error([&] { uio::format::GgufFile f(path); },
                 {path, "tensor 'w'", "row length 33 is not a multiple of the block size 32"});
  }
}

TEST(GgufErrors, UnsupportedVersionsAreNamed) {
  for (auto [version, needle] : {std::pair<uint32_t, std::string>{1, "version 1 is not supported"},
                                 {0x03000000, "big-endian"},
                                 {7, "unsupported GGUF version 7"}}) {
    GgufBytes g;
    g.header(version, 0, 0);
    const auto path = g.write();
    expect_error([&] { uio::format::GgufFile f(path); }, {path, needle});
  }
}

namespace {

// Where tensor `name`'s info lies in `bytes` of a GGUF file: the offset of its ggml type field (the
// data offset follows it).
size_t type_field_of(const std::string& bytes, const std::string& name) {
  std::string needle(8, '\0');
  const uint64_t len = name.size();
  std::memcpy(needle.data(), &len, 8);
  needle += name;
  const size_t at = bytes.find(needle);
  EXPECT_NE(at, std::string::npos) << name;
  uint32_t n_dims = 0;
  std::memcpy(&n_dims, bytes.data() + at + needle.size(), 4);
  return at + needle.size() + 4 + 8 * n_dims;
}

template <class T>
void poke(std::string& bytes, size_t at, T value) {
  std::memcpy(bytes.data() + at, &value, sizeof(T));
}
template <class T>
T peek(const std::string& bytes, size_t at) {
  T value;
  std::memcpy(&value, bytes.data() + at, sizeof(T));
  return value;
}

}  // namespace

// The tensors of a GGUF file tile its data section: each starts where the one before it ends (rounded up
// to the alignment), none overlap, and the file ends with the last. A tensor whose type was changed to one
// of another block size, a flipped offset bit or two tensors at the same bytes are errors naming the tensor.
TEST(GgufErrors, TensorsThatDoNotTileTheDataSectionAreNamed) {
  const std::string good = uio::test::read_file(ref_path("llama.gguf"));
  const auto path = (uio::test::scratch_dir() / "edited.gguf").string();
  auto expect_edit_error = [&](const std::function<void(std::string&)>& edit, const std::vector<std::string>& needles) {
    std::string bytes = good;
    edit(bytes);
    uio::test::write_file(path, bytes);
    std::vector<std::string> all = {path};
    all.insert(all.end(), needles.begin(), needles.end());
    expect_error([&] { uio::format::GgufFile f(path); }, all);
  };
  const size_t down = type_field_of(good, "blk.0.ffn_down.weight");  // Q4_1
  ASSERT_EQ(peek<uint32_t>(good, down), 3u);
  // Q4_0 blocks are 18 bytes, Q4_1's 20: the tensor now ends early and leaves a hole.
  expect_edit_error([&](std::string& b) { poke<uint32_t>(b, down, 2); }, {"'blk.0.ffn_down.weight'", "Q4_0"});
  // Q5_1 blocks are 24 bytes: it runs into the next tensor.
  expect_edit_error([&](std::string& b) { poke<uint32_t>(b, down, 7); },
                    {"'blk.0.ffn_down.weight'", "Q5_1", "overlap"});
  // Offset bits: a low one breaks the alignment; a middle one moves it onto other tensors; a high one past the end.
  for (int bit : {0, 5, 9, 12, 40}) {
    SCOPED_TRACE("offset bit " + std::to_string(bit));
    expect_edit_error(
        [&](std::string& b) { poke<uint64_t>(b, down + 4, peek<uint64_t>(b, down + 4) ^ (uint64_t(1) << bit)); },
        {"'blk.0.ffn_down.weight'"});
  }
  // Two tensors at the same bytes.
  const size_t up = type_field_of(good, "blk.0.ffn_up.weight");
  expect_edit_error([&](std::string& b) { poke<uint64_t>(b, down + 4, peek<uint64_t>(b, up + 4)); },
                    {"blk.0.ffn_down.weight", "blk.0.ffn_up.weight", "overlap"});
  // Extra bytes after the last tensor.
  expect_edit_error([&](std::string& b) { b += std::string(64, '\0'); }, {"belong to no tensor"});
  EXPECT_NO_THROW(uio::format::GgufFile f(ref_path("llama.gguf")));
  EXPECT_NO_THROW(uio::format::GgufFile f(ref_path("types.gguf")));
  EXPECT_NO_THROW(uio::format::GgufFile f(ref_path("v2.gguf")));
}
