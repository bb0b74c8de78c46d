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
