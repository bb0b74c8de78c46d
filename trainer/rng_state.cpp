// trainer/rng_state.cpp — generator states as hex strings.
#include "trainer/rng_state.h"

#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "trainer/checkpoint.h"

namespace uio::trainer {
namespace {

std::vector<std::pair<std::string, at::Generator>> generators() {
  std::vector<std::pair<std::string, at::Generator>> out{{"cpu", at::globalContext().defaultGenerator(torch::kCPU)}};
  for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i)
    out.emplace_back("cuda." + std::to_string(i), at::globalContext().defaultGenerator(
                                                      torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(i))));
  return out;
}

std::string hex_of(const torch::Tensor& bytes) {
  static const char* digits = "0123456789abcdef";
  auto t = bytes.contiguous().to(torch::kCPU);
  std::string out;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const auto b = t.data_ptr<uint8_t>()[i];
    out += digits[b >> 4], out += digits[b & 15];
  }
  return out;
}

torch::Tensor bytes_of(const std::string& hex, const std::string& where) {
  if (hex.size() % 2) throw CheckpointError(where + ": a generator state has an odd number of hex digits");
  auto t = torch::empty({static_cast<int64_t>(hex.size() / 2)}, torch::kByte);
  auto nibble = [&](char c) -> uint8_t {
    if (c >= '0' && c <= '9') return static_cast<uint8_t>(c - '0');
    if (c >= 'a' && c <= 'f') return static_cast<uint8_t>(c - 'a' + 10);
    throw CheckpointError(where + ": a generator state is not hex");
  };
  for (size_t i = 0; i < hex.size() / 2; ++i)
    t.data_ptr<uint8_t>()[i] = static_cast<uint8_t>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  return t;
}

}  // namespace

nlohmann::json capture_generators() {
  nlohmann::json out = nlohmann::json::object();
  for (auto& [name, gen] : generators()) out[name] = hex_of(gen.get_state());
  return out;
}

void restore_generators(const nlohmann::json& state, const std::string& where) {
  for (auto& [name, gen] : generators()) {
    if (!state.contains(name)) {
      if (name == "cpu") throw CheckpointError(where + ": no 'cpu' generator state");
      continue;  // a checkpoint from a machine with fewer GPUs: their draws start fresh
    }
    if (!state[name].is_string()) throw CheckpointError(where + ": generator state '" + name + "' is not a string");
    try {
      gen.set_state(bytes_of(state[name].get<std::string>(), where));
    } catch (const c10::Error& e) {
      throw CheckpointError(where + ": generator state '" + name + "' is not one this libtorch accepts (" +
                            e.what_without_backtrace() + ")");
    }
  }
}

}  // namespace uio::trainer
