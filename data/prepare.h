// data/prepare.h — turns text files into a token store (data/token_store.h): finds the files, skips
// binary ones, splits them into documents, tokenises in parallel, assigns the held-out split, and
// reports what it made. `uio prepare` parses its options into PrepareOptions and calls prepare_corpus.
#pragma once

#include <array>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "data/token_store.h"
#include "data/tokenizer.h"

namespace uio::data {

struct PrepareOptions {
  // Files, directories (read recursively; names starting with '.' are skipped) and glob patterns.
  std::vector<std::string> inputs;
  std::string out_dir;
  // Empty: one document per file. Else each file is split at lines equal to this string (the
  // separator lines themselves are dropped).
  std::string separator;
  double heldout_fraction = 0.01;
  uint64_t seed = 0;
  int threads = 0;  // 0: std::thread::hardware_concurrency()
};

// Length buckets of the summary's histogram, in tokens: [0,1K) [1K,8K) [8K,32K) [32K,100K) [100K,inf).
constexpr std::array<int64_t, 4> kLengthBucketEdges = {1024, 8192, 32768, 100000};

struct PrepareSummary {
  int64_t files = 0;  // text files read
  int64_t skipped_files = 0;  // binary files left out (each named in the log)
  int64_t empty_documents = 0;  // documents with no tokens, left out
  int64_t documents = 0;  // documents stored
  int64_t heldout_documents = 0;
  int64_t tokens = 0;
  int64_t heldout_tokens = 0;
  int64_t bytes = 0;  // text bytes tokenised
  std::array<int64_t, 5> length_histogram{};  // documents per kLengthBucketEdges bucket
  int64_t documents_32k = 0;  // documents of >= 32,768 tokens
  int64_t documents_100k = 0;  // documents of >= 100,000 tokens
  double seconds = 0;
  double tokens_per_second = 0;

  std::string to_text() const;  // a few lines for a log
};

// The document's split. Rule: h = splitmix64(fnv1a64(source) ^ seed); held out when the top 53 bits
// of h, read as a fraction in [0, 1), are below `heldout_fraction`. It depends on the document's own
// name only, so adding or removing other documents never moves a document between splits.
Split heldout_split(const std::string& source, double heldout_fraction, uint64_t seed);

// A string naming the tokenizer (vocabulary size, BOS/EOS ids, and a hash of every token's bytes),
// stored in the index so a store can be matched against the model's tokenizer.
std::string tokenizer_identity(const Tokenizer& tokenizer);

// Source names: the path of a file relative to the root of the input that found it (a directory
// input's own path; a file's parent directory; a glob's longest wildcard-free directory), with "#k"
// appended for the k-th part (from 0) when `separator` splits files. Files are read input by input in the
// order given, each input's files sorted by path, and a file found twice is read once; the store keeps that order.
// Binary files (a NUL byte, or more than 1% of bytes in invalid UTF-8 sequences) are skipped with a
// warning. Throws when no document remains ("no documents found in ..."). `tokenizer.encode` is
// called from several threads at once.
PrepareSummary prepare_corpus(const PrepareOptions& options, const Tokenizer& tokenizer, std::ostream& log);

// The files `inputs` name, found exactly as prepare_corpus finds them (files, directories read recursively
// without names starting with '.', glob patterns; each input's files sorted by path, each file once).
// Throws naming an input that exists in no form or a pattern that matches no file.
std::vector<std::string> find_input_files(const std::vector<std::string>& inputs);

// Why prepare_corpus skips `text` as binary ("a NUL byte at offset N", "B of N bytes are not valid UTF-8"),
// or "" when it is text it reads.
std::string why_binary(const std::string& text);

}  // namespace uio::data
