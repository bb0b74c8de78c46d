// data/format/mapped_file.cpp — open, check, mmap and unmap.
#include "data/format/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace uio::format {

void require_regular_file(const std::string& path, const std::string& expected) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw FormatError(path + ": cannot open: " + std::strerror(errno) + " (expected " + expected + ")");
  if (!S_ISREG(st.st_mode))
    throw FormatError(path + ": is not a regular file (a " +
                      std::string(S_ISDIR(st.st_mode)    ? "directory"
                                  : S_ISFIFO(st.st_mode) ? "FIFO"
                                                         : "special file") +
                      "); expected " + expected);
}

MappedFile::MappedFile(const std::string& path, const std::string& expected) : path_(path) {
  require_regular_file(path, expected);
  // O_NONBLOCK: should the path have been swapped for a FIFO since the check, open() still returns.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw FormatError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw FormatError(path + ": is not a regular file; expected " + expected);
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);  // the mapping stays valid without the descriptor
    if (p == MAP_FAILED) throw FormatError(path + ": cannot mmap: " + std::strerror(err));
    data_ = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace uio::format
