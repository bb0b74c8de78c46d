// data/format/mapped_file.h — a whole file mapped read-only into memory, the one mmap of the project:
// GGUF, safetensors and token stores read through it. Opens only regular files (a FIFO or a directory is
// refused before open() could block on it), and errors name the file and what it was expected to be.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace uio::format {

// Every problem reading or parsing a file of a known format; the message starts with the file's path.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class MappedFile {
 public:
  // `expected` describes the file in errors ("a .gguf file", "tokens.bin of a token store").
  MappedFile(const std::string& path, const std::string& expected);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const uint8_t* data() const { return data_; }  // nullptr for an empty file
  uint64_t size() const { return size_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// Throws FormatError naming `path` unless it is an existing regular file (checked without opening it,
// so a FIFO never blocks).
void require_regular_file(const std::string& path, const std::string& expected);

}  // namespace uio::format
