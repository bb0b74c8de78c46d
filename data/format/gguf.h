// data/format/gguf.h — the GGUF container (versions 2 and 3, little-endian): header, typed metadata,
// tensor infos, data alignment, a read-only mmap of the file, and tensors dequantised to torch.
// It knows nothing of models: model/gguf_names.h maps llama.cpp's names and keys to uio's.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <torch/types.h>

namespace uio::format {

class MappedFile;

// GGUF metadata value types (gguf.h `enum gguf_type`).
enum class GgufValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
std::string gguf_value_type_name(GgufValueType type);

struct GgufValue;
struct GgufArray {
  GgufValueType element_type = GgufValueType::UINT8;
  std::vector<GgufValue> items;
};

// One metadata value. Integers are held as int64_t (UINT64 as uint64_t), floats as double.
struct GgufValue {
  GgufValueType type = GgufValueType::UINT8;
  std::variant<int64_t, uint64_t, double, bool, std::string, GgufArray> data;

  bool is_integer() const;
  bool is_float() const { return type == GgufValueType::FLOAT32 || type == GgufValueType::FLOAT64; }
  // Human-readable form for dumps; arrays show at most `max_items` items.
  std::string to_string(size_t max_items = 8) const;
};

struct GgufTensorInfo {
  std::string name;
  uint32_t type = 0;  // ggml type id (model/dequant.h)
  std::vector<int64_t> dims;  // as GGUF lists them: dims[0] varies fastest (ggml's ne[0])
  uint64_t offset = 0;  // absolute byte offset of the data in the file
  uint64_t nbytes = 0;
  int64_t num_elements = 0;

  std::vector<int64_t> shape() const;  // torch / numpy order: dims reversed
  std::string type_name() const;
};

// A GGUF file, mapped read-only. Every count, length and offset is checked against the file size
// while parsing; errors (std::runtime_error) name the file, the key or tensor, what was found and
// what was expected.
class GgufFile {
 public:
  explicit GgufFile(const std::string& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the tensor data section
  uint64_t file_size() const { return size_; }

  // ---- metadata ----
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  bool has(const std::string& key) const { return key_index_.count(key) != 0; }
  const GgufValue& value(const std::string& key) const;  // throws naming the missing key
  int64_t get_int(const std::string& key) const;  // any integer type
  double get_float(const std::string& key) const;  // FLOAT32/FLOAT64 (integers accepted)
  bool get_bool(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<float> get_float_array(const std::string& key) const;
  // Number of items of an array value, without converting them.
  size_t array_size(const std::string& key) const;

  // ---- tensors ----
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  bool has_tensor(const std::string& name) const { return tensor_index_.count(name) != 0; }
  const GgufTensorInfo& tensor_info(const std::string& name) const;  // throws naming the tensor
  // The tensor's raw bytes inside the mapping (valid while this GgufFile lives).
  const uint8_t* tensor_data(const GgufTensorInfo& info) const { return base_ + info.offset; }
  // Dequantised into a fresh CPU tensor of torch shape `info.shape()` and dtype `out`
  // (values are computed in fp32, then cast).
  torch::Tensor tensor(const std::string& name, torch::ScalarType out = torch::kFloat) const;

 private:
  [[noreturn]] void fail(const std::string& what) const;
  void parse();
  void check_tiling() const;  // tensors back to back, aligned, none overlapping, the file ending with the last

  std::string path_;
  std::shared_ptr<MappedFile> file_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t> key_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// A multi-line summary (version, metadata with long arrays shortened, tensor table) for `uio info`.
std::string describe_gguf(const GgufFile& file);

}  // namespace uio::format
