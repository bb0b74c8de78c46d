// tools/model_options.cpp — model, dtype and device keys.
#include "tools/model_options.h"

#include <torch/cuda.h>

namespace uio::cli {

void add_model_options(Schema& schema, ModelInput& input, const std::string& model_help, bool model_required) {
  schema.add("model", &input.model, model_help)
      .add("dtype", &input.dtype, "compute dtype: float32, bfloat16, float16")
      .add("device", &input.device, "cpu, cuda or cuda:N")
      .add("kernels", &input.kernels,
           "fused (default: libtorch's fused ops, chunked LM head + loss, memory attended once per chunk) or "
           "reference (the plain eager formulas; for checking and before/after benchmarks)");
  if (model_required) schema.required("model");
}

model::LoadOptions load_options(const ModelInput& input) {
  model::LoadOptions load;
  try {
    load.dtype = model::parse_dtype(input.dtype);
  } catch (const std::invalid_argument& e) {
    throw OptionError(std::string("--dtype: ") + e.what());
  }
  try {
    load.kernels = model::parse_kernels(input.kernels);
  } catch (const std::invalid_argument& e) {
    throw OptionError(std::string("--kernels: ") + e.what());
  }
  try {
    load.device = torch::Device(input.device);
  } catch (const c10::Error&) {
    throw OptionError("--device: '" + input.device + "' is not a device (expected cpu, cuda or cuda:N)");
  }
  if (load.device.is_cuda() && !torch::cuda::is_available())
    throw OptionError(std::string("--device ") + input.device + ": " +
                      (torch::hasCUDA()
                           ? "this uio has CUDA but sees no GPU (check the driver and CUDA_VISIBLE_DEVICES)"
                           : "this uio is a CPU build (its libtorch comes from a CPU torch wheel); build it "
                             "against a CUDA torch wheel to run on GPUs (docs/gpu.md)"));
  return load;
}

}  // namespace uio::cli
