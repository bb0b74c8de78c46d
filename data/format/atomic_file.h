// data/format/atomic_file.h — every file uio writes appears whole or not at all: bytes go to a temporary
// name beside the target, each write is checked (a full disk is an error naming the file, never a 0-byte
// result), then the file is flushed (fsync), renamed over the target, and the directory synced.
#pragma once

#include <cstddef>
#include <string>

namespace uio::format {

class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);  // creates "<path>.tmp.<pid>"
  ~AtomicFile();  // without commit(): the temporary file is removed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);  // throws FormatError naming the target and the reason
  void write(const std::string& bytes) { write(bytes.data(), bytes.size()); }
  // Flushes (fsync when `sync`), renames into place, syncs the directory. Throws FormatError on failure.
  void commit(bool sync = true);

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

// The whole file at once.
void write_file_atomic(const std::string& path, const std::string& bytes, bool sync = true);

}  // namespace uio::format
