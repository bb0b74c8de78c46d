// trainer/rng_state.h — the random generators whose draws a training step makes (the CPU's: LoRA
// dropout on the CPU and initialisation; each CUDA device's: dropout on a GPU), captured as JSON text
// that a checkpoint stores and restored exactly, so a resumed run draws what the uninterrupted one would.
#pragma once

#include <nlohmann/json.hpp>

namespace uio::trainer {

// {"cpu": "<hex>", "cuda.0": "<hex>", ...}: every default generator's state.
nlohmann::json capture_generators();
// Sets each generator named in `state`; a missing "cpu" is an error naming `where`, a missing CUDA device
// (a checkpoint from a machine with fewer GPUs) keeps its fresh state.
void restore_generators(const nlohmann::json& state, const std::string& where);

}  // namespace uio::trainer
