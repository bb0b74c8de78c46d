// data/format/atomic_file.cpp — temporary name, checked writes, fsync, rename.
#include "data/format/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "data/format/mapped_file.h"

namespace uio::format {

AtomicFile::AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp." + std::to_string(::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw FormatError(path_ + ": cannot create " + tmp_ + ": " + std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd_, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw FormatError(path_ + ": write failed: " + std::strerror(n < 0 ? errno : EIO) +
                        (errno == ENOSPC ? " (the disk is full; free space and run again)" : ""));
    p += n, size -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit(bool sync) {
  if (sync && ::fsync(fd_) != 0) throw FormatError(path_ + ": fsync failed: " + std::strerror(errno));
  const int closed = ::close(fd_);
  fd_ = -1;
  if (closed != 0) {
    ::unlink(tmp_.c_str());
    throw FormatError(path_ + ": close failed: " + std::strerror(errno));
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw FormatError(path_ + ": cannot rename " + tmp_ + " into place: " + std::strerror(err));
  }
  if (sync) {  // the rename is durable only once the directory is synced
    const auto parent = std::filesystem::path(path_).parent_path();
    const int dfd = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
}

void write_file_atomic(const std::string& path, const std::string& bytes, bool sync) {
  AtomicFile file(path);
  file.write(bytes);
  file.commit(sync);
}

}  // namespace uio::format
