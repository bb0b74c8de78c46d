// tests/safetensors_test.cpp — safetensors I/O against files written by Python's safetensors and transformers
// (tests/reference/safetensors_ref.py): bit-exact reads, byte-identical writes, zero-copy mapping, sharded HF
// directories, and every kind of corrupt file rejected with a message naming file, tensor and problem.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "data/format/safetensors.h"
#include "tests/test_util.h"

using uio::format::SafetensorsDirectory;
using uio::format::SafetensorsError;
using uio::format::SafetensorsFile;
using uio::format::write_safetensors;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path ref_file(const std::string& name) { return uio::test::testdata("safetensors_ref") / name; }

// One tensor as Python saw it: dtype string, shape, and its raw bytes (from raw/, not from any safetensors file).
struct RefTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

std::vector<RefTensor> load_manifest(const std::string& stem) {
  const Json j = Json::parse(uio::test::read_file(ref_file(stem + ".json")));
  std::vector<RefTensor> out;
  for (const Json& e : j)
    out.push_back({e["name"], e["dtype"], e["shape"].get<std::vector<int64_t>>(),
                   uio::test::read_file(ref_file("raw") / e["raw"].get<std::string>())});
  return out;
}

torch::ScalarType dtype_of(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> kDtypes = {
      {"F64", torch::kDouble}, {"F32", torch::kFloat}, {"F16", torch::kHalf},  {"BF16", torch::kBFloat16},
      {"I64", torch::kLong},   {"I32", torch::kInt},   {"I16", torch::kShort}, {"I8", torch::kChar},
      {"U8", torch::kByte},    {"BOOL", torch::kBool}};
  return kDtypes.at(name);
}

// The reference tensor rebuilt from its raw bytes alone (independent of uio's reader).
torch::Tensor from_raw(const RefTensor& r) {
  auto t = torch::empty(r.shape, torch::TensorOptions().dtype(dtype_of(r.dtype)));
  EXPECT_EQ(static_cast<size_t>(t.nbytes()), r.bytes.size()) << r.name;
  if (t.nbytes() > 0 && r.bytes.size() == static_cast<size_t>(t.nbytes()))
    std::memcpy(t.data_ptr(), r.bytes.data(), r.bytes.size());
  return t;
}

void expect_bit_equal(const torch::Tensor& got, const RefTensor& want) {
  EXPECT_EQ(got.scalar_type(), dtype_of(want.dtype)) << want.name;
  EXPECT_EQ(got.sizes().vec(), want.shape) << want.name;
  ASSERT_TRUE(got.is_contiguous()) << want.name;
  ASSERT_EQ(static_cast<size_t>(got.nbytes()), want.bytes.size()) << want.name;
  if (!want.bytes.empty()) {
    EXPECT_EQ(std::memcmp(got.data_ptr(), want.bytes.data(), want.bytes.size()), 0) << want.name << " differs";
  }
}

// A safetensors file from its parts: little-endian header length, header text as given (no padding added),
// data bytes.
std::string assemble(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(static_cast<uint64_t>(header.size()) >> (8 * i));
  return out + header + data;
}

struct Parts {
  Json header;
  std::string data;
};

Parts split(const std::string& file) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file[i]);
  return {Json::parse(file.substr(8, n)), file.substr(8 + n)};
}

// Writes `bytes` to a scratch file and expects SafetensorsError naming the file and containing each of
// `needles`; `read` may touch tensors after opening (for errors found when a tensor is read).
void expect_error(const std::string& bytes, const std::vector<std::string>& needles,
                  const std::function<void(const uio::format::SafetensorsFile&)>& read = nullptr) {
  const auto path = (uio::test::scratch_dir() / "bad.safetensors").string();
  uio::test::write_file(path, bytes);
  try {
    uio::format::SafetensorsFile file(path);
    if (read) read(file);
    FAIL() << "expected an error containing '" << needles.front() << "'";
  } catch (const uio::format::SafetensorsError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "message does not start with the file: " << msg;
    for (const auto& needle : needles)
      EXPECT_NE(msg.find(needle), std::string::npos) << "missing '" << needle << "' in: " << msg;
  }
}

// Python's basic.safetensors with its header edited by `edit` (data unchanged), re-assembled unpadded.
std::string edited_basic(const std::function<void(Json&)>& edit) {
  Parts p = split(uio::test::read_file(ref_file("basic.safetensors")));
  edit(p.header);
  return assemble(p.header.dump(), p.data);
}

// Two F32 tensors a [2, 3] and b [4] over `data_size` random bytes, with the given offsets.
std::string two_tensors(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1, size_t data_size) {
  Json h;
  h["a"] = {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {a0, a1}}};
  h["b"] = {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {b0, b1}}};
  std::mt19937 rng(7);
  std::string data(data_size, '\0');
  for (auto& c : data) c = static_cast<char>(rng());
  return assemble(h.dump(), data);
}

}  // namespace

// ---- reading files written by Python ----

TEST(SafetensorsReader, ReadsEveryDtypeWrittenByPythonBitExactly) {
  uio::format::SafetensorsFile file(ref_file("basic.safetensors").string());
  const auto want = load_manifest("basic");
  ASSERT_EQ(file.tensors().size(), want.size());
  for (const RefTensor& r : want) {
    ASSERT_TRUE(file.contains(r.name)) << r.name;
    expect_bit_equal(file.tensor(r.name), r);
  }
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  // tensors() is in file order: offsets increase and tile the data section.
  uint64_t covered = 0;
  for (const auto& t : file.tensors()) {
    EXPECT_EQ(t.begin, covered) << t.name;
    covered = t.end;
  }
  EXPECT_EQ(covered, file.file_size() - file.data_offset());
}

TEST(SafetensorsReader, ReadsMetadataWrittenByPython) {
  uio::format::SafetensorsFile file(ref_file("metadata.safetensors").string());
  const Json want = Json::parse(uio::test::read_file(ref_file("metadata.json")))["metadata"];
  EXPECT_EQ(file.metadata(), (want.get<std::map<std::string, std::string>>()));
  EXPECT_EQ(file.metadata().at("unicode"), "h\xc3\xa9llo \xe2\x9c\x93");
}

TEST(SafetensorsReader, AlignedTensorsAliasTheMappingWithoutACopy) {
  const auto want = load_manifest("basic");
  std::vector<torch::Tensor> tensors;
  {
    uio::format::SafetensorsFile file(ref_file("basic.safetensors").string());
    const uint8_t* lo = file.mapping() + file.data_offset();
    const uint8_t* hi = file.mapping() + file.file_size();
    for (const RefTensor& r : want) {
      auto t = file.tensor(r.name);
      const auto* p = static_cast<const uint8_t*>(t.data_ptr());
      if (t.numel() > 0) {
        EXPECT_EQ(p, lo + file.info(r.name).begin) << r.name << " was copied";
        EXPECT_TRUE(p >= lo && p + t.nbytes() <= hi) << r.name;
      }
      tensors.push_back(t);
    }
  }
  // The file object is gone; the tensors keep the mapping alive.
  for (size_t i = 0; i < want.size(); ++i) expect_bit_equal(tensors[i], want[i]);
}

TEST(SafetensorsReader, MisalignedTensorsAreCopiedWithTheSameValues) {
  // A header of 8k+1 bytes puts the data at an odd address: F32 cannot alias it and is copied.
  const std::string header = R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  std::string padded = header + std::string((8 - header.size() % 8) % 8 + 1, ' ');
  ASSERT_EQ(padded.size() % 8, 1u);
  torch::manual_seed(uio::test::test_seed());
  auto want = torch::randn({3});
  const std::string data(static_cast<const char*>(want.data_ptr()), 12);
  const auto path = (uio::test::scratch_dir() / "odd.safetensors").string();
  uio::test::write_file(path, assemble(padded, data));
  uio::format::SafetensorsFile file(path);
  auto got = file.tensor("x");
  const auto* p = static_cast<const uint8_t*>(got.data_ptr());
  EXPECT_FALSE(p >= file.mapping() && p < file.mapping() + file.file_size()) << "misaligned data was aliased";
  EXPECT_TRUE(torch::equal(got, want));
}

TEST(SafetensorsReader, MappedTensorsAreReadOnly) {
  uio::format::SafetensorsFile file(ref_file("basic.safetensors").string());
  auto t = file.tensor("model.layers.0.weight");
  EXPECT_DEATH(t.add_(1.0), "");
  auto copy = t.clone();  // the way to get a writable tensor
  copy.add_(1.0);
  EXPECT_TRUE(torch::allclose(copy - 1.0, t));
}

TEST(SafetensorsReader, ShapeCheckedReadNamesFileTensorAndBothShapes) {
  const auto path = ref_file("basic.safetensors").string();
  uio::format::SafetensorsFile file(path);
  EXPECT_EQ((file.tensor("half", {13}, "config.json").numel()), 13);
  try {
    file.tensor("model.layers.0.weight", {3, 7, 5}, "config.json");
    FAIL() << "expected an error";
  } catch (const uio::format::SafetensorsError& e) {
    EXPECT_EQ(std::string(e.what()),
              path + ": tensor 'model.layers.0.weight' has shape [3, 5, 7], config.json expects [3, 7, 5]");
  }
}

TEST(SafetensorsReader, MissingTensorNamesFileTensorAndExamples) {
  const auto path = ref_file("basic.safetensors").string();
  uio::format::SafetensorsFile file(path);
  EXPECT_FALSE(file.contains("nope"));
  try {
    file.tensor("nope");
    FAIL() << "expected an error";
  } catch (const uio::format::SafetensorsError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": no tensor 'nope' (file has 13 tensors, e.g. '", 0), 0u) << msg;
  }
}

// ---- writing ----

TEST(SafetensorsWriter, WritesTheSameBytesAsPythonSafetensors) {
  // The tensors rebuilt from raw bytes (not from Python's file), in a shuffled order: the writer must sort
  // them the way safetensors does.
  auto want = load_manifest("basic");
  std::shuffle(want.begin(), want.end(), std::mt19937(uio::test::test_seed()));
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const RefTensor& r : want) tensors.emplace_back(r.name, from_raw(r));
  const auto path = (uio::test::scratch_dir() / "ours.safetensors").string();
  uio::format::write_safetensors(path, tensors, {{"format", "pt"}});
  const std::string ours = uio::test::read_file(path), python = uio::test::read_file(ref_file("basic.safetensors"));
  EXPECT_EQ(ours.size(), python.size());
  EXPECT_TRUE(ours == python) << "header ours:   " << ours.substr(8, 300)
                              << "\nheader python: " << python.substr(8, 300);
}

TEST(SafetensorsWriter, RoundTripsEveryDtypeAndNonContiguousInput) {
  torch::manual_seed(uio::test::test_seed());
  auto square = torch::randn({5, 6}, torch::kDouble);
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"transposed", square.t()},  // non-contiguous view
      {"sliced", torch::randn({8, 9}).index({torch::indexing::Slice(), torch::indexing::Slice(1, 9, 3)})},
      {"bf16", torch::randn({3, 1, 4}).to(torch::kBFloat16)},
      {"f16", torch::randn({7}).to(torch::kHalf)},
      {"ids", torch::randint(-1000000, 1000000, {2, 2}, torch::kLong)},
      {"i32", torch::randint(-1000, 1000, {3}, torch::kInt)},
      {"i16", torch::randint(-1000, 1000, {3}, torch::kShort)},
      {"i8", torch::randint(-100, 100, {5}, torch::kChar)},
      {"u8", torch::randint(0, 255, {5}, torch::kByte)},
      {"mask", torch::randint(0, 2, {4}).to(torch::kBool)},
      {"scalar", torch::randn({})},
      {"empty", torch::randn({0, 3})},
      {"naïve \"quoted\"", torch::randn({2})},
  };
  const auto path = (uio::test::scratch_dir() / "round.safetensors").string();
  uio::format::write_safetensors(path, tensors, {{"step", "12"}, {"note", "a\nb"}});

  // Independent look at the bytes: an 8-aligned header of compact JSON, data starting on a multiple of 8.
  const std::string bytes = uio::test::read_file(path);
  Parts parts = split(bytes);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(parts.header["__metadata__"]["note"], "a\nb");
  EXPECT_EQ(parts.header["transposed"]["shape"], Json::array({6, 5}));
  EXPECT_EQ(parts.header["bf16"]["dtype"], "BF16");

  uio::format::SafetensorsFile file(path);
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"note", "a\nb"}, {"step", "12"}}));
  for (const auto& [name, want] : tensors) {
    auto got = file.tensor(name);
    EXPECT_EQ(got.scalar_type(), want.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), want.sizes()) << name;
    EXPECT_TRUE(torch::equal(got, want)) << name;
    const auto& info = file.info(name);
    EXPECT_EQ(info.begin % got.element_size(), 0u) << name << " is not aligned";
  }
  if (torch::cuda::is_available()) {
    auto on_gpu = torch::randn({4, 4}, torch::kCUDA);
    uio::format::write_safetensors(path, {{"g", on_gpu}});
    EXPECT_TRUE(torch::equal(uio::format::SafetensorsFile(path).tensor("g"), on_gpu.cpu()));
  }
}

TEST(SafetensorsWriter, RejectsUnsupportedDtypesAndDuplicateNames) {
  const auto path = (uio::test::scratch_dir() / "w.safetensors").string();
  try {
    uio::format::write_safetensors(path, {{"z", torch::randn({2}, torch::kComplexFloat)}});
    FAIL() << "expected an error";
  } catch (const uio::format::SafetensorsError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": tensor 'z' has dtype ComplexFloat"), std::string::npos) << e.what();
  }
  try {
    uio::format::write_safetensors(path, {{"w", torch::randn({2})}, {"w", torch::randn({3})}});
    FAIL() << "expected an error";
  } catch (const uio::format::SafetensorsError& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'w' is given twice"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(path)) << "a failed write left a file behind";
}

// ---- HF model directories ----

TEST(SafetensorsDirectory, ReadsAShardedTransformersCheckpoint) {
  uio::format::SafetensorsDirectory dir(ref_file("sharded").string());
  const auto want = load_manifest("sharded");
  std::vector<std::string> want_names;
  for (const RefTensor& r : want) want_names.push_back(r.name);
  EXPECT_EQ(dir.names(), want_names);
  EXPECT_GT(dir.files().size(), 2u) << "the reference model should span several shards";
  const Json index = Json::parse(uio::test::read_file(ref_file("sharded") / "model.safetensors.index.json"));
  for (const RefTensor& r : want) {
    expect_bit_equal(dir.tensor(r.name), r);
    EXPECT_EQ(fs::path(dir.file_of(r.name)).filename(), index["weight_map"][r.name].get<std::string>()) << r.name;
  }
}

TEST(SafetensorsDirectory, ReadsASingleFileModelAndAPlainFile) {
  const auto root = uio::test::scratch_dir();
  fs::copy_file(ref_file("basic.safetensors"), root / "model.safetensors");
  const auto want = load_manifest("basic");
  for (const auto& where : {root, root / "model.safetensors"}) {
    uio::format::SafetensorsDirectory dir(where.string());
    ASSERT_EQ(dir.names().size(), want.size());
    for (const RefTensor& r : want) expect_bit_equal(dir.tensor(r.name), r);
    EXPECT_EQ(dir.file_of("half"), (root / "model.safetensors").string());
  }
}

TEST(SafetensorsDirectory, ErrorsNameTheIndexShardAndTensor) {
  const auto root = uio::test::scratch_dir();
  auto expect_dir_error = [&](const std::string& needle) {
    try {
      uio::format::SafetensorsDirectory dir(root.string());
      FAIL() << "expected an error containing " << needle;
    } catch (const uio::format::SafetensorsError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_dir_error(root.string() + ": no model.safetensors or model.safetensors.index.json");

  fs::copy_file(ref_file("basic.safetensors"), root / "shard-1.safetensors");
  const auto index = (root / "model.safetensors.index.json").string();
  uio::test::write_file(index, R"({"weight_map":{"half":"shard-1.safetensors","lost":"shard-2.safetensors"}})");
  expect_dir_error(index + ": weight_map sends tensor 'lost' to shard 'shard-2.safetensors', but " +
                   (root / "shard-2.safetensors").string() + " does not exist");

  uio::test::write_file(index, R"({"weight_map":{"half":"shard-1.safetensors","ghost":"shard-1.safetensors"}})");
  expect_dir_error(index + ": weight_map sends tensor 'ghost' to shard 'shard-1.safetensors', but " +
                   (root / "shard-1.safetensors").string() + " has no such tensor");

  uio::test::write_file(index, R"({"weight_map":{"half":"../basic.safetensors"}})");
  expect_dir_error("weight_map['half'] is '../basic.safetensors', expected a file name inside the model directory");

  uio::test::write_file(index, R"({"metadata":{}})");
  expect_dir_error(index + ": expected a JSON object with a 'weight_map' object");

  uio::test::write_file(index, R"({"weight_map":{"half":"shard-1.safetensors","mask":"shard-1.safetensors"}})");
  uio::format::SafetensorsDirectory dir(root.string());
  EXPECT_EQ(dir.names(), (std::vector<std::string>{"half", "mask"}));
  try {
    dir.tensor("model.norm.weight");
    FAIL() << "expected an error";
  } catch (const uio::format::SafetensorsError& e) {
    EXPECT_EQ(std::string(e.what()),
              index + ": no tensor 'model.norm.weight' (the model has 2 tensors, e.g. 'half', 'mask')");
  }
}

// ---- corrupt files: each rejected with a message naming file, tensor and what is wrong ----

TEST(SafetensorsValidation, FileShorterThanTheLengthField) {
  expect_error(uio::test::read_file(ref_file("basic.safetensors")).substr(0, 5),
               {"file is 5 bytes, shorter than the 8-byte header length"});
}

TEST(SafetensorsValidation, HeaderLengthPastTheEndOfTheFile) {
  const std::string good = uio::test::read_file(ref_file("basic.safetensors"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(good[i]);
  const std::string cut = good.substr(0, 8 + n - 3);
  expect_error(cut, {"header length " + std::to_string(n) + " runs past the end of the file (file is " +
                     std::to_string(cut.size()) + " bytes"});
  std::string huge = good;
  for (int i = 0; i < 8; ++i) huge[i] = '\xff';  // 2^64 - 1: must not wrap around
  expect_error(huge, {"header length 18446744073709551615 runs past the end of the file"});
}

TEST(SafetensorsValidation, HeaderThatIsNotAJsonObject) {
  expect_error(assemble(R"({"a": {"dtype": )", ""), {"header is not valid JSON"});
  expect_error(assemble("[1, 2]  ", ""), {"header is a JSON array, expected an object"});
  expect_error(assemble(R"({"__metadata__": {"step": 3}})", ""), {"'__metadata__' key 'step' is 3, expected a string"});
}

TEST(SafetensorsValidation, EntryMissingOrWronglyTypedFields) {
  for (const char* key : {"dtype", "shape", "data_offsets"})
    expect_error(edited_basic([&](Json& h) { h["half"].erase(key); }),
                 {"tensor 'half' has no '" + std::string(key) + "'"});
  expect_error(edited_basic([](Json& h) { h["half"]["dtype"] = 5; }),
               {"tensor 'half': 'dtype' is 5, expected a string"});
  expect_error(edited_basic([](Json& h) { h["half"]["shape"] = "13"; }),
               {"tensor 'half': 'shape' is \"13\", expected a list of sizes"});
  expect_error(edited_basic([](Json& h) { h["half"]["shape"] = {1.5}; }),
               {"tensor 'half': shape [1.5] holds 1.5, expected non-negative integers"});
  expect_error(edited_basic([](Json& h) { h["half"]["data_offsets"] = {4}; }),
               {"tensor 'half': 'data_offsets' is [4], expected [begin, end]"});
  expect_error(edited_basic([](Json& h) { h["half"] = 7; }), {"tensor 'half' is a number (7), expected an object"});
}

TEST(SafetensorsValidation, UnknownDtypeNamesItAndTheTensor) {
  expect_error(edited_basic([](Json& h) { h["brain"]["dtype"] = "F7"; }),
               {"tensor 'brain' has unknown or unsupported dtype 'F7' (supported: F64, F32"});
}

TEST(SafetensorsValidation, NegativeOrAbsurdShapes) {
  expect_error(edited_basic([](Json& h) {
                 h["half"]["shape"] = {-1, 13};
               }),
               {"tensor 'half': shape [-1,13] has a negative or absurd size -1"});
  expect_error(edited_basic([](Json& h) {
                 h["half"]["shape"] = {uint64_t{1} << 40, uint64_t{1} << 40};
               }),
               {"tensor 'half': shape [1099511627776,1099511627776] is absurd"});
  // Zero elements, but strides past int64: torch could not even describe it.
  expect_error(edited_basic([](Json& h) {
                 h["empty"]["shape"] = {0, uint64_t{1} << 40, uint64_t{1} << 40};
               }),
               {"tensor 'empty': shape [0,1099511627776,1099511627776] is absurd"});
}

TEST(SafetensorsValidation, OffsetsEndingBeforeTheyBeginOrOutOfRange) {
  expect_error(edited_basic([](Json& h) {
                 auto o = h["half"]["data_offsets"];
                 h["half"]["data_offsets"] = {o[1], o[0]};
               }),
               {"tensor 'half': data_offsets [", "end before they begin"});
  expect_error(two_tensors(0, 24, 24, 4000, 40),
               {"tensor 'b': data_offsets [24, 4000] are out of range: the data section holds 40 bytes"});
  // A valid file cut short by a few bytes: its last tensor runs past the data.
  const std::string good = uio::test::read_file(ref_file("basic.safetensors"));
  expect_error(good.substr(0, good.size() - 3), {"are out of range", "is the file truncated?"});
}

TEST(SafetensorsValidation, ByteSizeThatDisagreesWithDtypeAndShape) {
  expect_error(edited_basic([](Json& h) { h["half"]["shape"] = {12}; }),
               {"tensor 'half' holds 26 bytes, but dtype F16 and shape [12] need 24"});
}

TEST(SafetensorsValidation, OverlappingTensors) {
  expect_error(two_tensors(0, 24, 20, 36, 40), {"tensors 'a' [0, 24] and 'b' [20, 36] overlap in the data section"});
}

TEST(SafetensorsValidation, HolesInTheDataSection) {
  expect_error(two_tensors(0, 24, 28, 44, 44),
               {"hole in the data section: bytes [24, 28] belong to no tensor (between 'a' and 'b')"});
  expect_error(two_tensors(4, 28, 28, 44, 44), {"bytes [0, 4] belong to no tensor (before the first tensor 'a')"});
  expect_error(two_tensors(0, 24, 24, 40, 44),
               {"the data section holds 44 bytes but its tensors cover only 40 (bytes [40, 44] at the end"});
  // The same layout without the hole is fine.
  const auto path = (uio::test::scratch_dir() / "ok.safetensors").string();
  uio::test::write_file(path, two_tensors(0, 24, 24, 40, 40));
  EXPECT_EQ(uio::format::SafetensorsFile(path).tensors().size(), 2u);
}

TEST(SafetensorsValidation, DuplicateTensorNames) {
  const std::string entry = R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  expect_error(assemble(R"({"w":)" + entry + R"(,"w":)" + entry + "}", "abcd"),
               {"header names 'w' twice (duplicate tensor name)"});
}

TEST(SafetensorsValidation, BoolBytesOtherThanZeroOrOneAreRejectedOnRead) {
  expect_error(assemble(R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})", std::string("\x01\x00\x02", 3)),
               {"tensor 'm' (BOOL) holds byte 2 at element 2, expected 0 or 1"},
               [](const uio::format::SafetensorsFile& f) { f.tensor("m"); });
}

// Random byte flips (mostly in the header) and truncations of a valid file: opening and reading every
// tensor either works or throws SafetensorsError; nothing else escapes and nothing reads out of bounds
// (run under -DUIO_ASAN=ON to check the latter).
TEST(SafetensorsFuzz, RandomCorruptionsOnlyEverThrowSafetensorsError) {
  const std::string good = uio::test::read_file(ref_file("basic.safetensors"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(good[i]);
  const auto path = (uio::test::scratch_dir() / "fuzz.safetensors").string();
  std::mt19937_64 rng(uio::test::test_seed());
  const char kInteresting[] = {'0', '9', '-', '"', ',', '[', ']', '{', '}', ':', ' ', '\0', '\xff', 'e', '.'};
  int opened = 0, rejected = 0;
  for (int iter = 0; iter < 1500; ++iter) {
    std::string bytes = good;
    const int kind = static_cast<int>(rng() % 4);
    if (kind == 0) {
      bytes.resize(rng() % bytes.size());
    } else if (kind == 1) {
      for (int k = 0; k < 8; ++k) bytes[k] = static_cast<char>(rng());
      if (rng() % 2) bytes[3] = bytes[4] = bytes[5] = bytes[6] = bytes[7] = 0;  // plausible lengths
    } else {
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < flips; ++k) {
        const size_t at = 8 + rng() % (kind == 2 ? n : bytes.size() - 8);
        bytes[at] = rng() % 2 ? kInteresting[rng() % sizeof kInteresting] : static_cast<char>(rng());
      }
    }
    uio::test::write_file(path, bytes);
    try {
      uio::format::SafetensorsFile file(path);
      double sum = 0;
      for (const auto& t : file.tensors()) sum += file.tensor(t.name).to(torch::kDouble).sum().item<double>();
      (void)sum;
      ++opened;
    } catch (const uio::format::SafetensorsError&) {
      ++rejected;
    } catch (const std::exception& e) {
      FAIL() << "iteration " << iter << " threw something other than uio::format::SafetensorsError: " << e.what();
    }
  }
  EXPECT_GT(rejected, 500);
  EXPECT_GT(opened, 50);  // flips in the data section leave a valid file
}

// ---- hostile nesting and files that are not files ----

namespace {

// `depth` nested JSON arrays around `inner`: [[[...inner...]]].
std::string nested(size_t depth, const std::string& inner = "1") {
  return std::string(depth, '[') + inner + std::string(depth, ']');
}

}  // namespace

// A header nested tens of thousands of levels deep (in a tensor entry, in a shape, in __metadata__) is
// refused while parsing, naming the file: printing or freeing such a value recursively overflows the stack.
TEST(SafetensorsValidation, DeeplyNestedHeaderIsRefusedWithoutOverflowingTheStack) {
  const std::string deep = nested(60000);
  for (const std::string& header :
       {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":)" + deep + "}}",
        R"({"a":{"dtype":)" + deep + R"(,"shape":[1],"data_offsets":[0,4]}})",
        R"({"a":{"dtype":"F32","shape":)" + deep + R"(,"data_offsets":[0,4]}})",
        R"({"__metadata__":{"k":)" + deep + R"(},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
        R"({"a":)" + deep + "}"})
    expect_error(assemble(header, std::string(4, '\0')), {"nested deeper than"});
}

TEST(SafetensorsDirectory, DeeplyNestedIndexIsRefusedNamingTheIndex) {
  const auto root = uio::test::scratch_dir();
  fs::copy_file(ref_file("basic.safetensors"), root / "shard-1.safetensors");
  const auto index = (root / "model.safetensors.index.json").string();
  uio::test::write_file(index, R"({"weight_map":{"half":)" + nested(60000, "\"shard-1.safetensors\"") + "}}");
  try {
    uio::format::SafetensorsDirectory dir(root.string());
    FAIL() << "expected an error";
  } catch (const uio::format::SafetensorsError& e) {
    EXPECT_NE(std::string(e.what()).find(index + ": "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nested deeper than"), std::string::npos) << e.what();
  }
}

// A FIFO (or a directory) where a weight file or the index should be: refused by its path before any
// open() could block on it. A watchdog opens the FIFO's writing end after a while, so a reader that did
// block is released and the test fails instead of hanging.
TEST(SafetensorsDirectory, FifoOrDirectoryInPlaceOfAFileIsRefusedWithoutBlocking) {
  for (const std::string name : {"model.safetensors", "model.safetensors.index.json"}) {
    for (const bool fifo : {true, false}) {
      const auto root = uio::test::scratch_dir();
      const auto path = root / name;
      if (fifo)
        ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
      else
        fs::create_directories(path);
      std::atomic<bool> done{false};
      std::thread watchdog([&] {
        for (int i = 0; i < 40 && !done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
        if (!done && fifo) {
          const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK);
          if (fd >= 0) ::close(fd);
        }
      });
      const auto t0 = std::chrono::steady_clock::now();
      try {
        uio::format::SafetensorsDirectory dir(root.string());
        ADD_FAILURE() << name << (fifo ? " (FIFO)" : " (directory)") << ": expected an error";
      } catch (const uio::format::SafetensorsError& e) {
        EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
      }
      done = true;
      watchdog.join();
      EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.5)
          << name << ": opening blocked";
    }
  }
}
