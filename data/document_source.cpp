// data/document_source.cpp — random documents.
#include "data/document_source.h"
#include "data/format/json_file.h"

#include <nlohmann/json.hpp>

#include <stdexcept>

namespace uio::data {

RandomDocuments::RandomDocuments(int64_t vocab_size, int64_t length, uint64_t seed)
    : vocab_size_(vocab_size), length_(length), rng_(seed) {
  if (vocab_size < 1 || length < 1)
    throw std::invalid_argument("random documents: vocab_size and length must be >= 1, got " +
                                std::to_string(vocab_size) + " and " + std::to_string(length));
}

TrainingDocument RandomDocuments::next() {
  auto ids = torch::empty({length_}, torch::kInt64);
  auto* p = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < length_; ++i) p[i] = static_cast<int64_t>(rng_.below(static_cast<uint64_t>(vocab_size_)));
  return {ids, {}};
}

std::string RandomDocuments::state_json() const { return nlohmann::json{{"random_state", rng_.state()}}.dump(); }

void RandomDocuments::restore(const std::string& json) {
  auto j = format::parse_json(json, "random documents state");
  if (!j.contains("random_state") || !j["random_state"].is_number_unsigned())
    throw std::invalid_argument("random documents: state lacks an unsigned 'random_state'");
  rng_.set_state(j["random_state"].get<uint64_t>());
}

}  // namespace uio::data
