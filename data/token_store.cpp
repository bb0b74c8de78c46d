// data/token_store.cpp — writing and mmap-reading the tokens.bin + index.bin pair (format: token_store.h).
#include "data/token_store.h"

#include "data/format/atomic_file.h"
#include "data/format/mapped_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <unistd.h>

namespace uio::data {

namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'U', 'I', 'O', 'T', 'O', 'K', 'I', 'X'};
constexpr uint32_t kVersion = 1;
constexpr const char* kTokensFile = "tokens.bin";
constexpr const char* kIndexFile = "index.bin";

void require_little_endian() {
  const uint16_t probe = 1;
  unsigned char first;
  std::memcpy(&first, &probe, 1);
  if (first != 1) throw std::runtime_error("token store: only little-endian hosts are supported");
}

int bytes_per_token_for(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

// ---- index.bin encoding: fixed-width little-endian fields appended to a byte string ----
template <typename T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}
void put_string(std::string& out, const std::string& s) {
  put<uint32_t>(out, static_cast<uint32_t>(s.size()));
  out += s;
}

// Reads fields off index.bin, checking each against the bytes left.
class IndexReader {
 public:
  IndexReader(const std::string& bytes, std::string path) : bytes_(bytes), path_(std::move(path)) {}
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  std::string get_string(const char* what) {
    auto n = get<uint32_t>(what);
    need(n, what);
    std::string s = bytes_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  size_t pos() const { return pos_; }
  size_t size() const { return bytes_.size(); }

 private:
  void need(size_t n, const char* what) const {
    if (bytes_.size() - pos_ < n)
      throw std::runtime_error("token store: " + path_ + " is truncated: " + what + " needs " + std::to_string(n) +
                               " bytes at offset " + std::to_string(pos_) + " but the file has " +
                               std::to_string(bytes_.size()) + " bytes; re-run uio prepare");
  }
  const std::string& bytes_;
  std::string path_;
  size_t pos_ = 0;
};

std::string read_whole(const fs::path& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (fs::exists(status) && !fs::is_regular_file(status))
    throw std::runtime_error("token store: " + path.string() + " is not a regular file (a directory?); a token store " +
                             "is a directory holding the files index.bin and tokens.bin written by uio prepare");
  if (!fs::exists(status) && fs::is_regular_file(path.parent_path()))
    throw std::runtime_error("token store: " + path.parent_path().string() + " is a file; pass the directory uio " +
                             "prepare wrote (holding index.bin and tokens.bin)");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("token store: cannot open " + path.string() +
                             " (is this a directory written by uio prepare?)");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

const char* split_name(Split split) { return split == Split::train ? "train" : "heldout"; }

// ---------------------------------------------------------------------------------------------
// Writer

TokenStoreWriter::TokenStoreWriter(const std::string& dir, TokenStoreMeta meta)
    : dir_(dir), meta_(std::move(meta)), bytes_per_token_(bytes_per_token_for(meta_.vocab_size)) {
  require_little_endian();
  if (meta_.vocab_size <= 0 || meta_.vocab_size > (int64_t{1} << 32))
    throw std::invalid_argument("token store " + dir + ": vocabulary size " + std::to_string(meta_.vocab_size) +
                                " is outside [1, 2^32]");
  fs::create_directories(dir_);
  auto tmp = fs::path(dir_) / (std::string(kTokensFile) + ".tmp");
  tokens_ = std::fopen(tmp.c_str(), "wb");
  if (!tokens_) throw std::runtime_error("token store: cannot create " + tmp.string() + ": " + std::strerror(errno));
}

TokenStoreWriter::~TokenStoreWriter() {
  if (finished_) return;
  if (tokens_) std::fclose(tokens_);
  std::error_code ignored;
  fs::remove(fs::path(dir_) / (std::string(kTokensFile) + ".tmp"), ignored);
  fs::remove(fs::path(dir_) / (std::string(kIndexFile) + ".tmp"), ignored);
}

void TokenStoreWriter::add(const std::string& source, Split split, const std::vector<int32_t>& tokens) {
  if (finished_) throw std::logic_error("token store " + dir_ + ": add() after finish()");
  std::vector<unsigned char> buffer(tokens.size() * bytes_per_token_);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t id = tokens[i];
    if (id < 0 || id >= meta_.vocab_size)
      throw std::invalid_argument("token store " + dir_ + ": document '" + source + "' has token id " +
                                  std::to_string(id) + " at position " + std::to_string(i) +
                                  ", outside the vocabulary [0, " + std::to_string(meta_.vocab_size) + ")");
    if (bytes_per_token_ == 2) {
      const auto v = static_cast<uint16_t>(id);
      std::memcpy(&buffer[2 * i], &v, 2);
    } else {
      const auto v = static_cast<uint32_t>(id);
      std::memcpy(&buffer[4 * i], &v, 4);
    }
  }
  if (!buffer.empty() && std::fwrite(buffer.data(), 1, buffer.size(), tokens_) != buffer.size())
    throw std::runtime_error("token store: writing " + dir_ + "/" + kTokensFile +
                             ".tmp failed: " + std::strerror(errno));
  documents_.push_back({source, split, num_tokens_, static_cast<int64_t>(tokens.size())});
  num_tokens_ += static_cast<int64_t>(tokens.size());
}

void TokenStoreWriter::finish() {
  if (finished_) return;
  const fs::path dir(dir_);
  // Flushed and synced before the index that describes it is written.
  const bool synced = std::fflush(tokens_) == 0 && ::fsync(::fileno(tokens_)) == 0;
  if (std::fclose(tokens_) != 0 || !synced) {
    tokens_ = nullptr;
    throw std::runtime_error("token store: closing " + dir_ + "/" + kTokensFile +
                             ".tmp failed: " + std::strerror(errno));
  }
  tokens_ = nullptr;

  std::string index(kMagic, sizeof(kMagic));
  put<uint32_t>(index, kVersion);
  put<uint32_t>(index, static_cast<uint32_t>(bytes_per_token_));
  put<uint64_t>(index, static_cast<uint64_t>(meta_.vocab_size));
  put<int64_t>(index, meta_.eos_id);
  put<uint64_t>(index, documents_.size());
  put<uint64_t>(index, static_cast<uint64_t>(num_tokens_));
  put_string(index, meta_.tokenizer);
  for (const auto& d : documents_) {
    put<uint64_t>(index, static_cast<uint64_t>(d.offset));
    put<uint64_t>(index, static_cast<uint64_t>(d.length));
    put<uint8_t>(index, static_cast<uint8_t>(d.split));
    put_string(index, d.source);
  }
  // tokens.bin first, index.bin last (whole, through a checked temporary file): a crash in between
  // leaves an index that no longer matches the token file, which opening reports, never a silently
  // wrong store.
  fs::rename(dir / (std::string(kTokensFile) + ".tmp"), dir / kTokensFile);
  try {
    format::write_file_atomic((dir / kIndexFile).string(), index);
  } catch (const format::FormatError& e) {
    throw std::runtime_error(std::string("token store: ") + e.what());
  }
  finished_ = true;
}

// ---------------------------------------------------------------------------------------------
// Reader

TokenStore::TokenStore(const std::string& dir) : dir_(dir) {
  require_little_endian();
  const fs::path index_path = fs::path(dir) / kIndexFile;
  const fs::path tokens_path = fs::path(dir) / kTokensFile;
  const std::string where = "token store " + dir + ": ";
  const std::string bytes = read_whole(index_path);
  IndexReader in(bytes, index_path.string());

  char magic[sizeof(kMagic)];
  for (auto& c : magic) c = in.get<char>("the magic");
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0)
    throw std::runtime_error(where + "index.bin does not start with \"UIOTOKIX\" (not a uio token index)");
  const auto version = in.get<uint32_t>("the version");
  if (version != kVersion)
    throw std::runtime_error(where + "index.bin has format version " + std::to_string(version) +
                             ", this build reads version " + std::to_string(kVersion) + "; re-run uio prepare");
  bytes_per_token_ = static_cast<int>(in.get<uint32_t>("the token width"));
  meta_.vocab_size = static_cast<int64_t>(in.get<uint64_t>("the vocabulary size"));
  const auto eos_id = in.get<int64_t>("the EOS id");
  const auto num_docs = in.get<uint64_t>("the document count");
  const auto num_tokens = in.get<uint64_t>("the token count");
  meta_.tokenizer = in.get_string("the tokenizer identity");
  if (eos_id < -1 || eos_id >= meta_.vocab_size)
    throw std::runtime_error(where + "index.bin says the EOS id is " + std::to_string(eos_id) +
                             ", outside the vocabulary [0, " + std::to_string(meta_.vocab_size) +
                             ") (-1: none); the file is damaged, re-run uio prepare");
  meta_.eos_id = static_cast<int32_t>(eos_id);
  if (bytes_per_token_ != 2 && bytes_per_token_ != 4)
    throw std::runtime_error(where + "index.bin says " + std::to_string(bytes_per_token_) +
                             " bytes per token, expected 2 or 4");
  if (meta_.vocab_size <= 0 || meta_.vocab_size > (int64_t{1} << 32) ||
      bytes_per_token_ != bytes_per_token_for(meta_.vocab_size))
    throw std::runtime_error(where + "index.bin says vocabulary size " + std::to_string(meta_.vocab_size) + " with " +
                             std::to_string(bytes_per_token_) + "-byte tokens, which do not fit together");
  // Each document entry takes at least 21 bytes: reject absurd counts before reserving memory.
  if (num_docs > (in.size() - in.pos()) / 21)
    throw std::runtime_error(where + "index.bin says " + std::to_string(num_docs) + " documents but has room for " +
                             std::to_string((in.size() - in.pos()) / 21) +
                             "; the file is truncated, re-run uio prepare");
  documents_.reserve(num_docs);
  uint64_t expected_offset = 0;
  for (uint64_t i = 0; i < num_docs; ++i) {
    DocumentInfo d;
    const auto offset = in.get<uint64_t>("a document offset");
    const auto length = in.get<uint64_t>("a document length");
    const auto split = in.get<uint8_t>("a document split");
    d.source = in.get_string("a document name");
    if (split > 1)
      throw std::runtime_error(where + "index.bin: document " + std::to_string(i) + " ('" + d.source +
                               "') has split code " + std::to_string(split) + ", expected 0 (train) or 1 (heldout)");
    if (offset != expected_offset || length > num_tokens - std::min(offset, num_tokens))
      throw std::runtime_error(where + "index.bin: document " + std::to_string(i) + " ('" + d.source +
                               "') spans tokens [" + std::to_string(offset) + ", +" + std::to_string(length) +
                               ") but should start at " + std::to_string(expected_offset) + " and end by " +
                               std::to_string(num_tokens) + "; re-run uio prepare");
    d.offset = static_cast<int64_t>(offset);
    d.length = static_cast<int64_t>(length);
    d.split = static_cast<Split>(split);
    expected_offset += length;
    documents_.push_back(std::move(d));
  }
  if (expected_offset != num_tokens)
    throw std::runtime_error(where + "index.bin: its documents hold " + std::to_string(expected_offset) +
                             " tokens but its header says " + std::to_string(num_tokens) + "; re-run uio prepare");
  if (in.pos() != in.size())
    throw std::runtime_error(where + "index.bin has " + std::to_string(in.size() - in.pos()) +
                             " bytes after its last document; re-run uio prepare");
  num_tokens_ = static_cast<int64_t>(num_tokens);

  try {
    tokens_ = std::make_unique<format::MappedFile>(tokens_path, "tokens.bin of a token store");
  } catch (const format::FormatError& err) {
    throw std::runtime_error(std::string(err.what()) + "; re-run uio prepare");
  }
  const uint64_t file_size = tokens_->size();
  if (file_size != num_tokens * static_cast<uint64_t>(bytes_per_token_))
    throw std::runtime_error(where + "index.bin says " + std::to_string(num_tokens) + " tokens but tokens.bin holds " +
                             std::to_string(file_size / bytes_per_token_) + " (" + std::to_string(file_size) +
                             " bytes of " + std::to_string(bytes_per_token_) + "-byte tokens); re-run uio prepare");
  map_ = tokens_->data();
}

TokenStore::~TokenStore() = default;

const DocumentInfo& TokenStore::document(int64_t i) const {
  if (i < 0 || i >= num_documents())
    throw std::out_of_range("token store " + dir_ + ": document " + std::to_string(i) + " requested, it has " +
                            std::to_string(num_documents()));
  return documents_[static_cast<size_t>(i)];
}

template <typename T>
void TokenStore::read_as(int64_t doc, int64_t begin, int64_t count, T* out) const {
  const auto& d = document(doc);
  if (begin < 0 || count < 0 || begin > d.length || count > d.length - begin)
    throw std::out_of_range("token store " + dir_ + ": tokens [" + std::to_string(begin) + ", +" +
                            std::to_string(count) + ") requested from document " + std::to_string(doc) + " ('" +
                            d.source + "') of " + std::to_string(d.length) + " tokens");
  const unsigned char* p = map_ + (d.offset + begin) * bytes_per_token_;
  for (int64_t i = 0; i < count; ++i) {
    uint32_t id;
    if (bytes_per_token_ == 2) {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      id = v;
    } else {
      std::memcpy(&id, p + 4 * i, 4);
    }
    if (id >= static_cast<uint64_t>(meta_.vocab_size))
      throw std::runtime_error("token store " + dir_ + ": tokens.bin holds id " + std::to_string(id) + " at token " +
                               std::to_string(d.offset + begin + i) + ", outside the vocabulary of " +
                               std::to_string(meta_.vocab_size) + "; the file is damaged, re-run uio prepare");
    out[i] = static_cast<T>(id);
  }
}

void TokenStore::check_ids(int64_t vocab_size, const std::string& model) const {
  const auto limit = static_cast<uint64_t>(std::max<int64_t>(vocab_size, 0));
  int64_t bad = -1;
  uint64_t id = 0;
  for (int64_t i = 0; i < num_tokens_ && bad < 0; ++i) {
    if (bytes_per_token_ == 2) {
      uint16_t v;
      std::memcpy(&v, map_ + 2 * i, 2);
      id = v;
    } else {
      uint32_t v;
      std::memcpy(&v, map_ + 4 * i, 4);
      id = v;
    }
    if (id >= limit) bad = i;
  }
  if (bad < 0) return;
  const auto doc = std::upper_bound(documents_.begin(), documents_.end(), bad,
                                    [](int64_t t, const DocumentInfo& d) { return t < d.offset; }) -
                   1;
  throw std::runtime_error("token store " + dir_ + ": tokens.bin holds id " + std::to_string(id) + " at token " +
                           std::to_string(bad - doc->offset) + " of document '" + doc->source + "', outside the " +
                           "vocabulary of " + std::to_string(vocab_size) + " ids of " + model +
                           "; the file is damaged or was prepared with another tokenizer, re-run uio prepare");
}

void TokenStore::read(int64_t doc, int64_t begin, int64_t count, int32_t* out) const {
  read_as(doc, begin, count, out);
}
void TokenStore::read(int64_t doc, int64_t begin, int64_t count, int64_t* out) const {
  read_as(doc, begin, count, out);
}

std::vector<int32_t> TokenStore::tokens(int64_t doc, int64_t begin, int64_t count) const {
  std::vector<int32_t> out(static_cast<size_t>(std::max<int64_t>(count, 0)));
  read_as(doc, begin, count, out.data());
  return out;
}

}  // namespace uio::data
