// tools/model_options.h — the base-model keys every command shares (model, dtype, device) and their
// translation into model::LoadOptions, so each command states them once.
#pragma once

#include <string>

#include "model/weights.h"
#include "tools/options.h"

namespace uio::cli {

struct ModelInput {
  std::string model;
  std::string dtype = "float32";
  std::string device = "cpu";
  std::string kernels = "fused";
};

// Registers model (required unless `model_required` is false), dtype and device.
void add_model_options(Schema& schema, ModelInput& input, const std::string& model_help, bool model_required = true);
model::LoadOptions load_options(const ModelInput& input);  // throws on an unknown dtype or device

}  // namespace uio::cli
