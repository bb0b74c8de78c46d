// data/sampler.cpp — the epoch layouts, the per-rank share and the resumable state of sampler.h.
#include "data/sampler.h"

#include "data/splitmix.h"
#include "data/format/json_file.h"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace uio::data {

namespace {

using Rng = SplitMix64;

uint64_t mix(uint64_t a, uint64_t b) { return Rng(a ^ Rng(b).next()).next(); }

template <typename T>
void shuffle(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

}  // namespace

SamplerMode parse_sampler_mode(const std::string& name) {
  if (name == "long_only") return SamplerMode::long_only;
  if (name == "join") return SamplerMode::join;
  throw std::invalid_argument("sampler: mode '" + name + "' is unknown, expected long_only or join");
}

const char* sampler_mode_name(SamplerMode mode) { return mode == SamplerMode::long_only ? "long_only" : "join"; }

std::string SamplerState::to_json() const {
  return nlohmann::json{{"seed", seed}, {"epoch", epoch}, {"position", position}}.dump();
}

SamplerState SamplerState::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = format::parse_json(text, "sampler state");
  } catch (const format::FormatError& e) {
    throw std::invalid_argument(e.what());
  }
  if (!j.is_object()) throw std::invalid_argument("sampler state: expected a JSON object, got " + j.dump());
  auto get = [&](const char* key) -> const nlohmann::json& {
    if (!j.contains(key))
      throw std::invalid_argument(std::string("sampler state: missing key '") + key + "' in " + j.dump());
    const auto& v = j.at(key);
    if (!v.is_number_integer())
      throw std::invalid_argument(std::string("sampler state: '") + key + "' is " + v.dump() + ", expected an integer");
    return v;
  };
  SamplerState s;
  s.seed = get("seed").get<uint64_t>();
  s.epoch = get("epoch").get<int64_t>();
  s.position = get("position").get<int64_t>();
  if (s.epoch < 0 || s.position < 0)
    throw std::invalid_argument("sampler state: epoch and position must be >= 0, got " + j.dump());
  return s;
}

Sampler::Sampler(const TokenStore& store, SamplerOptions options) : store_(store), options_(options) {
  const std::string where = "sampler (" + store.dir() + ", " + split_name(options.split) + " split): ";
  if (options_.seq_len <= 0)
    throw std::invalid_argument(where + "seq_len is " + std::to_string(options_.seq_len) + ", expected > 0");
  if (options_.world_size <= 0 || options_.rank < 0 || options_.rank >= options_.world_size)
    throw std::invalid_argument(where + "rank " + std::to_string(options_.rank) + " of world size " +
                                std::to_string(options_.world_size) + " is not a valid rank");
  if (options_.mode == SamplerMode::join && store.meta().eos_id < 0)
    throw std::invalid_argument(where + "join mode puts EOS between documents, but the store's tokenizer has none");

  int64_t longest = -1, total = 0;
  std::string longest_name;
  for (int64_t i = 0; i < store.num_documents(); ++i) {
    const auto& d = store.document(i);
    if (d.split != options_.split) continue;
    if (d.length > longest) {
      longest = d.length;
      longest_name = d.source;
    }
    if (options_.mode == SamplerMode::long_only) {
      if (d.length < options_.seq_len) continue;
      num_sequences_ += static_cast<size_t>(d.length / options_.seq_len);
    } else {
      total += d.length + 1;  // + EOS
    }
    documents_.push_back(i);
  }
  if (longest < 0) throw std::runtime_error(where + "the split has no documents");
  if (options_.mode == SamplerMode::long_only && documents_.empty())
    throw std::runtime_error(where + "no document has seq_len = " + std::to_string(options_.seq_len) +
                             " tokens; the longest is '" + longest_name + "' with " + std::to_string(longest) +
                             " tokens. Lower seq_len or use join mode");
  if (options_.mode == SamplerMode::join) num_sequences_ = static_cast<size_t>(total / options_.seq_len);
  if (num_sequences_ < static_cast<size_t>(options_.world_size))
    throw std::runtime_error(where + "an epoch holds " + std::to_string(num_sequences_) + " sequences of " +
                             std::to_string(options_.seq_len) + " tokens, fewer than the " +
                             std::to_string(options_.world_size) + " ranks");
  state_.seed = options_.seed;
}

void Sampler::restore(const SamplerState& state) {
  if (state.position > static_cast<int64_t>(num_sequences_))
    throw std::invalid_argument("sampler: state position " + std::to_string(state.position) + " is past the epoch's " +
                                std::to_string(num_sequences_) +
                                " sequences (was it saved for another store or seq_len?)");
  state_ = state;
}

void Sampler::lay_out_epoch() {
  if (laid_out_epoch_ == state_.epoch && laid_out_seed_ == state_.seed) return;
  const uint64_t epoch_seed = mix(state_.seed, static_cast<uint64_t>(state_.epoch));
  if (options_.mode == SamplerMode::long_only) {
    windows_.clear();
    windows_.reserve(num_sequences_);
    for (int64_t doc : documents_) {
      const int64_t length = store_.document(doc).length;
      const int64_t count = length / options_.seq_len;
      const int64_t slack = length - count * options_.seq_len;
      Rng shift_rng(mix(epoch_seed, static_cast<uint64_t>(doc)));
      const auto shift = static_cast<int64_t>(shift_rng.below(static_cast<uint64_t>(slack) + 1));
      for (int64_t k = 0; k < count; ++k) windows_.push_back({doc, shift + k * options_.seq_len});
    }
    Rng rng(epoch_seed);
    shuffle(windows_, rng);
  } else {
    order_ = documents_;
    Rng rng(epoch_seed);
    shuffle(order_, rng);
    starts_.resize(order_.size());
    int64_t pos = 0;
    for (size_t j = 0; j < order_.size(); ++j) {
      starts_[j] = pos;
      pos += store_.document(order_[j]).length + 1;
    }
  }
  laid_out_epoch_ = state_.epoch;
  laid_out_seed_ = state_.seed;
}

void Sampler::fill(int64_t index, int64_t* out) const {
  const int64_t len = options_.seq_len;
  if (options_.mode == SamplerMode::long_only) {
    const auto& w = windows_[static_cast<size_t>(index)];
    store_.read(w.doc, w.begin, len, out);
    return;
  }
  int64_t pos = index * len;  // in the joined stream
  auto j = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), pos) - starts_.begin() - 1);
  int64_t filled = 0;
  while (filled < len) {
    const int64_t doc_len = store_.document(order_[j]).length;
    const int64_t offset = pos - starts_[j];
    const int64_t take = std::min(doc_len - offset, len - filled);
    if (take > 0) {
      store_.read(order_[j], offset, take, out + filled);
      filled += take;
      pos += take;
    }
    if (filled < len) {  // at this document's end: its EOS
      out[filled++] = store_.meta().eos_id;
      ++pos;
      ++j;
    }
  }
}

Sequence Sampler::next() {
  const int64_t world = options_.world_size;
  if (state_.position + world > static_cast<int64_t>(num_sequences_)) {
    ++state_.epoch;
    state_.position = 0;
  }
  lay_out_epoch();
  Sequence s;
  s.epoch = state_.epoch;
  s.index = state_.position + options_.rank;
  s.tokens = torch::empty({options_.seq_len}, torch::kInt64);  // [T]
  fill(s.index, s.tokens.data_ptr<int64_t>());
  state_.position += world;
  return s;
}

}  // namespace uio::data
