// tools/bench_memory.cpp — `uio bench memory`: how fast uio compresses a long document into memory and
// decodes it with that memory (forward only, no gradients), and the peak memory it takes. Uses an
// untrained compressor (adapters start at zero): the work is the same as a trained one's.
#include <chrono>
#include <iomanip>
#include <iostream>

#include "model/device_stats.h"
#include "model/memory.h"
#include "model/weights.h"
#include "tools/memory_options.h"
#include "tools/model_options.h"
#include "tools/options.h"

namespace uio::cli {
namespace {

struct MemoryBenchOptions {
  ModelInput base{"", "bfloat16", "cuda"};
  int64_t tokens = 102400;
  MemoryOptionsInput memory;
  int64_t chunk = 8;  // segments per batched encoder / decoder call
  int64_t seed = 0;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int bench_memory_command(const std::vector<std::string>& args) {
  MemoryBenchOptions opt;
  Schema schema("bench memory", "Compression and decoding of one long document with memory: tokens/s, peak memory");
  add_model_options(schema, opt.base, "base model (HF directory or .gguf)");
  schema.add("tokens", &opt.tokens, "document length in tokens (random ids)")
      .add("chunk", &opt.chunk, "segments per batched encoder/decoder call")
      .add("seed", &opt.seed, "seed of the random document");
  add_memory_options(schema, opt.memory);
  if (!schema.parse(args, std::cout)) return 0;
  const auto mo = resolve_memory_options(opt.memory);
  if (opt.chunk < 1)
    throw OptionError("bench memory: --chunk must be >= 1 (segments per call), got " + std::to_string(opt.chunk));
  if (opt.tokens < mo.segment_len)
    throw OptionError("bench memory: --tokens " + std::to_string(opt.tokens) + " is shorter than one segment (" +
                      std::to_string(mo.segment_len) + ")");
  const auto load = load_options(opt.base);
  auto loaded = model::load_model(opt.base.model, load);
  model::MemoryCompressor compressor(loaded.config, mo, model::eos_memory_init(loaded.model));
  compressor->to(load.dtype);
  torch::manual_seed(static_cast<uint64_t>(opt.seed));
  const int64_t l = mo.segment_len, T = opt.tokens / l;
  TORCH_CHECK(T >= 1, "bench memory: --tokens must be at least one segment (", l, ")");
  auto ids = torch::randint(loaded.config.vocab_size, {T * l}, torch::kInt64).to(load.device);
  torch::NoGradGuard no_grad;

  // Warm-up on one chunk (kernel selection, allocator).
  const int64_t warm = std::min(opt.chunk, T);
  compressor->compress(loaded.model, ids.narrow(0, 0, warm * l).view({warm, l}));
  model::synchronize(load.device);
  model::reset_peak_memory(load.device);

  double compress_s = 0, decode_s = 0;
  model::Memory memory;
  for (int64_t c0 = 0; c0 < T; c0 += opt.chunk) {
    const int64_t K = std::min(opt.chunk, T - c0);
    auto segments = ids.narrow(0, c0 * l, K * l).view({K, l});
    auto t0 = std::chrono::steady_clock::now();
    memory.append(compressor->compress(loaded.model, segments));
    model::synchronize(load.device);
    compress_s += seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    std::vector<int64_t> index;
    for (int64_t k = 0; k < K; ++k) index.push_back(c0 + k);
    auto hidden = compressor->decode(loaded.model, segments, index, memory);
    auto logits = loaded.model->logits(hidden);
    model::synchronize(load.device);
    decode_s += seconds_since(t0);
  }
  const double peak_gb = model::peak_memory_bytes(load.device) / 1e9;
  const double tokens = static_cast<double>(T * l);
  std::cout << std::fixed << std::setprecision(2) << "document     " << T * l << " tokens = " << T << " segments of "
            << l << ", M = " << mo.num_memory_tokens << " (" << memory.entries() << " memory entries), chunk "
            << opt.chunk << ", " << opt.base.dtype << " on " << opt.base.device << "\n"
            << "compression  " << compress_s << " s (" << std::setprecision(0) << tokens / compress_s << " tokens/s)\n"
            << std::setprecision(2) << "decoding     " << decode_s << " s (" << std::setprecision(0)
            << tokens / decode_s << " tokens/s, logits included)\n"
            << std::setprecision(2) << "peak memory  " << peak_gb << " GB ("
            << (load.device.is_cuda() ? "CUDA allocator" : "process RSS") << ")\n";
  return 0;
}

}  // namespace uio::cli
