// tests/tokenizer_ref.h — readers of the files tests/reference/tokenizer_ref.py writes (corpus.bin:
// u32 count, then per document u32 length and bytes; *.ids: per document u32 count and int32 ids),
// shared by the tokenizer tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace uio::test {

inline std::filesystem::path tokenizer_ref(const std::string& name) { return testdata("tokenizer_ref") / name; }

inline uint32_t read_u32(std::istream& in) {
  uint32_t v = 0;
  in.read(reinterpret_cast<char*>(&v), 4);
  return v;
}

inline std::vector<std::string> read_docs(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("missing " + p.string());
  std::vector<std::string> docs(read_u32(in));
  for (auto& d : docs) {
    d.resize(read_u32(in));
    in.read(d.data(), static_cast<std::streamsize>(d.size()));
  }
  return docs;
}

inline std::vector<std::vector<int32_t>> read_ids(const std::filesystem::path& p, size_t count) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("missing " + p.string());
  std::vector<std::vector<int32_t>> all(count);
  for (auto& ids : all) {
    ids.resize(read_u32(in));
    in.read(reinterpret_cast<char*>(ids.data()), static_cast<std::streamsize>(ids.size() * 4));
  }
  return all;
}

}  // namespace uio::test
