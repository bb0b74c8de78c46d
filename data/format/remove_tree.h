// data/format/remove_tree.h — removing a directory tree (checkpoint pruning, starting a run over).
#pragma once

#include <string>

namespace uio::format {

// Removes a directory tree or a file; a missing path is fine. POSIX nftw rather than
// std::filesystem::remove_all: some torch wheels (2.11 on the GPU machine) export their own copies of
// libstdc++'s filesystem internals, and remove_all crashed there when those won. Throws
// std::runtime_error naming the path on failure.
void remove_tree(const std::string& path);

}  // namespace uio::format
