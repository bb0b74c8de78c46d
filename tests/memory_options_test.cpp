// tests/memory_options_test.cpp — the memory model's settings as config keys: INI and command line
// reach MemoryOptions, the ratio sets M, and bad values name the key.
#include <gtest/gtest.h>

#include "tests/test_util.h"
#include "tools/memory_options.h"

using namespace uio::cli;

TEST(MemoryOptions, IniAndCommandLineReachTheMemoryModel) {
  auto ini = uio::test::scratch_dir() / "m.ini";
  uio::test::write_file(ini,
                        "[memory]\nsegment_len = 2048\ncompression_ratio = 8\nmemory_rope = yarn\n"
                        "memory_rope_factor = 4\n[lora]\nencoder_lora_rank = 16\n"
                        "encoder_lora_targets = q_proj, v_proj, o_proj\n");
  MemoryOptionsInput in;
  Schema s("test", "memory options");
  add_memory_options(s, in);
  std::ostringstream out;
  ASSERT_TRUE(s.parse({"--config", ini.string(), "--transfer_lora_alpha", "12.5"}, out));
  auto o = resolve_memory_options(in);
  EXPECT_EQ(o.segment_len, 2048);
  EXPECT_EQ(o.num_memory_tokens, 256);
  EXPECT_EQ(o.memory_rope, uio::model::RopeKind::yarn);
  EXPECT_DOUBLE_EQ(o.memory_rope_factor, 4.0);
  EXPECT_EQ(o.encoder_lora.rank, 16);
  EXPECT_EQ(o.encoder_lora.targets, (std::vector<std::string>{"q_proj", "v_proj", "o_proj"}));
  EXPECT_DOUBLE_EQ(o.transfer_lora.alpha, 12.5);
  EXPECT_EQ(o.transfer_lora.targets, (std::vector<std::string>{"k_proj", "v_proj"}));
}

TEST(MemoryOptions, InconsistentValuesNameTheKey) {
  auto resolve = [](std::vector<std::string> args) {
    MemoryOptionsInput in;
    Schema s("test", "memory options");
    add_memory_options(s, in);
    std::ostringstream out;
    s.parse(args, out);
    return resolve_memory_options(in);
  };
  auto message = [&](std::vector<std::string> args) {
    try {
      resolve(args);
    } catch (const OptionError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({"--num_memory_tokens", "30"}).find("must be > 0 and divide segment_len 1024"), std::string::npos);
  EXPECT_NE(message({"--encoder_lora_targets", "q_proj,w_proj"}).find("'w_proj' is not one of"), std::string::npos);
  EXPECT_NE(message({"--transfer_lora_targets", "q_proj"}).find("keys and values only"), std::string::npos);
}

// Beyond the paper: the decoder adapters are off unless decoder_lora_rank > 0, reach MemoryOptions from an
// INI file and the command line, and a bad value in an INI file is refused naming the key.
TEST(MemoryOptions, DecoderLoraIsOffByDefaultAndABadValueIsRefusedNamingTheKey) {
  auto from_ini = [](const std::string& text) {
    auto ini = uio::test::scratch_dir() / "m.ini";
    uio::test::write_file(ini, "[memory]\nsegment_len = 64\nnum_memory_tokens = 8\n" + text);
    MemoryOptionsInput in;
    Schema s("test", "memory options");
    add_memory_options(s, in);
    std::ostringstream out;
    if (!s.parse({"--config", ini.string()}, out)) throw OptionError(out.str());
    return resolve_memory_options(in);
  };
  const auto off = from_ini("");
  EXPECT_EQ(off.decoder_lora.rank, 0);
  EXPECT_EQ(off.decoder_lora.targets, (std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj"}));
  const auto on = from_ini("decoder_lora_rank = 8\ndecoder_lora_alpha = 16\ndecoder_lora_targets = q_proj, v_proj\n");
  EXPECT_EQ(on.decoder_lora.rank, 8);
  EXPECT_DOUBLE_EQ(on.decoder_lora.alpha, 16.0);
  EXPECT_EQ(on.decoder_lora.targets, (std::vector<std::string>{"q_proj", "v_proj"}));
  for (const auto& [text, key] : std::vector<std::pair<std::string, std::string>>{
           {"decoder_lora_rank = -1\n", "decoder_lora_rank"},
           {"decoder_lora_rank = four\n", "decoder_lora_rank"},
           {"decoder_lora_rank = 4\ndecoder_lora_alpha = 0\n", "decoder_lora_alpha"},
           {"decoder_lora_rank = 4\ndecoder_lora_dropout = 1\n", "decoder_lora_dropout"},
           {"decoder_lora_rank = 4\ndecoder_lora_targets = q_proj,qkv\n", "decoder_lora_targets"},
           {"decoder_lora_targets =\n", "decoder_lora_targets"}}) {
    try {
      from_ini(text);
      ADD_FAILURE() << text << " was accepted";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << text << ": " << e.what();
    }
  }
}
