// data/format/fingerprint.cpp — checksums and fingerprints of weight files.
#include "data/format/fingerprint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace uio::format {
namespace fs = std::filesystem;
namespace {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL, kFnvPrime = 0x100000001b3ULL;

uint64_t fnv_words(uint64_t h, const char* data, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word;
    std::memcpy(&word, data + i, 8);
    h = (h ^ word) * kFnvPrime;
  }
  for (; i < n; ++i) h = (h ^ static_cast<unsigned char>(data[i])) * kFnvPrime;
  return h;
}

// Checksum of `count` bytes of `path` from `offset`.
uint64_t range_checksum(const std::string& path, uint64_t offset, uint64_t count) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open to compute its checksum");
  in.seekg(static_cast<std::streamoff>(offset));
  uint64_t h = kFnvOffset;
  std::vector<char> buffer(1 << 20);
  while (count > 0 && in) {
    in.read(buffer.data(), static_cast<std::streamsize>(std::min<uint64_t>(buffer.size(), count)));
    const auto n = static_cast<uint64_t>(in.gcount());
    h = fnv_words(h, buffer.data(), static_cast<size_t>(n));
    count -= n;
    if (n == 0) break;
  }
  return h;
}

}  // namespace

uint64_t file_checksum(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) throw std::runtime_error(path + ": cannot read its size (" + ec.message() + ")");
  return range_checksum(path, 0, size);
}

std::string weights_fingerprint(const std::string& path) {
  std::vector<fs::path> files;
  if (fs::is_directory(path)) {
    for (const auto& entry : fs::directory_iterator(path)) {
      const auto name = entry.path().filename().string();
      if (entry.is_regular_file() && (name == "config.json" || entry.path().extension() == ".safetensors"))
        files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
  } else if (fs::is_regular_file(path)) {
    files.push_back(path);
  } else {
    return "";
  }
  constexpr uint64_t kEdge = 1 << 20;
  uint64_t bytes = 0, h = kFnvOffset;
  for (const auto& f : files) {
    const uint64_t size = fs::file_size(f);
    bytes += size;
    const uint64_t head = range_checksum(f.string(), 0, std::min(size, kEdge));
    const uint64_t tail = range_checksum(f.string(), size > kEdge ? size - kEdge : 0, std::min(size, kEdge));
    h = (h ^ head) * kFnvPrime;
    h = (h ^ tail) * kFnvPrime;
    h = (h ^ size) * kFnvPrime;
  }
  std::ostringstream s;
  s << bytes << ":" << std::hex << std::setw(16) << std::setfill('0') << h;
  return s.str();
}

}  // namespace uio::format
