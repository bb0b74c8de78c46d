// trainer/train_state.h — what a checkpoint records about a run besides its weight files: the counters
// and, per rank, the data position and every random generator (trainer_state.json; trainer/checkpoint.h
// adds the file manifest). Written by Trainer::save_checkpoint, read back by Trainer::restore.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace uio::trainer {

struct RankState {
  nlohmann::json data;  // the document source's position (data/document_source.h)
  uint64_t reservoir_rng = 0;  // the estimator's reservoir generator
  nlohmann::json generators;  // trainer/rng_state.h
};

struct TrainState {
  int64_t step = 0, skipped = 0, input_tokens = 0, optimizer_steps = 0;
  int world_size = 1;
  std::vector<RankState> ranks;  // one per rank, in rank order
  std::string base_model;  // the base model's path as given when training

  nlohmann::json to_json() const;
  // Throws CheckpointError naming `where` (the trainer_state.json) for another format, a missing or
  // wrongly typed key, or a rank count that is not world_size.
  static TrainState from_json(const nlohmann::json& state, const std::string& where);
};

nlohmann::json rank_state_json(const RankState& rank);
RankState rank_state_from_json(const nlohmann::json& rank, const std::string& where);

}  // namespace uio::trainer
