// data/format/gguf.cpp — parses a GGUF file from a read-only mmap. Layout (gguf.h in ggml): magic "GGUF",
// uint32 version, uint64 tensor count, uint64 metadata count, the metadata (string key, uint32 type,
// value), the tensor infos (string name, uint32 n_dims, uint64 dims[n_dims], uint32 type, uint64
// offset), padding to `general.alignment` (default 32), then the tensor data. Version 1 used uint32
// counts and is not read; version 2 and 3 differ only in v3 allowing big-endian files.
#include "data/format/gguf.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <tuple>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "data/format/dequant.h"
#include "data/format/mapped_file.h"

namespace uio::format {
namespace {

constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
constexpr int kMaxArrayNesting = 8;  // arrays of arrays of ...; real files use at most 1
constexpr uint64_t kDefaultAlignment = 32;

std::string str(uint64_t v) { return std::to_string(v); }

std::string dims_string(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// Size of one value of a fixed-size type, or 0 for STRING / ARRAY.
uint64_t fixed_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8:
    case GgufValueType::INT8:
    case GgufValueType::BOOL: return 1;
    case GgufValueType::UINT16:
    case GgufValueType::INT16: return 2;
    case GgufValueType::UINT32:
    case GgufValueType::INT32:
    case GgufValueType::FLOAT32: return 4;
    case GgufValueType::UINT64:
    case GgufValueType::INT64:
    case GgufValueType::FLOAT64: return 8;
    default: return 0;
  }
}

bool is_integer_type(GgufValueType type) {
  switch (type) {
    case GgufValueType::UINT8:
    case GgufValueType::INT8:
    case GgufValueType::UINT16:
    case GgufValueType::INT16:
    case GgufValueType::UINT32:
    case GgufValueType::INT32:
    case GgufValueType::UINT64:
    case GgufValueType::INT64: return true;
    default: return false;
  }
}

bool known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::FLOAT64); }

// Bounds-checked little-endian cursor over the mapping. `context` names what is being read
// ("metadata key 'general.name'") so every error says where it happened.
class Reader {
 public:
  Reader(const uint8_t* base, uint64_t size, const std::string& path) : base_(base), size_(size), path_(path) {}

  uint64_t pos = 0;
  std::string context = "header";

  uint64_t remaining() const { return size_ - pos; }

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(path_ + ": " + context + ": " + what);
  }

  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail(std::string("truncated file: ") + what + " needs " + str(n) + " bytes at offset " + str(pos) +
           ", but the file ends at " + str(size_) + " (the file is cut short or corrupt; download it again)");
  }

  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, base_ + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }

  std::string read_string(const char* what) {
    const uint64_t len = read<uint64_t>(what);
    if (len > remaining())
      fail(std::string(what) + " claims " + str(len) + " bytes, but only " + str(remaining()) +
           " bytes remain in the file (truncated or corrupt)");
    std::string s(reinterpret_cast<const char*>(base_ + pos), len);
    pos += len;
    return s;
  }

  GgufValue read_value(GgufValueType type, int depth) {
    GgufValue v;
    v.type = type;
    switch (type) {
      case GgufValueType::UINT8: v.data = int64_t(read<uint8_t>("a UINT8 value")); break;
      case GgufValueType::INT8: v.data = int64_t(read<int8_t>("an INT8 value")); break;
      case GgufValueType::UINT16: v.data = int64_t(read<uint16_t>("a UINT16 value")); break;
      case GgufValueType::INT16: v.data = int64_t(read<int16_t>("an INT16 value")); break;
      case GgufValueType::UINT32: v.data = int64_t(read<uint32_t>("a UINT32 value")); break;
      case GgufValueType::INT32: v.data = int64_t(read<int32_t>("an INT32 value")); break;
      case GgufValueType::UINT64: v.data = read<uint64_t>("a UINT64 value"); break;
      case GgufValueType::INT64: v.data = read<int64_t>("an INT64 value"); break;
      case GgufValueType::FLOAT32: v.data = double(read<float>("a FLOAT32 value")); break;
      case GgufValueType::FLOAT64: v.data = read<double>("a FLOAT64 value"); break;
      case GgufValueType::BOOL: {
        const uint8_t b = read<uint8_t>("a BOOL value");
        if (b > 1) fail("BOOL value is " + str(b) + ", expected 0 or 1");
        v.data = b == 1;
        break;
      }
      case GgufValueType::STRING: v.data = read_string("string"); break;
      case GgufValueType::ARRAY: v.data = read_array(depth + 1); break;
    }
    return v;
  }

 private:
  GgufArray read_array(int depth) {
    if (depth > kMaxArrayNesting) fail("arrays nested deeper than " + std::to_string(kMaxArrayNesting));
    const uint32_t elem = read<uint32_t>("array element type");
    if (!known_value_type(elem)) fail("array element type " + str(elem) + " is not a GGUF value type (expected 0..12)");
    const uint64_t count = read<uint64_t>("array length");
    GgufArray a;
    a.element_type = static_cast<GgufValueType>(elem);
    // Smallest encoding of one item: its fixed size, an 8-byte string length, or an array's
    // 4-byte type + 8-byte count. A count that cannot fit is corrupt; reject it before allocating.
    uint64_t min_item = fixed_size(a.element_type);
    if (a.element_type == GgufValueType::STRING) min_item = 8;
    if (a.element_type == GgufValueType::ARRAY) min_item = 12;
    if (count > remaining() / min_item)
      fail("array of " + str(count) + " " + gguf_value_type_name(a.element_type) + " items needs at least " +
           str(count) + " x " + str(min_item) + " bytes, but only " + str(remaining()) +
           " bytes remain in the file (truncated or corrupt)");
    a.items.reserve(count);
    for (uint64_t i = 0; i < count; ++i) a.items.push_back(read_value(a.element_type, depth));
    return a;
  }

  const uint8_t* base_;
  uint64_t size_;
  const std::string& path_;
};

// a * b, or false when it overflows int64.
bool mul_ok(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Values

std::string gguf_value_type_name(GgufValueType type) {
  static const char* kNames[] = {"UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",  "FLOAT32",
                                 "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64"};
  const auto i = static_cast<uint32_t>(type);
  return i < 13 ? kNames[i] : "type " + std::to_string(i);
}

bool GgufValue::is_integer() const { return is_integer_type(type); }

std::string GgufValue::to_string(size_t max_items) const {
  std::ostringstream os;
  if (auto* i = std::get_if<int64_t>(&data))
    os << *i;
  else if (auto* u = std::get_if<uint64_t>(&data))
    os << *u;
  else if (auto* d = std::get_if<double>(&data))
    os << *d;
  else if (auto* b = std::get_if<bool>(&data))
    os << (*b ? "true" : "false");
  else if (auto* s = std::get_if<std::string>(&data)) {
    std::string shown = s->size() > 80 ? s->substr(0, 77) + "..." : *s;
    for (auto& c : shown)
      if (c == '\n') c = ' ';
    os << '"' << shown << '"';
  } else {
    const auto& a = std::get<GgufArray>(data);
    os << "[";
    for (size_t i = 0; i < a.items.size() && i < max_items; ++i)
      os << (i ? ", " : "") << a.items[i].to_string(max_items);
    if (a.items.size() > max_items) os << ", ...";
    os << "] (" << a.items.size() << " x " << gguf_value_type_name(a.element_type) << ")";
  }
  return os.str();
}

std::vector<int64_t> GgufTensorInfo::shape() const { return std::vector<int64_t>(dims.rbegin(), dims.rend()); }

std::string GgufTensorInfo::type_name() const { return ggml_type_name(type); }

// ---------------------------------------------------------------------------------------------
// File

GgufFile::GgufFile(const std::string& path) : path_(path) {
  file_ = std::make_shared<MappedFile>(path, "a .gguf file");
  base_ = file_->data();
  size_ = file_->size();
  parse();
}

GgufFile::~GgufFile() = default;

void GgufFile::fail(const std::string& what) const { throw std::runtime_error(path_ + ": " + what); }

void GgufFile::parse() {
  if (size_ < 4 || std::memcmp(base_, "GGUF", 4) != 0) {
    std::string start;
    for (uint64_t i = 0; i < std::min<uint64_t>(size_, 4); ++i) {
      const char c = static_cast<char>(base_[i]);
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", base_[i]);
      start += (c >= 32 && c < 127) ? std::string(1, c) : std::string(hex);
    }
    fail("not a GGUF file (it starts with '" + start + "', expected the magic 'GGUF'; " + str(size_) + " bytes)");
  }
  Reader r(base_, size_, path_);
  r.pos = 4;
  version_ = r.read<uint32_t>("the version");
  if (version_ != 2 && version_ != 3) {
    const uint32_t swapped = __builtin_bswap32(version_);
    if (swapped == 2 || swapped == 3)
      r.fail("big-endian GGUF files are not supported (version field reads " + str(version_) + ")");
    if (version_ == 1)
      r.fail("GGUF version 1 is not supported (uio reads versions 2 and 3); reconvert with a current llama.cpp");
    r.fail("unsupported GGUF version " + str(version_) + " (uio reads versions 2 and 3)");
  }
  const uint64_t n_tensors = r.read<uint64_t>("the tensor count");
  const uint64_t n_kv = r.read<uint64_t>("the metadata count");
  // Smallest possible entries: a key/value is 8 (key length) + 4 (type) + 1 (a UINT8); a tensor info
  // is 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
  if (n_kv > r.remaining() / 13)
    r.fail("metadata count " + str(n_kv) + " cannot fit in the remaining " + str(r.remaining()) +
           " bytes of the file (truncated or corrupt)");
  if (n_tensors > r.remaining() / 24)
    r.fail("tensor count " + str(n_tensors) + " cannot fit in the remaining " + str(r.remaining()) +
           " bytes of the file (truncated or corrupt)");

  metadata_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    r.context = "metadata entry #" + str(i);
    std::string key = r.read_string("the key");
    r.context = "metadata key '" + key + "'";
    const uint32_t type = r.read<uint32_t>("the value type");
    if (!known_value_type(type)) r.fail("value type " + str(type) + " is not a GGUF value type (expected 0..12)");
    GgufValue value = r.read_value(static_cast<GgufValueType>(type), 0);
    if (key_index_.count(key)) r.fail("duplicate key");
    key_index_[key] = metadata_.size();
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  alignment_ = kDefaultAlignment;
  if (has("general.alignment")) {
    const GgufValue& a = value("general.alignment");
    const int64_t align = a.is_integer() ? get_int("general.alignment") : 0;
    if (align <= 0 || (align & (align - 1)) != 0)
      fail("metadata key 'general.alignment' is " + a.to_string() + ", expected a power of two");
    alignment_ = static_cast<uint64_t>(align);
  }

  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    r.context = "tensor info #" + str(i);
    GgufTensorInfo t;
    t.name = r.read_string("the tensor name");
    r.context = "tensor '" + t.name + "'";
    const uint32_t n_dims = r.read<uint32_t>("the dimension count");
    if (n_dims > kMaxDims) r.fail("has " + str(n_dims) + " dimensions, expected at most " + str(kMaxDims));
    t.num_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = r.read<uint64_t>("a dimension");
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          !mul_ok(t.num_elements, static_cast<int64_t>(dim), &t.num_elements))
        r.fail("dimension " + str(dim) + " makes the element count overflow (corrupt tensor info)");
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    t.type = r.read<uint32_t>("the ggml type");
    const GgmlTypeTraits* traits = ggml_type_traits(t.type);
    if (!traits)
      r.fail("unknown ggml type id " + str(t.type) +
             " (not a type uio knows; the file is corrupt or from a newer llama.cpp)");
    const uint64_t rel_offset = r.read<uint64_t>("the data offset");
    const int64_t row = t.dims.empty() ? 1 : t.dims[0];
    if (row % traits->block_size != 0)
      r.fail("is " + std::string(traits->name) + " with dims " + dims_string(t.dims) + ": the row length " +
             std::to_string(row) + " is not a multiple of the block size " + std::to_string(traits->block_size));
    int64_t nbytes = 0;
    if (!mul_ok(t.num_elements / traits->block_size, traits->type_size, &nbytes))
      r.fail("byte size overflows (corrupt tensor info)");
    t.nbytes = static_cast<uint64_t>(nbytes);
    if (rel_offset % alignment_ != 0)
      r.fail("data offset " + str(rel_offset) + " is not a multiple of the alignment " + str(alignment_));
    t.offset = rel_offset;  // made absolute below, once the data section's start is known
    if (tensor_index_.count(t.name)) r.fail("duplicate tensor name");
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  data_offset_ = (r.pos + alignment_ - 1) / alignment_ * alignment_;
  for (auto& t : tensors_) {
    const uint64_t rel = t.offset;
    const bool fits = data_offset_ <= size_ && rel <= size_ - data_offset_ && t.nbytes <= size_ - data_offset_ - rel;
    if (!fits)
      fail("tensor '" + t.name + "' (" + t.type_name() + ", dims " + dims_string(t.dims) + ") occupies bytes [" +
           str(data_offset_ + rel) + ", " + str(data_offset_ + rel + t.nbytes) +
           ") which run past the end of the file (" + str(size_) +
           " bytes): the file is truncated or corrupt; download it again");
    t.offset = data_offset_ + rel;
  }
  check_tiling();
}

// The writers (llama.cpp, gguf-py) lay the tensors out back to back, each padded to the alignment. A
// tensor whose type or dims were changed, or whose offset was, breaks that tiling: without this check it
// would read its neighbour's bytes (or padding) as weights and run with garbage.
void GgufFile::check_tiling() const {
  if (tensors_.empty()) return;
  std::vector<const GgufTensorInfo*> order;
  for (const auto& t : tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const GgufTensorInfo* a, const GgufTensorInfo* b) {
    return std::tie(a->offset, a->nbytes, a->name) < std::tie(b->offset, b->nbytes, b->name);
  });
  auto align_up = [&](uint64_t at) { return (at + alignment_ - 1) / alignment_ * alignment_; };
  auto describe = [&](const GgufTensorInfo& t) {
    return "'" + t.name + "' (" + t.type_name() + ", dims " + dims_string(t.dims) + ", bytes [" + str(t.offset) + ", " +
           str(t.offset + t.nbytes) + "))";
  };
  const char* fix =
      "; its type, dims or data offset disagree with the file's layout (the file is corrupt; download it again)";
  uint64_t covered = data_offset_;
  const GgufTensorInfo* previous = nullptr;
  for (const GgufTensorInfo* t : order) {
    if (t->offset < covered)
      fail("tensors " + describe(*previous) + " and " + describe(*t) + " overlap in the data section" + fix);
    if (t->offset > align_up(covered))
      fail("bytes [" + str(covered) + ", " + str(t->offset) + ") of the data section belong to no tensor (" +
           (previous ? "after tensor " + describe(*previous) + ", " : std::string()) + "before tensor " + describe(*t) +
           ")" + fix);
    covered = t->offset + t->nbytes;
    previous = t;
  }
  if (size_ > align_up(covered))
    fail("bytes [" + str(covered) + ", " + str(size_) +
         ") at the end of the file belong to no tensor (the last one is " + describe(*previous) + ")" + fix);
}

const GgufValue& GgufFile::value(const std::string& key) const {
  auto it = key_index_.find(key);
  if (it == key_index_.end()) fail("missing metadata key '" + key + "'");
  return metadata_[it->second].second;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue& v = value(key);
  if (auto* i = std::get_if<int64_t>(&v.data)) return *i;
  if (auto* u = std::get_if<uint64_t>(&v.data)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail("metadata key '" + key + "' is UINT64 " + str(*u) + ", too large for int64");
    return static_cast<int64_t>(*u);
  }
  fail("metadata key '" + key + "' is " + gguf_value_type_name(v.type) + " (" + v.to_string() +
       "), expected an integer");
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = value(key);
  if (auto* d = std::get_if<double>(&v.data)) return *d;
  if (v.is_integer()) return static_cast<double>(get_int(key));
  fail("metadata key '" + key + "' is " + gguf_value_type_name(v.type) + " (" + v.to_string() + "), expected a number");
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = value(key);
  if (auto* b = std::get_if<bool>(&v.data)) return *b;
  fail("metadata key '" + key + "' is " + gguf_value_type_name(v.type) + " (" + v.to_string() + "), expected BOOL");
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = value(key);
  if (auto* s = std::get_if<std::string>(&v.data)) return *s;
  fail("metadata key '" + key + "' is " + gguf_value_type_name(v.type) + " (" + v.to_string() + "), expected STRING");
}

size_t GgufFile::array_size(const std::string& key) const {
  const GgufValue& v = value(key);
  if (auto* a = std::get_if<GgufArray>(&v.data)) return a->items.size();
  fail("metadata key '" + key + "' is " + gguf_value_type_name(v.type) + " (" + v.to_string() + "), expected an ARRAY");
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue& v = value(key);
  auto* a = std::get_if<GgufArray>(&v.data);
  if (!a || a->element_type != GgufValueType::STRING)
    fail("metadata key '" + key + "' is " + v.to_string(3) + ", expected an ARRAY of STRING");
  std::vector<std::string> out;
  out.reserve(a->items.size());
  for (const auto& item : a->items) out.push_back(std::get<std::string>(item.data));
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue& v = value(key);
  auto* a = std::get_if<GgufArray>(&v.data);
  if (!a || !is_integer_type(a->element_type))
    fail("metadata key '" + key + "' is " + v.to_string(3) + ", expected an ARRAY of integers");
  std::vector<int64_t> out;
  out.reserve(a->items.size());
  for (const auto& item : a->items) {
    if (auto* i = std::get_if<int64_t>(&item.data))
      out.push_back(*i);
    else {
      const uint64_t u = std::get<uint64_t>(item.data);
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail("metadata key '" + key + "' holds UINT64 " + str(u) + ", too large for int64");
      out.push_back(static_cast<int64_t>(u));
    }
  }
  return out;
}

std::vector<float> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue& v = value(key);
  auto* a = std::get_if<GgufArray>(&v.data);
  const bool numeric = a && (a->element_type == GgufValueType::FLOAT32 || a->element_type == GgufValueType::FLOAT64 ||
                             is_integer_type(a->element_type));
  if (!numeric) fail("metadata key '" + key + "' is " + v.to_string(3) + ", expected an ARRAY of numbers");
  std::vector<float> out;
  out.reserve(a->items.size());
  for (const auto& item : a->items) {
    if (auto* d = std::get_if<double>(&item.data))
      out.push_back(static_cast<float>(*d));
    else if (auto* i = std::get_if<int64_t>(&item.data))
      out.push_back(static_cast<float>(*i));
    else
      out.push_back(static_cast<float>(std::get<uint64_t>(item.data)));
  }
  return out;
}

const GgufTensorInfo& GgufFile::tensor_info(const std::string& name) const {
  auto it = tensor_index_.find(name);
  if (it == tensor_index_.end())
    fail("no tensor named '" + name + "' (the file has " + str(tensors_.size()) + " tensors)");
  return tensors_[it->second];
}

torch::Tensor GgufFile::tensor(const std::string& name, torch::ScalarType out) const {
  const GgufTensorInfo& info = tensor_info(name);
  const GgmlTypeTraits* traits = ggml_type_traits(info.type);
  if (!traits->dequantizable)
    fail("tensor '" + name + "' is " + traits->name + ", which uio cannot dequantise (it reads " +
         dequantizable_type_names() + "); requantise the model with llama.cpp's llama-quantize to one of them");
  auto result = torch::empty(info.shape(), torch::kFloat);
  const int64_t num_blocks = info.num_elements / traits->block_size;
  const uint8_t* src = tensor_data(info);
  float* dst = result.data_ptr<float>();
  const int64_t block_size = traits->block_size, type_size = traits->type_size;
  const int64_t grain = std::max<int64_t>(1, 16384 / block_size);  // ~64 KiB of output per task
  at::parallel_for(0, num_blocks, grain, [&](int64_t begin, int64_t end) {
    dequantize_blocks(info.type, src + begin * type_size, dst + begin * block_size, end - begin);
  });
  return out == torch::kFloat ? result : result.to(out);
}

std::string describe_gguf(const GgufFile& file) {
  std::ostringstream os;
  os << file.path() << ": GGUF v" << file.version() << ", " << file.metadata().size() << " metadata keys, "
     << file.tensors().size() << " tensors, alignment " << file.alignment() << ", data at byte " << file.data_offset()
     << "\n";
  for (const auto& [key, value] : file.metadata())
    os << "  " << key << " (" << gguf_value_type_name(value.type) << ") = " << value.to_string() << "\n";
  for (const auto& t : file.tensors())
    os << "  tensor " << t.name << " " << t.type_name() << " " << dims_string(t.shape()) << " (" << t.nbytes
       << " bytes at " << t.offset << ")\n";
  return os.str();
}

}  // namespace uio::format
