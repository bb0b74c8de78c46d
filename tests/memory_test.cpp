// tests/memory_test.cpp — the memory model's structure, by perturbation and by equivalence, on a tiny
// random model in float64: which tokens each memory token depends on, that decoders never look ahead
// or at later segments, that batching changes nothing, that zero adapters and no memory give the base
// model bit for bit, and that reading token by token equals the teacher-forced forward.
#include <gtest/gtest.h>

#include "model/memory.h"
#include "tests/test_util.h"

using namespace uio::model;

namespace {

struct Tiny {
  ModelConfig config;
  CausalLM base{nullptr};
  MemoryCompressor memory{nullptr};
};

// A 2-layer GQA model, l = 8, M = 2, every parameter random (adapters' B too, so they matter).
Tiny make_tiny(const std::string& memory_rope = "none", int64_t max_position = 64) {
  torch::manual_seed(uio::test::test_seed());
  Tiny t;
  auto& c = t.config;
  c.vocab_size = 50, c.hidden_size = 32, c.intermediate_size = 48, c.num_layers = 2, c.num_heads = 4;
  c.num_kv_heads = 2, c.head_dim = 8, c.max_position = max_position, c.rope_theta = 1000.0;
  t.base = CausalLM(c, torch::TensorOptions().dtype(torch::kDouble));
  torch::NoGradGuard no_grad;
  for (auto& p : t.base->parameters()) p.normal_(0, 0.25), p.requires_grad_(false);
  MemoryOptions o;
  o.segment_len = 8, o.num_memory_tokens = 2, o.memory_rope = memory_rope, o.memory_rope_factor = 2.0;
  o.encoder_lora = {4, 8.0, 0.0, {"q_proj", "v_proj"}};
  o.transfer_lora = {3, 5.0, 0.0, {"k_proj", "v_proj"}};
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
      if (q < 8) want = k < 8 && k <= q;                  // ordinary: causal, never memory
      else if (k < 8) want = k < (q - 8 + 1) * 4;         // memory i: ordinary [0, (i+1) l/M)
      else want = k == q;                                 // and itself only
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
