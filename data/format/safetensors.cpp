// data/format/safetensors.cpp — safetensors header parsing and validation, mmap-backed tensors, the writer, and
// HF sharded directories. Format facts: https://github.com/huggingface/safetensors (README, "Format").
#include "data/format/safetensors.h"

#include "data/format/atomic_file.h"
#include "data/format/json_file.h"
#include "data/format/mapped_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace uio::format {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

// Python's safetensors refuses headers above 100 MB; so do we (a bigger one is a corrupt length).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeEntry {
  const char* name;
  torch::ScalarType dtype;
  int64_t size;
  int rank;  // safetensors' Dtype enum order; its writer puts higher ranks first
};

// Ranks follow the declaration order of safetensors' Rust `Dtype` enum (BOOL < U8 < I8 < I16 < F16 < BF16
// < I32 < F32 < F64 < I64), which its writer sorts by, descending, before the tensor name.
const DtypeEntry kDtypes[] = {
    {"BOOL", torch::kBool, 1, 0}, {"U8", torch::kByte, 1, 1},   {"I8", torch::kChar, 1, 2},
    {"I16", torch::kShort, 2, 3}, {"F16", torch::kHalf, 2, 4},  {"BF16", torch::kBFloat16, 2, 5},
    {"I32", torch::kInt, 4, 6},   {"F32", torch::kFloat, 4, 7}, {"F64", torch::kDouble, 8, 8},
    {"I64", torch::kLong, 8, 9},
};

const DtypeEntry* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeEntry& entry_of(torch::ScalarType dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return d;
  throw SafetensorsError(std::string("safetensors: dtype ") + c10::toString(dtype) +
                         " is not supported (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
}

std::string supported_list() { return "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL"; }

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string range_str(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

[[noreturn]] void fail(const std::string& path, const std::string& msg) { throw SafetensorsError(path + ": " + msg); }

// A JSON value for a message, cut short: a corrupt header can be 100 MB.
std::string brief(const Json& v) {
  std::string s = v.dump();
  return s.size() <= 120 ? s : s.substr(0, 117) + "...";
}

}  // namespace

std::string safetensors_dtype_name(torch::ScalarType dtype) { return entry_of(dtype).name; }

// ---- the mapping ----

const uint8_t* SafetensorsFile::mapping() const { return mapping_->data(); }

namespace {

// One header entry -> TensorInfo, with every field checked; the byte range is checked against the data
// section here, overlaps and holes later (they need all entries).
TensorInfo parse_entry(const std::string& path, const std::string& name, const Json& v, uint64_t data_size) {
  const std::string where = "tensor '" + name + "'";
  if (!v.is_object())
    fail(path, where + " is a " + std::string(v.type_name()) + " (" + brief(v) +
                   "), expected an object with dtype, shape, data_offsets");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!v.contains(key)) fail(path, where + " has no '" + key + "' (entry is " + brief(v) + ")");

  TensorInfo t;
  t.name = name;
  const Json& dtype = v["dtype"];
  if (!dtype.is_string()) fail(path, where + ": 'dtype' is " + brief(dtype) + ", expected a string such as \"F32\"");
  const DtypeEntry* d = find_dtype(dtype.get<std::string>());
  if (!d)
    fail(path, where + " has unknown or unsupported dtype '" + dtype.get<std::string>() +
                   "' (supported: " + supported_list() + ")");
  t.dtype = d->dtype;

  const Json& shape = v["shape"];
  if (!shape.is_array()) fail(path, where + ": 'shape' is " + brief(shape) + ", expected a list of sizes");
  // torch's contiguous strides are products of max(size, 1): those must fit in int64, and then
  // numel * element size (no larger) cannot overflow either.
  uint64_t bytes = static_cast<uint64_t>(d->size), strides = static_cast<uint64_t>(d->size);
  for (const Json& dim : shape) {
    if (!dim.is_number_integer())
      fail(path, where + ": shape " + brief(shape) + " holds " + brief(dim) + ", expected non-negative integers");
    if (!dim.is_number_unsigned() || dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(path, where + ": shape " + brief(shape) + " has a negative or absurd size " + brief(dim));
    const uint64_t n = dim.get<uint64_t>();
    t.shape.push_back(static_cast<int64_t>(n));
    if (__builtin_mul_overflow(strides, std::max<uint64_t>(n, 1), &strides) ||
        strides > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(path, where + ": shape " + brief(shape) + " is absurd (its strides overflow 64 bits)");
    bytes *= n;
  }

  const Json& offsets = v["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned())
    fail(path, where + ": 'data_offsets' is " + brief(offsets) + ", expected [begin, end] (two non-negative integers)");
  t.begin = offsets[0].get<uint64_t>();
  t.end = offsets[1].get<uint64_t>();
  if (t.end < t.begin) fail(path, where + ": data_offsets " + range_str(t.begin, t.end) + " end before they begin");
  if (t.end > data_size)
    fail(path, where + ": data_offsets " + range_str(t.begin, t.end) + " are out of range: the data section holds " +
                   std::to_string(data_size) + " bytes (is the file truncated?)");
  if (bytes != t.end - t.begin)
    fail(path, where + " holds " + std::to_string(t.end - t.begin) + " bytes, but dtype " + d->name + " and shape " +
                   shape_str(t.shape) + " need " + std::to_string(bytes));
  return t;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  try {
    mapping_ = std::make_shared<MappedFile>(path, "a .safetensors file");
  } catch (const FormatError& e) {
    throw SafetensorsError(e.what());
  }
  file_size_ = mapping_->size();
  if (file_size_ < 8)
    fail(path, "file is " + std::to_string(file_size_) +
                   " bytes, shorter than the 8-byte header length that starts a safetensors file");
  const uint8_t* bytes = mapping();

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian
  if (header_len > file_size_ - 8)
    fail(path, "header length " + std::to_string(header_len) + " runs past the end of the file (file is " +
                   std::to_string(file_size_) + " bytes, so at most " + std::to_string(file_size_ - 8) +
                   " are left for the header); the file is truncated or not safetensors");
  if (header_len > kMaxHeaderBytes)
    fail(path, "header length " + std::to_string(header_len) + " exceeds the " + std::to_string(kMaxHeaderBytes) +
                   "-byte limit safetensors allows");
  data_offset_ = 8 + header_len;
  const uint64_t data_size = file_size_ - data_offset_;

  // Parse, remembering top-level keys to catch duplicates (the JSON library would keep only the last).
  std::set<std::string> seen;
  std::string duplicate;
  Json header;
  try {
    const char* first = reinterpret_cast<const char*>(bytes + 8);
    header = Json::parse(first, first + header_len, [&](int depth, Json::parse_event_t ev, Json& parsed) {
      // A real header is three levels deep; a hostile one nested thousands deep would overflow the stack
      // wherever the value is later printed or freed, so it is refused here, while still shallow.
      if (depth > kMaxJsonDepth)
        fail(path, "header is JSON nested deeper than " + std::to_string(kMaxJsonDepth) +
                       " levels (a safetensors header is 3 deep); the file is corrupt or not safetensors");
      if (depth == 1 && ev == Json::parse_event_t::key && parsed.is_string() &&
          !seen.insert(parsed.get<std::string>()).second && duplicate.empty())
        duplicate = parsed.get<std::string>();
      return true;
    });
  } catch (const Json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path, std::string("header is a JSON ") + header.type_name() + ", expected an object");
  if (!duplicate.empty()) fail(path, "header names '" + duplicate + "' twice (duplicate tensor name)");

  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object())
        fail(path, "'__metadata__' is " + brief(it.value()) + ", expected an object of strings");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string())
          fail(path, "'__metadata__' key '" + m.key() + "' is " + brief(m.value()) + ", expected a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    tensors_.push_back(parse_entry(path, it.key(), it.value(), data_size));
  }

  // The data section is tiled exactly: sorted by offset, each tensor starts where the previous one ended.
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : tensors_) {
    if (t.begin < covered)
      fail(path, "tensors '" + previous->name + "' " + range_str(previous->begin, previous->end) + " and '" + t.name +
                     "' " + range_str(t.begin, t.end) + " overlap in the data section");
    if (t.begin > covered)
      fail(path, "hole in the data section: bytes " + range_str(covered, t.begin) + " belong to no tensor (" +
                     (previous ? "between '" + previous->name + "' and '" + t.name + "'"
                               : "before the first tensor '" + t.name + "'") +
                     "); safetensors requires tensors to tile the data");
    covered = t.end;
    previous = &t;
  }
  if (covered != data_size)
    fail(path, "the data section holds " + std::to_string(data_size) + " bytes but its tensors cover only " +
                   std::to_string(covered) + " (bytes " + range_str(covered, data_size) +
                   " at the end belong to no tensor)");
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it != index_.end()) return tensors_[it->second];
  std::string examples;
  for (size_t i = 0; i < tensors_.size() && i < 3; ++i) examples += (i ? ", '" : "'") + tensors_[i].name + "'";
  fail(path_, "no tensor '" + name + "' (file has " + std::to_string(tensors_.size()) + " tensors" +
                  (tensors_.empty() ? std::string(")") : ", e.g. " + examples + ")"));
}

torch::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& t = info(name);
  const int64_t element = entry_of(t.dtype).size;
  const auto options = torch::TensorOptions().dtype(t.dtype).device(torch::kCPU);
  if (t.end == t.begin) return torch::empty(t.shape, options);
  const uint8_t* src = mapping() + data_offset_ + t.begin;  // in bounds: checked in the constructor
  if (t.dtype == torch::kBool) {
    // Any byte but 0 or 1 in a bool tensor is undefined behaviour in torch.
    for (uint64_t i = 0; i < t.end - t.begin; ++i)
      if (src[i] > 1)
        fail(path_, "tensor '" + name + "' (BOOL) holds byte " + std::to_string(src[i]) + " at element " +
                        std::to_string(i) + ", expected 0 or 1");
  }
  if (reinterpret_cast<uintptr_t>(src) % static_cast<uintptr_t>(element) == 0) {
    auto keep = mapping_;  // the tensor owns a reference to the mapping
    return torch::from_blob(
        const_cast<uint8_t*>(src), t.shape, [keep](void*) mutable { keep.reset(); }, options);
  }
  // Misaligned for the dtype (a header length not padded to 8): copy once.
  auto copy = torch::empty(t.shape, options);
  std::memcpy(copy.data_ptr(), src, t.end - t.begin);
  return copy;
}

torch::Tensor SafetensorsFile::tensor(const std::string& name, const std::vector<int64_t>& expected_shape,
                                      const std::string& expected_by) const {
  const TensorInfo& t = info(name);
  if (t.shape != expected_shape)
    fail(path_, "tensor '" + name + "' has shape " + shape_str(t.shape) + ", " + expected_by + " expects " +
                    shape_str(expected_shape));
  return tensor(name);
}

// ---- the writer ----

namespace {

std::string json_string(const std::string& path, const std::string& what, const std::string& s) {
  try {
    return Json(s).dump();
  } catch (const Json::exception& e) {
    fail(path, what + " is not valid UTF-8: " + e.what());
  }
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata, bool sync) {
  struct Item {
    std::string name;
    torch::Tensor data;  // contiguous, CPU
    const DtypeEntry* dtype;
  };
  std::vector<Item> items;
  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") fail(path, "a tensor may not be called '__metadata__' (the header reserves it)");
    if (!names.insert(name).second) fail(path, "tensor '" + name + "' is given twice");
    if (!tensor.defined()) fail(path, "tensor '" + name + "' is undefined");
    const DtypeEntry* d = nullptr;
    for (const auto& e : kDtypes)
      if (e.dtype == tensor.scalar_type()) d = &e;
    if (!d)
      fail(path, "tensor '" + name + "' has dtype " + c10::toString(tensor.scalar_type()) +
                     ", which safetensors files written by uio do not carry (supported: " + supported_list() + ")");
    items.push_back({name, tensor.detach().to(torch::kCPU).contiguous(), d});
  }
  // Python's safetensors order: higher-ranked (wider) dtypes first, then by name, so every tensor's offset is
  // aligned for its dtype once the header is padded to 8.
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    if (a.dtype->rank != b.dtype->rank) return a.dtype->rank > b.dtype->rank;
    return a.name < b.name;
  });

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      header += (first ? "" : ",") + json_string(path, "metadata key '" + key + "'", key) + ":" +
                json_string(path, "metadata value of '" + key + "'", value);
      first = false;
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (const Item& item : items) {
    const uint64_t bytes = static_cast<uint64_t>(item.data.numel()) * static_cast<uint64_t>(item.dtype->size);
    if (header.size() > 1) header += ",";
    header += json_string(path, "tensor name '" + item.name + "'", item.name) + ":{\"dtype\":\"" + item.dtype->name +
              "\",\"shape\":[";
    for (int64_t i = 0; i < item.data.dim(); ++i) header += (i ? "," : "") + std::to_string(item.data.size(i));
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  if (header.size() > kMaxHeaderBytes)
    fail(path, "header would be " + std::to_string(header.size()) + " bytes, past safetensors' limit of " +
                   std::to_string(kMaxHeaderBytes));

  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));

  // Written beside the target and renamed over it, so a reader never sees half a file.
  try {
    AtomicFile file(path);
    file.write(len, sizeof len);
    file.write(header);
    for (const Item& item : items) file.write(item.data.data_ptr(), static_cast<size_t>(item.data.nbytes()));
    file.commit(sync);
  } catch (const FormatError& e) {
    throw SafetensorsError(e.what());
  }
}

// ---- HF model directories ----

SafetensorsDirectory::SafetensorsDirectory(const std::string& dir) : dir_(dir) {
  const fs::path root(dir);
  std::error_code ec;
  if (fs::is_regular_file(root, ec)) {
    source_ = root.string();
    files_.push_back(std::make_shared<SafetensorsFile>(source_));
  } else if (fs::exists(root / "model.safetensors.index.json", ec)) {
    source_ = (root / "model.safetensors.index.json").string();
    Json index;
    try {
      index = read_json_file(source_);  // a regular file (a FIFO would block), nested at most kMaxJsonDepth
    } catch (const FormatError& e) {
      throw SafetensorsError(e.what());
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      fail(source_, "expected a JSON object with a 'weight_map' object (tensor name -> shard file)");
    std::map<std::string, size_t> shard_index;  // file name -> index into files_
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        fail(source_, "weight_map['" + it.key() + "'] is " + brief(it.value()) + ", expected a shard file name");
      const std::string shard = it.value().get<std::string>();
      const fs::path rel(shard);
      if (shard.empty() || rel.is_absolute() ||
          std::any_of(rel.begin(), rel.end(), [](const fs::path& part) { return part == ".."; }))
        fail(source_,
             "weight_map['" + it.key() + "'] is '" + shard + "', expected a file name inside the model directory");
      auto found = shard_index.find(shard);
      if (found == shard_index.end()) {
        const fs::path file = root / rel;
        if (!fs::is_regular_file(file, ec))
          fail(source_, "weight_map sends tensor '" + it.key() + "' to shard '" + shard + "', but " + file.string() +
                            " does not exist");
        files_.push_back(std::make_shared<SafetensorsFile>(file.string()));
        found = shard_index.emplace(shard, files_.size() - 1).first;
      }
      if (!files_[found->second]->contains(it.key()))
        fail(source_, "weight_map sends tensor '" + it.key() + "' to shard '" + shard + "', but " +
                          files_[found->second]->path() + " has no such tensor");
      shard_of_[it.key()] = found->second;
    }
    return;
  } else if (fs::exists(root / "model.safetensors", ec)) {
    source_ = (root / "model.safetensors").string();
    files_.push_back(std::make_shared<SafetensorsFile>(source_));
  } else {
    fail(dir,
         "no model.safetensors or model.safetensors.index.json (expected an HF model directory saved with "
         "safetensors; convert .bin checkpoints with transformers' save_pretrained)");
  }
  for (const TensorInfo& t : files_[0]->tensors()) shard_of_[t.name] = 0;
}

const SafetensorsFile& SafetensorsDirectory::shard(const std::string& name) const {
  auto it = shard_of_.find(name);
  if (it == shard_of_.end()) {
    std::string examples;
    size_t i = 0;
    for (auto e = shard_of_.begin(); e != shard_of_.end() && i < 3; ++e, ++i)
      examples += (i ? ", '" : "'") + e->first + "'";
    fail(source_, "no tensor '" + name + "' (the model has " + std::to_string(shard_of_.size()) + " tensors" +
                      (shard_of_.empty() ? std::string(")") : ", e.g. " + examples + ")"));
  }
  return *files_[it->second];
}

torch::Tensor SafetensorsDirectory::tensor(const std::string& name) const { return shard(name).tensor(name); }
torch::Tensor SafetensorsDirectory::tensor(const std::string& name, const std::vector<int64_t>& expected_shape,
                                           const std::string& expected_by) const {
  return shard(name).tensor(name, expected_shape, expected_by);
}
const TensorInfo& SafetensorsDirectory::info(const std::string& name) const { return shard(name).info(name); }
std::string SafetensorsDirectory::file_of(const std::string& name) const { return shard(name).path(); }

std::vector<std::string> SafetensorsDirectory::names() const {
  std::vector<std::string> out;
  out.reserve(shard_of_.size());
  for (const auto& [name, index] : shard_of_) out.push_back(name);
  return out;
}

}  // namespace uio::format
