// tests/config_test.cpp — HF config.json parsing: both RoPE layouts, and errors that name file and key.
#include <gtest/gtest.h>

#include "model/config.h"
#include "tests/test_util.h"

using uio::model::load_hf_config;

namespace {

std::string write_config(const std::string& json) {
  auto path = uio::test::scratch_dir() / "config.json";
  uio::test::write_file(path, json);
  return path.string();
}

const char* kBase = R"({"model_type":"llama","vocab_size":100,"hidden_size":64,"intermediate_size":96,
 "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":128,
 "rms_norm_eps":1e-6 %s})";

std::string with(const std::string& extra) {
  std::string s = kBase;
  return s.replace(s.find("%s"), 2, extra);
}

}  // namespace

TEST(Config, ReadsTransformers5RopeParameters) {
  auto c = load_hf_config(write_config(with(R"(,"rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,
    "factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64})")));
  EXPECT_EQ(c.rope_scaling.type, uio::model::RopeKind::llama3);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.original_max_position, 64);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.num_kv_heads, 2);
}

TEST(Config, ReadsLegacyRopeScaling) {
  auto c = load_hf_config(write_config(with(R"(,"rope_theta":1000.0,"rope_scaling":{"type":"linear","factor":2.5})")));
  EXPECT_EQ(c.rope_scaling.type, uio::model::RopeKind::linear);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1000.0);
  EXPECT_EQ(c.rope_scaling.original_max_position, 128);
}

TEST(Config, MissingKeyNamesFileAndKey) {
  auto path = write_config(R"({"model_type":"llama","vocab_size":100})");
  try {
    load_hf_config(path);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing key 'hidden_size'"), std::string::npos) << e.what();
  }
}

TEST(Config, WronglyTypedKeyNamesKeyAndType) {
  auto path = write_config(with(R"(,"tie_word_embeddings":"yes")"));
  try {
    load_hf_config(path);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'tie_word_embeddings' is a string"), std::string::npos) << e.what();
  }
  auto path2 = write_config(R"({"model_type":"llama","vocab_size":100,"hidden_size":"64"})");
  EXPECT_THROW(
      {
        try {
          load_hf_config(path2);
        } catch (const std::invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("'hidden_size' is a string (\"64\"), expected an integer"),
                    std::string::npos)
              << e.what();
          throw;
        }
      },
      std::invalid_argument);
}

TEST(Config, InconsistentHeadsAreRejected) {
  auto path = write_config(R"({"model_type":"llama","vocab_size":100,"hidden_size":64,"intermediate_size":96,
    "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":3,"max_position_embeddings":128})");
  try {
    load_hf_config(path);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("not a multiple of num_key_value_heads (3)"), std::string::npos) << e.what();
  }
}

// A value nested 60,000 levels deep is refused while parsing, naming the file, without overflowing the
// stack (neither in the parser, nor in an error message printing the value, nor when freeing it).
TEST(Config, DeeplyNestedValueIsRefusedNamingTheFile) {
  const std::string deep = std::string(60000, '[') + "1" + std::string(60000, ']');
  for (const std::string key : {"num_hidden_layers", "rope_scaling", "hidden_act", "comment"}) {
    const auto path = write_config(with(",\"" + key + "\":" + deep));
    try {
      load_hf_config(path);
      FAIL() << key << ": expected an error";
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
      EXPECT_NE(std::string(e.what()).find("nested deeper than"), std::string::npos) << e.what();
    }
  }
}
