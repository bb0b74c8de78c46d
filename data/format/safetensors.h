// data/format/safetensors.h — the safetensors weight format: one file read by mmap (validated up front, tensors
// handed out without a second copy on the CPU), a writer in the layout Python's safetensors writes, and an
// HF model directory (one file, or an index.json and shards). Name translation to uio's modules lives elsewhere.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace uio::format {

class MappedFile;

// Every problem with a safetensors file or directory: the message names the file, the tensor or key, what
// was found and what was expected.
class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One tensor's entry in a header; begin/end are byte offsets into the data section (after the header).
struct TensorInfo {
  std::string name;
  torch::ScalarType dtype = torch::kFloat;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

// The safetensors dtype string of a torch dtype ("F32", "BF16", ...); throws for dtypes the format (or uio)
// does not carry.
std::string safetensors_dtype_name(torch::ScalarType dtype);

// One .safetensors file, mapped read-only (PROT_READ, MAP_PRIVATE). The constructor parses and checks the
// whole header against the file size, so no later call reads outside the file. The file must not be
// truncated or rewritten by another process while it is open (the mapping would fault).
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in file order (by offset)
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // Throws "<path>: no tensor '<name>' (file has N tensors, e.g. ...)".
  const TensorInfo& info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }  // "__metadata__"

  // A CPU tensor over the mapped bytes, without a copy when the bytes are aligned for the dtype (the tensor
  // keeps the mapping alive after this object is gone); a fresh copy only when they are not. The mapped
  // memory is read-only: writing through the tensor (an in-place op) faults, so callers use it as frozen
  // base weights, or clone() / .to() before changing it.
  torch::Tensor tensor(const std::string& name) const;
  // tensor(name) after checking its shape; a mismatch throws
  // "<path>: tensor '<name>' has shape [a, b], <expected_by> expects [c, d]".
  torch::Tensor tensor(const std::string& name, const std::vector<int64_t>& expected_shape,
                       const std::string& expected_by) const;

  // The mapped file, for checking that a tensor aliases it.
  const uint8_t* mapping() const;
  uint64_t file_size() const { return file_size_; }
  uint64_t data_offset() const { return data_offset_; }  // 8 + header length

 private:
  std::string path_;
  std::shared_ptr<MappedFile> mapping_;
  uint64_t file_size_ = 0, data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (any device, any supported dtype; non-contiguous ones are made contiguous on the CPU) in
// the layout Python's safetensors writes: u64 little-endian header length, a compact JSON header
// ("__metadata__" first when given, then tensors in data order), spaces padding the header to a multiple of
// 8, then the data, ordered like safetensors 0.4+ does (larger-aligned dtypes first, then by name). The file
// appears atomically (written to a temporary name, fsynced when `sync`, then renamed).
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {}, bool sync = true);

// An HF model directory's weights: model.safetensors, or model.safetensors.index.json whose weight_map sends
// each tensor to a shard; each shard is opened once. A path to a single .safetensors file also works.
class SafetensorsDirectory {
 public:
  explicit SafetensorsDirectory(const std::string& dir);

  bool contains(const std::string& name) const { return shard_of_.count(name) != 0; }
  torch::Tensor tensor(const std::string& name) const;  // see SafetensorsFile::tensor
  torch::Tensor tensor(const std::string& name, const std::vector<int64_t>& expected_shape,
                       const std::string& expected_by) const;
  const TensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  std::string file_of(const std::string& name) const;
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  const SafetensorsFile& shard(const std::string& name) const;
  std::string dir_;
  std::string source_;  // the index.json, or the single file
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> shard_of_;  // tensor name -> index into files_
};

}  // namespace uio::format
