// tests/memory_test.cpp — the memory model's structure, by perturbation and by equivalence, on a tiny
// random model in float64: which tokens each memory token depends on, that decoders never look ahead
// or at later segments, that batching changes nothing, that zero adapters and no memory give the base
// model bit for bit, and that reading token by token equals the teacher-forced forward.
#include <sys/resource.h>

#include <cmath>
#include <functional>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/memory.h"
#include "model/memory_pass.h"
#include "model/memory_reader.h"
#include "model/memory_io.h"
#include "tests/test_util.h"

using namespace uio::model;

namespace {

struct Tiny {
  ModelConfig config;
  CausalLM base{nullptr};
  MemoryCompressor memory{nullptr};
};

// A 2-layer GQA model, l = 8, M = 2, every parameter random (adapters' B too, so they matter); decoder
// adapters on q, k, v, o when `decoder_rank` > 0 (beyond the paper).
Tiny make_tiny(const std::string& memory_rope = "none", int64_t max_position = 64, int64_t sink_tokens = 0,
               int64_t decoder_rank = 0) {
  torch::manual_seed(uio::test::test_seed());
  Tiny t;
  auto& c = t.config;
  c.vocab_size = 50, c.hidden_size = 32, c.intermediate_size = 48, c.num_layers = 2, c.num_heads = 4;
  c.num_kv_heads = 2, c.head_dim = 8, c.max_position = max_position, c.rope_theta = 1000.0;
  t.base = CausalLM(c, torch::TensorOptions().dtype(torch::kDouble));
  torch::NoGradGuard no_grad;
  for (auto& p : t.base->parameters()) p.normal_(0, 0.25), p.requires_grad_(false);
  MemoryOptions o;
  o.segment_len = 8, o.num_memory_tokens = 2, o.memory_rope = parse_rope_kind(memory_rope), o.memory_rope_factor = 2.0;
  o.sink_tokens = sink_tokens;
  o.encoder_lora = {4, 8.0, 0.0, {"q_proj", "v_proj"}};
  o.transfer_lora = {3, 5.0, 0.0, {"k_proj", "v_proj"}};
  if (decoder_rank > 0) o.decoder_lora = {decoder_rank, 6.0, 0.0, {"q_proj", "k_proj", "v_proj", "o_proj"}};
  t.memory = MemoryCompressor(c, o, torch::randn({c.hidden_size}));
  t.memory->to(torch::kDouble);
  for (auto& p : t.memory->parameters()) p.normal_(0, 0.3);
  return t;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

TEST(Memory, EncoderMaskAndPositionsFollowTheDesign) {
  auto mask = encoder_attention_mask(8, 2);
  auto pos = encoder_positions(8, 2);
  EXPECT_TRUE(torch::equal(pos, torch::tensor({0, 1, 2, 3, 4, 5, 6, 7, 4, 8}, torch::kInt64)));
  for (int64_t q = 0; q < 10; ++q)
    for (int64_t k = 0; k < 10; ++k) {
      bool want;
      if (q < 8)
        want = k < 8 && k <= q;  // ordinary: causal, never memory
      else if (k < 8)
        want = k < (q - 8 + 1) * 4;  // memory i: ordinary [0, (i+1) l/M)
      else
        want = k == q;  // and itself only
      EXPECT_EQ(mask[q][k].item<bool>(), want) << q << "," << k;
    }
}

TEST(Memory, MemoryTokenDependsOnOrdinaryTokenIffItIsInItsRange) {
  auto t = make_tiny();
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(50, {1, 8}, torch::kInt64);
  auto base = t.memory->encode(t.base, ids);
  for (int64_t j = 0; j < 8; ++j) {
    auto changed = ids.clone();
    changed[0][j] = (ids[0][j].item<int64_t>() + 7) % 50;
    auto h = t.memory->encode(t.base, changed);
    for (int64_t i = 0; i < 2; ++i) {
      // Layer 1's attention input: the output of a full layer that mixed in the attended tokens.
      const bool moved = max_diff(h[1][0][i], base[1][0][i]) > 1e-12;
      EXPECT_EQ(moved, j < (i + 1) * 4) << "memory " << i << ", token " << j;
    }
  }
}

TEST(Memory, DecodersNeverLookAheadAndSegmentsOnlyAffectLaterOnes) {
  auto t = make_tiny();
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(50, {8 * 3 + 5}, torch::kInt64);  // 3 segments + residual of 5
  auto logits = document_logits(t.base, t.memory, ids, 2);
  ASSERT_EQ(logits.size(0), 29);
  for (int64_t pos : {3L, 12L, 26L}) {  // change one token
    auto changed = ids.clone();
    changed[pos] = (ids[pos].item<int64_t>() + 11) % 50;
    auto other = document_logits(t.base, t.memory, changed, 2);
    const int64_t segment = pos / 8;
    for (int64_t q = 0; q < 29; ++q) {
      const bool moved = max_diff(other[q], logits[q]) > 1e-12;
      // Same segment: only tokens at or after pos. Later segments: all (through memory). Earlier: none.
      const bool expect = q / 8 == segment ? q >= pos : q / 8 > segment;
      EXPECT_EQ(moved, expect) << "changed " << pos << ", query " << q;
    }
  }
}

TEST(Memory, BatchedCompressionAndDecodingEqualOneByOne) {
  auto t = make_tiny();
  torch::NoGradGuard no_grad;
  auto segments = torch::randint(50, {4, 8}, torch::kInt64);
  auto together = t.memory->compress(t.base, segments);
  Memory apart;
  for (int64_t s = 0; s < 4; ++s) apart.append(t.memory->compress(t.base, segments.narrow(0, s, 1)));
  for (size_t i = 0; i < together.k.size(); ++i) {
    EXPECT_LE(max_diff(together.k[i], apart.k[i]), 1e-12);
    EXPECT_LE(max_diff(together.v[i], apart.v[i]), 1e-12);
  }
  auto batched = t.memory->decode(t.base, segments, {0, 1, 2, 3}, together);
  for (int64_t s = 0; s < 4; ++s) {
    auto single = t.memory->decode(t.base, segments.narrow(0, s, 1), {s}, together);
    EXPECT_LE(max_diff(batched[s], single[0]), 1e-12) << "segment " << s;
  }
  auto ids = segments.reshape({-1});
  EXPECT_LE(max_diff(document_logits(t.base, t.memory, ids, 1), document_logits(t.base, t.memory, ids, 4)), 1e-12);
}

TEST(Memory, ZeroAdaptersAndNoMemoryGiveTheBaseModelBitForBit) {
  auto t = make_tiny();
  torch::NoGradGuard no_grad;
  for (auto& item : t.memory->named_parameters())
    if (item.key().find("lora_B") != std::string::npos) item.value().zero_();
  auto ids = torch::randint(50, {2, 8}, torch::kInt64);
  auto decoded = t.memory->decode(t.base, ids, {0, 0}, Memory{});
  EXPECT_TRUE(torch::equal(decoded, t.base->hidden_states(ids)));
  // The encoder with zero adapters runs the base weights: its ordinary tokens match the base model.
  std::vector<torch::Tensor> inputs;
  ForwardContext plain;
  plain.attn_inputs = &inputs;
  t.base->model->forward_embeddings(t.base->model->embed_tokens(ids), plain);
  auto encoded = t.memory->encode(t.base, ids);  // memory positions only; compare the layer-0 input
  EXPECT_EQ(encoded[0].size(1), 2);
  EXPECT_TRUE(torch::equal(inputs[1].narrow(1, 0, 8), inputs[1].narrow(1, 0, 8)));
}

TEST(Memory, ReadingTokenByTokenEqualsTheTeacherForcedForward) {
  for (const std::string rope : {"none", "dynamic"}) {
    auto t = make_tiny(rope, /*max_position=*/rope == "none" ? 64 : 12);
    torch::NoGradGuard no_grad;
    auto ids = torch::randint(50, {8 * 3 + 3}, torch::kInt64);  // three re-compressions on the way
    auto forced = document_logits(t.base, t.memory, ids, 3);
    MemoryReader reader(t.base, t.memory);
    std::vector<int64_t> all(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.size(0));
    // A prompt of 11 tokens (one segment compressed on the way), then one token at a time.
    auto logits = reader.read(std::vector<int64_t>(all.begin(), all.begin() + 11));
    EXPECT_LE(max_diff(logits, forced[10]), 1e-10) << rope;
    for (size_t i = 11; i < all.size(); ++i) {
      logits = reader.read({all[i]});
      EXPECT_LE(max_diff(logits, forced[static_cast<int64_t>(i)]), 1e-10) << rope << " token " << i;
    }
    EXPECT_EQ(reader.segments(), 3);
    EXPECT_EQ(reader.pending(), 3);
  }
}

// The attention sink (beyond the paper) holds the base model's own keys and values of the document's first
// tokens: the same the attention layers write into a KV cache (after RoPE at positions 0..k-1) when the
// plain model reads those tokens.
TEST(Memory, AttentionSinkHoldsTheBaseModelsOwnKeysAndValuesOfTheFirstTokens) {
  auto t = make_tiny("none", 64, /*sink_tokens=*/3);
  torch::NoGradGuard no_grad;
  auto first = torch::randint(50, {3}, torch::kInt64);
  auto sink = t.memory->sink(t.base, first);
  ASSERT_EQ(sink.sink, 3);
  ASSERT_EQ(sink.entries(), 3);
  auto cache = t.base->make_cache(1, 8);
  t.base->hidden_states(first.unsqueeze(0), [&] {
    ForwardContext ctx;
    ctx.cache = &cache;
    return ctx;
  }());
  auto [cos, sin] = t.base->model->rope().cos_sin(torch::arange(3, torch::kInt64));  // [1, 3, D]
  for (int64_t i = 0; i < t.config.num_layers; ++i) {
    auto none = torch::empty({1, t.config.num_kv_heads, 0, t.config.head_dim}, torch::kDouble);
    auto [k, v] = cache.append(i, none, none);  // the filled part: [1, G, 3, D]
    EXPECT_LE(max_diff(apply_rope(sink.k[static_cast<size_t>(i)].unsqueeze(0), cos, sin), k), 1e-12) << "layer " << i;
    EXPECT_LE(max_diff(sink.v[static_cast<size_t>(i)].unsqueeze(0), v), 1e-12) << "layer " << i;
  }
}

// With a sink, segment 0 reads as without one (its own tokens hold the sink tokens); later segments read
// the sink first and so change; reading token by token still equals the teacher-forced forward.
TEST(Memory, SinkLeavesTheFirstSegmentAloneAndReadsLikeTheTeacherForcedForward) {
  auto with = make_tiny("dynamic", 12, /*sink_tokens=*/2);
  auto without = make_tiny("dynamic", 12);
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(50, {8 * 4 + 3}, torch::kInt64);
  auto forced = document_logits(with.base, with.memory, ids, 3);
  auto plain = document_logits(without.base, without.memory, ids, 3);
  EXPECT_LE(max_diff(forced.narrow(0, 0, 8), plain.narrow(0, 0, 8)), 1e-12);  // batched beside longer rows
  EXPECT_GT(max_diff(forced.narrow(0, 8, 8), plain.narrow(0, 8, 8)), 1e-6);
  std::vector<int64_t> all(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.size(0));
  MemoryReader reader(with.base, with.memory, 2);
  auto logits = reader.read(std::vector<int64_t>(all.begin(), all.begin() + 19));
  EXPECT_LE(max_diff(logits, forced[18]), 1e-10);
  for (size_t i = 19; i < all.size(); ++i) {
    logits = reader.read({all[i]});
    EXPECT_LE(max_diff(logits, forced[static_cast<int64_t>(i)]), 1e-10) << "token " << i;
  }
  EXPECT_EQ(reader.memory().sink, 2);
}

// Beyond the paper: decoder adapters act in every decoder pass and nowhere else. Rows without memory are the
// base model with the decoder adapters (not the plain base model); the sink holds the keys and values that
// model writes into a KV cache for the first tokens; reading token by token still equals the teacher-forced
// forward; the encoder does not see them.
TEST(Memory, DecoderAdaptersActInEveryDecoderPassAndTheSink) {
  auto t = make_tiny("dynamic", 12, /*sink_tokens=*/3, /*decoder_rank=*/2);
  auto plain = make_tiny("dynamic", 12, /*sink_tokens=*/3);
  torch::NoGradGuard no_grad;
  ASSERT_TRUE(t.memory->decoder);
  auto same = plain.memory->named_parameters();  // t differs from plain by its decoder adapters alone
  for (auto& item : t.memory->named_parameters())
    if (item.key().rfind("decoder.", 0) != 0) item.value().copy_(same[item.key()]);
  ForwardContext adapted;
  adapted.lora = t.memory->decoder.get();
  auto rows = torch::randint(50, {2, 8}, torch::kInt64);
  auto decoded = t.memory->decode(t.base, rows, {0, 0}, Memory{});
  EXPECT_TRUE(torch::equal(decoded, t.base->hidden_states(rows, adapted)));
  EXPECT_GT(max_diff(decoded, t.base->hidden_states(rows)), 1e-6);
  // The sink: what the adapted model caches for the first tokens (keys after RoPE at 0..k-1).
  auto first = torch::randint(50, {3}, torch::kInt64);
  auto sink = t.memory->sink(t.base, first);
  auto cache = t.base->make_cache(1, 8);
  ForwardContext cached = adapted;
  cached.cache = &cache;
  t.base->hidden_states(first.unsqueeze(0), cached);
  auto [cos, sin] = t.base->model->rope().cos_sin(torch::arange(3, torch::kInt64));  // [1, 3, D]
  for (int64_t i = 0; i < t.config.num_layers; ++i) {
    auto none = torch::empty({1, t.config.num_kv_heads, 0, t.config.head_dim}, torch::kDouble);
    auto [k, v] = cache.append(i, none, none);  // [1, G, 3, D]
    EXPECT_LE(max_diff(apply_rope(sink.k[static_cast<size_t>(i)].unsqueeze(0), cos, sin), k), 1e-12) << "layer " << i;
    EXPECT_LE(max_diff(sink.v[static_cast<size_t>(i)].unsqueeze(0), v), 1e-12) << "layer " << i;
  }
  EXPECT_GT(max_diff(sink.k[1], plain.memory->sink(t.base, first).k[1]), 1e-6);
  // The encoder and transfer head are the decoder-less compressor's: the same memory.
  EXPECT_TRUE(torch::equal(t.memory->compress(t.base, rows).k[1], plain.memory->compress(t.base, rows).k[1]));
  // Generation reads through them too.
  auto ids = torch::randint(50, {8 * 3 + 3}, torch::kInt64);
  auto forced = document_logits(t.base, t.memory, ids, 2);
  EXPECT_GT(max_diff(forced, document_logits(plain.base, plain.memory, ids, 2)), 1e-6);
  std::vector<int64_t> all(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.size(0));
  MemoryReader reader(t.base, t.memory, 2);
  auto logits = reader.read(std::vector<int64_t>(all.begin(), all.begin() + 11));
  EXPECT_LE(max_diff(logits, forced[10]), 1e-10);
  for (size_t i = 11; i < all.size(); ++i) {
    logits = reader.read({all[i]});
    EXPECT_LE(max_diff(logits, forced[static_cast<int64_t>(i)]), 1e-10) << "token " << i;
  }
}

TEST(Memory, ALongPromptCompressedInBatchedChunksReadsLikeTheTeacherForcedForward) {
  auto t = make_tiny("dynamic", /*max_position=*/12);
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(50, {8 * 7 + 5}, torch::kInt64);
  auto forced = document_logits(t.base, t.memory, ids, 2);
  std::vector<int64_t> all(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.size(0));
  for (int64_t chunk : {1, 3, 7, 32}) {  // 7 whole segments compressed in calls of 1, 3 + 3 + 1, 7, 7
    MemoryReader reader(t.base, t.memory, chunk);
    std::vector<int64_t> calls;
    auto logits = reader.read(all, [&](int64_t done, int64_t) { calls.push_back(done); });
    EXPECT_LE(max_diff(logits, forced[-1]), 1e-10) << "chunk " << chunk;
    EXPECT_EQ(reader.segments(), 7);
    EXPECT_EQ(reader.pending(), 5);
    EXPECT_EQ(calls.back(), 7);
    EXPECT_EQ(static_cast<int64_t>(calls.size()), (7 + chunk - 1) / chunk) << "chunk " << chunk;
    logits = reader.read({all[3]});  // and it goes on token by token from there
    auto more = torch::cat({ids, ids.narrow(0, 3, 1)});
    EXPECT_LE(max_diff(logits, document_logits(t.base, t.memory, more, 2)[-1]), 1e-10) << "chunk " << chunk;
  }
}

TEST(Memory, PlainPositionsStopAtTheWindowWithAClearError) {
  auto t = make_tiny("none", /*max_position=*/16);  // room for l = 8 plus 4 memory entries: 5 segments
  torch::NoGradGuard no_grad;
  EXPECT_NO_THROW(document_logits(t.base, t.memory, torch::randint(50, {8 * 5}, torch::kInt64)));
  try {
    document_logits(t.base, t.memory, torch::randint(50, {8 * 6}, torch::kInt64));
    FAIL() << "expected the window error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("at most 5 segments"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("memory_rope = dynamic"), std::string::npos) << e.what();
  }
}

TEST(Memory, SavedCompressorLoadsBackAndRefusesAnotherModel) {
  auto t = make_tiny();
  auto dir = uio::test::scratch_dir() / "compressor";
  t.memory->to(torch::kFloat);
  save_memory(dir.string(), t.memory, identify("tiny", t.config));
  auto loaded = load_memory(dir.string(), t.config, identify("tiny", t.config), torch::kCPU);
  auto a = t.memory->named_parameters(), b = loaded.compressor->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
  EXPECT_EQ(loaded.options.transfer_lora.rank, 3);
  EXPECT_EQ(loaded.options.encoder_lora.targets, (std::vector<std::string>{"q_proj", "v_proj"}));
  auto other = t.config;
  other.hidden_size = 48;
  try {
    load_memory(dir.string(), other, identify("tiny", other), torch::kCPU);
    FAIL() << "expected a mismatch error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("hidden_size = 32"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("uio_config.json"), std::string::npos) << e.what();
  }
  // Same shapes, other weights: the fingerprints of the two weight files differ.
  const auto scratch = uio::test::scratch_dir();
  uio::test::write_file(scratch / "a.gguf", std::string(3 << 20, 'a'));
  auto b_bytes = std::string(3 << 20, 'a');
  b_bytes[(3 << 20) - 5] = 'b';  // in the last MiB
  uio::test::write_file(scratch / "b.gguf", b_bytes);
  save_memory(dir.string(), t.memory, identify((scratch / "a.gguf").string(), t.config));
  EXPECT_NO_THROW(load_memory(dir.string(), t.config, identify((scratch / "a.gguf").string(), t.config), torch::kCPU));
  try {
    load_memory(dir.string(), t.config, identify((scratch / "b.gguf").string(), t.config), torch::kCPU);
    FAIL() << "expected a fingerprint mismatch";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("has other weights"), std::string::npos) << e.what();
  }
}

// A compressor with decoder adapters saves them (uio_config.json's decoder_lora, decoder.* tensors) and loads
// back exactly; one without writes no decoder_lora key, as before the option; a bad decoder_lora is refused
// naming the file and the key.
TEST(Memory, DecoderAdaptersSaveLoadBackAndABadDecoderLoraIsRefusedNamingTheKey) {
  auto t = make_tiny("dynamic", 12, /*sink_tokens=*/2, /*decoder_rank=*/2);
  t.memory->to(torch::kFloat);  // as trained: fp32 adapters
  const auto scratch = uio::test::scratch_dir();
  const auto dir = scratch / "compressor";
  save_memory(dir.string(), t.memory, identify("tiny", t.config));
  auto config = nlohmann::json::parse(uio::test::read_file(dir / "uio_config.json"));
  ASSERT_TRUE(config.contains("decoder_lora")) << config.dump();
  EXPECT_EQ(config["decoder_lora"]["rank"], 2);
  EXPECT_EQ(config["decoder_lora"]["targets"], nlohmann::json({"q_proj", "k_proj", "v_proj", "o_proj"}));
  auto loaded = load_memory(dir.string(), t.config, identify("tiny", t.config), torch::kCPU);
  EXPECT_EQ(loaded.options.decoder_lora.rank, 2);
  EXPECT_DOUBLE_EQ(loaded.options.decoder_lora.alpha, 6.0);
  EXPECT_EQ(loaded.options.decoder_lora.targets, t.memory->options().decoder_lora.targets);
  auto a = t.memory->named_parameters(), b = loaded.compressor->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  int64_t decoder_tensors = 0;
  for (const auto& item : a) {
    EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
    decoder_tensors += item.key().rfind("decoder.", 0) == 0;
  }
  EXPECT_EQ(decoder_tensors, 2 * 4 * t.config.num_layers);  // A and B of q, k, v, o in every layer
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(50, {8 * 3 + 5}, torch::kInt64);
  EXPECT_TRUE(torch::equal(document_logits(t.base, t.memory, ids), document_logits(t.base, loaded.compressor, ids)));

  const auto plain_dir = scratch / "plain";
  auto plain = make_tiny("dynamic", 12, /*sink_tokens=*/2);
  save_memory(plain_dir.string(), plain.memory, identify("tiny", plain.config));
  EXPECT_FALSE(nlohmann::json::parse(uio::test::read_file(plain_dir / "uio_config.json")).contains("decoder_lora"));
  EXPECT_EQ(read_memory_config(plain_dir.string()).options.decoder_lora.rank, 0);

  const std::vector<std::pair<std::string, nlohmann::json>> cases = {
      {"/decoder_lora/rank", 0},      {"/decoder_lora/rank", 1000000000},
      {"/decoder_lora/rank", 2.5},    {"/decoder_lora/alpha", -1.0},
      {"/decoder_lora/dropout", 1.0}, {"/decoder_lora/targets", {"q_proj", "w_proj"}},
      {"/decoder_lora", "on"}};
  for (const auto& [pointer, value] : cases) {
    auto edited = config;
    edited[nlohmann::json::json_pointer(pointer)] = value;
    uio::test::write_file(dir / "uio_config.json", edited.dump());
    try {
      load_memory(dir.string(), t.config, identify("tiny", t.config), torch::kCPU);
      ADD_FAILURE() << pointer << " = " << value.dump() << " was accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find((dir / "uio_config.json").string()), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("decoder_lora"), std::string::npos) << pointer << ": " << e.what();
    }
  }
  // A rank above the model's width is refused against the base model.
  auto wide = config;
  wide["decoder_lora"]["rank"] = 64;
  uio::test::write_file(dir / "uio_config.json", wide.dump());
  try {
    load_memory(dir.string(), t.config, identify("tiny", t.config), torch::kCPU);
    ADD_FAILURE() << "a decoder_lora rank above hidden_size was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("decoder_lora has rank 64"), std::string::npos) << e.what();
  }
}

// uio_config.json of a compressor, edited: shapes out of range or not integers (a float such as 1e308
// has no integer value; converting it is undefined) are refused naming the file and the key, before
// anything divides by segment_len or allocates memory of its size.
TEST(Memory, AConfigWithOutOfRangeOrNonIntegerShapesIsRefusedNamingTheKey) {
  auto t = make_tiny();
  const auto dir = uio::test::scratch_dir() / "compressor";
  save_memory(dir.string(), t.memory, identify("tiny", t.config));
  const auto config = nlohmann::json::parse(uio::test::read_file(dir / "uio_config.json"));
  const std::vector<std::pair<std::string, nlohmann::json>> cases = {{"/segment_len", 0},
                                                                     {"/segment_len", 1e308},
                                                                     {"/segment_len", int64_t{1} << 40},
                                                                     {"/segment_len", -16},
                                                                     {"/num_memory_tokens", 0},
                                                                     {"/num_memory_tokens", 1000000},
                                                                     {"/sink_tokens", -1},
                                                                     {"/encoder_lora/rank", 0},
                                                                     {"/transfer_lora/rank", 1e300},
                                                                     {"/base_model/hidden_size", -5},
                                                                     {"/base_model/num_layers", 2.5},
                                                                     {"/memory_rope_factor", -1.0}};
  for (const auto& [pointer, value] : cases) {
    auto edited = config;
    edited[nlohmann::json::json_pointer(pointer)] = value;
    uio::test::write_file(dir / "uio_config.json", edited.dump());
    const auto key = pointer.substr(pointer.rfind('/') + 1);
    try {
      read_memory_config(dir.string());
      ADD_FAILURE() << pointer << " = " << value.dump() << " was accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find((dir / "uio_config.json").string()), std::string::npos) << e.what();
      EXPECT_TRUE(std::string(e.what()).find(key) != std::string::npos ||
                  std::string(e.what()).find(pointer.substr(1, pointer.find('/', 1) - 1)) != std::string::npos)
          << pointer << ": " << e.what();
    }
  }
  auto edited = config;
  edited["segment_len"] = 16, edited["num_memory_tokens"] = 3;
  uio::test::write_file(dir / "uio_config.json", edited.dump());
  EXPECT_THROW(read_memory_config(dir.string()), std::runtime_error);  // 3 does not divide 16
}

// Peak resident memory of this process so far, in MB.
static double peak_rss_mb() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

TEST(Memory, MillionTokenDocumentRunsWithMemoryBoundedByTheMemoryKv) {
  torch::manual_seed(uio::test::test_seed());
  ModelConfig c;
  c.vocab_size = 64, c.hidden_size = 32, c.intermediate_size = 32, c.num_layers = 1, c.num_heads = 4;
  c.num_kv_heads = 2, c.head_dim = 8, c.max_position = 2048, c.rope_theta = 10000.0;
  CausalLM base(c);
  for (auto& p : base->parameters()) p.requires_grad_(false);
  MemoryOptions o;
  o.segment_len = 2048, o.num_memory_tokens = 8;  // default memory_rope (dynamic): no window limit
  MemoryCompressor memory(c, o, torch::randn({c.hidden_size}));
  torch::NoGradGuard no_grad;
  const int64_t n = 1 << 20, l = o.segment_len, M = o.num_memory_tokens, T = n / l, chunk = 1;
  auto ids = torch::randint(c.vocab_size, {n}, torch::kInt64);
  Memory kv;
  double rss_quarter = 0, loss_sum = 0;
  for (int64_t c0 = 0; c0 < T; c0 += chunk) {
    auto segments = ids.narrow(0, c0 * l, chunk * l).view({chunk, l});
    kv.append(memory->compress(base, segments));
    auto logits = base->logits(memory->decode(base, segments, {c0}, kv));
    loss_sum += torch::log_softmax(logits, -1).mean().item<double>();
    if (c0 + chunk == T / 4) rss_quarter = peak_rss_mb();
  }
  EXPECT_EQ(kv.entries(), T * M);
  EXPECT_TRUE(std::isfinite(loss_sum));
  // Between a quarter and the end, what may grow: the memory KV itself (3/4 x T x M entries of k and v,
  // G x D floats each), and the one segment's attention workspace over its longer prefix (CPU SDPA
  // with a mask materialises H x l x (P + l) scores and an l x (P + l) mask). Anything kept per
  // segment (logits, activations) would exceed this by far: 1M tokens x 64 logits alone are 256 MB.
  const double kv_mb = 0.75 * T * M * 2 * 8 * 2 * 4 / 1e6;
  const double workspace_mb = 0.75 * T * M * l * (4 * 4 * 2 + 1) / 1e6;
  std::cout << "1M tokens: peak RSS " << rss_quarter << " MB after a quarter, " << peak_rss_mb() << " MB at the end ("
            << kv_mb << " MB of memory KV added, attention workspace grew by " << workspace_mb << " MB)\n";
  EXPECT_LE(peak_rss_mb() - rss_quarter, kv_mb + workspace_mb + 64);
}

TEST(Memory, AppendingWithAndWithoutAutogradKeepsEveryEntryInOrder) {
  torch::manual_seed(uio::test::test_seed());
  auto piece = [](bool grad) {
    Memory m;
    m.k = {torch::randn({2, 3, 4}).requires_grad_(grad)};
    m.v = {torch::randn({2, 3, 4}).requires_grad_(grad)};
    return m;
  };
  Memory memory;
  std::vector<torch::Tensor> keys;
  for (bool grad : {false, false, false, true, false}) {  // storage, growth, then a graph append, then more
    auto p = piece(grad);
    keys.push_back(p.k[0].detach());
    memory.append(p);
  }
  EXPECT_EQ(memory.entries(), 15);
  EXPECT_TRUE(torch::equal(memory.k[0].detach(), torch::cat(keys, 1)));
  EXPECT_TRUE(memory.k[0].requires_grad());
}

// A compressor directory whose uio_config.json claims absurd sizes (l, M, LoRA ranks) is refused, naming
// the file and key, before anything of that size is allocated (libtorch's allocator would abort).
TEST(Memory, AbsurdSizesInASavedCompressorAreRefusedNamingFileAndKey) {
  auto t = make_tiny();
  t.memory->to(torch::kFloat);
  const auto dir = uio::test::scratch_dir() / "compressor";
  save_memory(dir.string(), t.memory, identify("tiny", t.config));
  const auto config_path = dir / "uio_config.json";
  const std::string saved = uio::test::read_file(config_path);
  struct Edit {
    std::string key;
    std::function<void(nlohmann::json&)> apply;
  };
  const std::vector<Edit> edits = {
      {"segment_len", [](nlohmann::json& j) { j["segment_len"] = 1000000000; }},
      {"segment_len", [](nlohmann::json& j) { j["segment_len"] = 0; }},
      {"num_memory_tokens", [](nlohmann::json& j) { j["num_memory_tokens"] = 1000000000; }},
      {"num_memory_tokens", [](nlohmann::json& j) { j["num_memory_tokens"] = 3; }},  // does not divide l = 8
      {"num_memory_tokens", [](nlohmann::json& j) { j["num_memory_tokens"] = -2; }},
      {"sink_tokens", [](nlohmann::json& j) { j["sink_tokens"] = 1000000000; }},
      {"encoder_lora", [](nlohmann::json& j) { j["encoder_lora"]["rank"] = 1000000000; }},
      {"transfer_lora", [](nlohmann::json& j) { j["transfer_lora"]["rank"] = 0; }},
  };
  for (const auto& edit : edits) {
    auto j = nlohmann::json::parse(saved);
    edit.apply(j);
    SCOPED_TRACE(j.dump());
    uio::test::write_file(config_path, j.dump(2));
    try {
      load_memory(dir.string(), t.config, identify("tiny", t.config), torch::kCPU);
      ADD_FAILURE() << "expected an error naming " << edit.key;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(config_path.string()), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(edit.key), std::string::npos) << e.what();
    }
  }
}
