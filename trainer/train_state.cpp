// trainer/train_state.cpp — trainer_state.json, format uio-checkpoint version 2.
#include "trainer/train_state.h"

#include <cstdint>

#include "trainer/checkpoint.h"

namespace uio::trainer {

namespace {
constexpr const char* kFormat = "uio-checkpoint";
constexpr int kVersion = 2;

// j[key] as a non-negative integer (a float or a negative number is refused: converting 1e308 to an
// integer is undefined).
int64_t counter(const nlohmann::json& j, const char* key, const std::string& where) {
  const auto& v = j.at(key);
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) ||
      v.get<int64_t>() < 0)
    throw CheckpointError(where + ": '" + key + "' is not a non-negative integer");
  return v.get<int64_t>();
}
}  // namespace

nlohmann::json rank_state_json(const RankState& r) {
  return {{"data", r.data}, {"reservoir_rng", r.reservoir_rng}, {"rng", r.generators}};
}

RankState rank_state_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    RankState r;
    r.data = j.at("data");
    if (!j.at("reservoir_rng").is_number_unsigned())
      throw CheckpointError(where + ": a rank's 'reservoir_rng' is not an unsigned integer");
    r.reservoir_rng = j.at("reservoir_rng").get<uint64_t>();
    r.generators = j.at("rng");
    if (!r.generators.is_object()) throw CheckpointError(where + ": a rank's 'rng' is not an object");
    return r;
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(where + ": a rank's state lacks a key or has a wrong type (" + e.what() + ")");
  }
}

nlohmann::json TrainState::to_json() const {
  nlohmann::json j = {{"format", kFormat},
                      {"version", kVersion},
                      {"step", step},
                      {"input_tokens", input_tokens},
                      {"skipped", skipped},
                      {"optimizer_steps", optimizer_steps},
                      {"world_size", world_size},
                      {"ranks", nlohmann::json::array()},
                      {"base_model", base_model}};
  for (const auto& r : ranks) j["ranks"].push_back(rank_state_json(r));
  return j;
}

TrainState TrainState::from_json(const nlohmann::json& j, const std::string& where) {
  try {
    if (j.at("format") != kFormat || j.value("version", 0) != kVersion)
      throw CheckpointError(where + ": format " + j.at("format").dump() + " version " +
                            j.value("version", nlohmann::json(0)).dump() + ", this uio reads " + kFormat + " version " +
                            std::to_string(kVersion));
    TrainState s;
    s.step = counter(j, "step", where);
    s.skipped = counter(j, "skipped", where);
    s.input_tokens = counter(j, "input_tokens", where);
    s.optimizer_steps = counter(j, "optimizer_steps", where);
    const auto world_size = counter(j, "world_size", where);
    if (world_size < 1 || world_size > 1 << 20) throw CheckpointError(where + ": world_size is out of range");
    s.world_size = static_cast<int>(world_size);
    s.base_model = j.value("base_model", std::string());
    for (const auto& r : j.at("ranks")) s.ranks.push_back(rank_state_from_json(r, where));
    if (s.world_size < 1 || static_cast<int>(s.ranks.size()) != s.world_size)
      throw CheckpointError(where + ": world_size " + std::to_string(s.world_size) + " but " +
                            std::to_string(s.ranks.size()) + " rank states");
    if (s.step < 0 || s.skipped < 0 || s.input_tokens < 0 || s.optimizer_steps < 0)
      throw CheckpointError(where + ": a negative counter (step, skipped, input_tokens or optimizer_steps)");
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(where + ": missing or wrongly typed key (" + e.what() + ")");
  }
}

}  // namespace uio::trainer
