// tests/test_util.h — shared helpers for the GoogleTest suite: where reference data lives, scratch
// directories, and a seeded generator for fresh random inputs.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <unistd.h>

#include <gtest/gtest.h>

#include "model/config.h"

namespace uio::test {

// The tiny random Llama (GQA, 2 layers, vocabulary of 48) the training, checkpoint and profile tests
// build their base model from.
inline model::ModelConfig tiny_llama_config() {
  model::ModelConfig c;
  c.vocab_size = 48, c.hidden_size = 32, c.intermediate_size = 48, c.num_layers = 2, c.num_heads = 4;
  c.num_kv_heads = 2, c.head_dim = 8, c.max_position = 128, c.rope_theta = 10000.0, c.eos_token_id = 1;
  return c;
}

// Folder written by tests/make_reference.py (ctest runs it first and sets UIO_TESTDATA).
inline std::filesystem::path testdata(const std::string& sub = "") {
  const char* dir = std::getenv("UIO_TESTDATA");
  if (!dir) throw std::runtime_error("UIO_TESTDATA is not set: run the tests through ctest (scripts/test.sh)");
  return sub.empty() ? std::filesystem::path(dir) : std::filesystem::path(dir) / sub;
}

// A fresh, empty scratch folder unique to the running test.
inline std::filesystem::path scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto dir = std::filesystem::temp_directory_path() /
             ("uio_test_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Seed printed by GoogleTest (--gtest_random_seed) would vary per run; tests draw from a fixed seed
// per test so failures reproduce, and the inputs are still random, never zeros or ones.
inline uint64_t test_seed() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::hash<std::string>{}(std::string(info->test_suite_name()) + "." + info->name());
}

}  // namespace uio::test
