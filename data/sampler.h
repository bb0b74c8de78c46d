// data/sampler.h — draws fixed-length training sequences from a token store: deterministic from a
// seed, resumable from a small state, each rank of a data-parallel job seeing its own share. Owns the
// order of sequences; reading tokens is data/token_store.h's, batching and devices the trainer's.
//
// Each epoch lays out a list of sequences over the chosen split and permutes it:
//   long_only  non-overlapping windows of seq_len tokens inside documents of >= seq_len tokens; each
//              document's windows start at a random shift in [0, length mod seq_len] drawn per epoch
//              (so its tail is not always cut off); the window list is shuffled per epoch.
//   join       the documents in a shuffled order, each followed by EOS, concatenated and cut into
//              consecutive sequences of seq_len tokens (the last partial one is dropped).
// Sequence k of an epoch's list goes to rank k mod world_size; every rank takes the same number of
// sequences per epoch (floor(N / world_size)), so the union over ranks is the single-rank stream of
// the epoch cut to a multiple of world_size. Shuffles use the sampler's own generator (splitmix64),
// not the standard library's, so the streams are the same on every platform.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "data/token_store.h"

namespace uio::data {

enum class SamplerMode { long_only, join };

SamplerMode parse_sampler_mode(const std::string& name);  // "long_only" | "join"
const char* sampler_mode_name(SamplerMode mode);

struct SamplerOptions {
  int64_t seq_len = 0;  // tokens per sequence
  SamplerMode mode = SamplerMode::long_only;
  uint64_t seed = 0;
  int rank = 0;
  int world_size = 1;
  Split split = Split::train;
};

// Where the stream stands. It is the same on every rank (all ranks step together), so a checkpoint
// saves it once; restoring it gives exactly the sequences that would have come next, also under a
// different world size (position counts sequences of the epoch's global list).
struct SamplerState {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t position = 0;  // index in the epoch's list of the next step's first sequence

  std::string to_json() const;
  // Throws std::invalid_argument naming the missing or mistyped key.
  static SamplerState from_json(const std::string& json);
  bool operator==(const SamplerState& o) const { return seed == o.seed && epoch == o.epoch && position == o.position; }
};

struct Sequence {
  torch::Tensor tokens;  // [seq_len] int64, on the CPU
  int64_t epoch = 0;
  int64_t index = 0;  // place in the epoch's global list
};

class Sampler {
 public:
  // Throws when the split has too little text: in long_only mode the message names seq_len and the
  // longest document; in both modes an epoch must hold at least one sequence per rank.
  Sampler(const TokenStore& store, SamplerOptions options);

  Sequence next();
  SamplerState state() const { return state_; }
  void restore(const SamplerState& state);

  int64_t sequences_per_epoch() const { return static_cast<int64_t>(num_sequences_); }  // all ranks
  int64_t steps_per_epoch() const { return sequences_per_epoch() / options_.world_size; }

 private:
  struct Window {
    int64_t doc;
    int64_t begin;
  };
  void lay_out_epoch();
  void fill(int64_t index, int64_t* out) const;

  const TokenStore& store_;
  SamplerOptions options_;
  std::vector<int64_t> documents_;  // the split's documents (long_only: those of >= seq_len tokens)
  SamplerState state_;
  int64_t laid_out_epoch_ = -1;
  uint64_t laid_out_seed_ = 0;
  size_t num_sequences_ = 0;
  std::vector<Window> windows_;  // long_only: the epoch's shuffled windows
  std::vector<int64_t> order_;  // join: the epoch's document order
  std::vector<int64_t> starts_;  // join: where each document of order_ starts in the joined stream
};

}  // namespace uio::data
