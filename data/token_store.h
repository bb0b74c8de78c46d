// data/token_store.h — a tokenised corpus on disk: one flat token file plus a document index, read
// through mmap. Owns the file format and its validation; tokenising (data/prepare.h) and drawing
// training sequences (data/sampler.h) live elsewhere.
//
// A store is a directory with two files:
//   tokens.bin  every document's tokens back to back, little-endian uint16 when the vocabulary has at
//               most 65,536 ids, else uint32; no header, no separators (documents are stored raw:
//               no BOS, no EOS — the sampler adds EOS where it joins documents).
//   index.bin   little-endian: magic "UIOTOKIX", u32 version (1), u32 bytes per token (2 or 4),
//               u64 vocab size, i64 EOS id (-1: none), u64 document count, u64 token count,
//               u32 length + bytes of the tokenizer identity string; then per document:
//               u64 offset, u64 length (in tokens), u8 split (0 train, 1 held-out),
//               u32 length + bytes of the source name. Documents are contiguous and in order.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace uio::format {
class MappedFile;
}

namespace uio::data {

enum class Split : uint8_t { train = 0, heldout = 1 };

const char* split_name(Split split);

struct DocumentInfo {
  std::string source;  // where it came from: a path relative to its input, "#k" for a file's k-th part
  Split split = Split::train;
  int64_t offset = 0;  // first token's position in tokens.bin
  int64_t length = 0;  // tokens
};

// Header facts shared by the writer and the reader.
struct TokenStoreMeta {
  int64_t vocab_size = 0;
  int32_t eos_id = -1;
  std::string tokenizer;  // identity of the tokenizer the ids belong to (see tokenizer_identity)
};

// Appends documents one by one without holding the corpus in memory; finish() makes the store appear
// atomically (both files are written under temporary names and renamed, index.bin last). A writer
// destroyed before finish() removes its temporary files and leaves any earlier store untouched.
class TokenStoreWriter {
 public:
  TokenStoreWriter(const std::string& dir, TokenStoreMeta meta);
  ~TokenStoreWriter();
  TokenStoreWriter(const TokenStoreWriter&) = delete;
  TokenStoreWriter& operator=(const TokenStoreWriter&) = delete;

  // Ids must lie in [0, vocab_size); throws naming the document otherwise.
  void add(const std::string& source, Split split, const std::vector<int32_t>& tokens);
  void finish();

  int64_t num_documents() const { return static_cast<int64_t>(documents_.size()); }
  int64_t num_tokens() const { return num_tokens_; }

 private:
  std::string dir_;
  TokenStoreMeta meta_;
  int bytes_per_token_;
  std::FILE* tokens_ = nullptr;
  std::vector<DocumentInfo> documents_;
  int64_t num_tokens_ = 0;
  bool finished_ = false;
};

// Read-only view of a store. Opening checks every count and offset of index.bin against the size of
// tokens.bin; reads check token ids against the vocabulary size.
class TokenStore {
 public:
  explicit TokenStore(const std::string& dir);
  ~TokenStore();
  TokenStore(const TokenStore&) = delete;
  TokenStore& operator=(const TokenStore&) = delete;

  int64_t num_documents() const { return static_cast<int64_t>(documents_.size()); }
  const DocumentInfo& document(int64_t i) const;
  int64_t num_tokens() const { return num_tokens_; }
  int bytes_per_token() const { return bytes_per_token_; }
  const TokenStoreMeta& meta() const { return meta_; }
  const std::string& dir() const { return dir_; }

  // Tokens [begin, begin + count) of document `doc` into `out` (count elements).
  void read(int64_t doc, int64_t begin, int64_t count, int32_t* out) const;
  void read(int64_t doc, int64_t begin, int64_t count, int64_t* out) const;
  std::vector<int32_t> tokens(int64_t doc, int64_t begin, int64_t count) const;
  std::vector<int32_t> tokens(int64_t doc) const { return tokens(doc, 0, document(doc).length); }

  // Scans every token once (train and held-out): throws naming tokens.bin, the document and the
  // position of the first id >= vocab_size, the vocabulary of `model` (a path, for the message). A
  // training run calls it at load, so a damaged id stops it there rather than steps later.
  void check_ids(int64_t vocab_size, const std::string& model) const;

 private:
  template <typename T>
  void read_as(int64_t doc, int64_t begin, int64_t count, T* out) const;

  std::string dir_;
  TokenStoreMeta meta_;
  int bytes_per_token_ = 0;
  int64_t num_tokens_ = 0;
  std::vector<DocumentInfo> documents_;
  std::unique_ptr<format::MappedFile> tokens_;
  const unsigned char* map_ = nullptr;
};

}  // namespace uio::data
