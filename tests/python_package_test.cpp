// tests/python_package_test.cpp — the Python package (python/uio_memory, for users of HF transformers)
// runs an export that `uio export` wrote exactly as uio does: on tiny random Llama, Qwen2 (q/k/v bias)
// and Mistral (binding sliding window) models saved as HF directories, for every memory_rope kind, and
// on SmolLM2 from its GGUF file, python/tests/cpp_check.py writes the package's teacher-forced logits of
// a document of several segments plus a residual, and its greedy ids (and, for one case, ids sampled with
// a seed) for a prompt whose generation crosses segment boundaries; they must equal
// model::document_logits and model::generate(MemoryReader) (the same ids, logits to fp32 tolerance).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/generate.h"
#include "model/memory.h"
#include "model/memory_io.h"
#include "data/format/safetensors.h"
#include "model/memory_pass.h"
#include "model/weights.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"

using namespace uio;
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

// fp32 tolerances on max |logit difference| / max |logit|: the same libtorch kernels called in another
// order through transformers (measured: 3-4e-7 on the tiny models, 2.3e-6 on SmolLM2's 30 layers).
constexpr double kTinyTolerance = 3e-6;
constexpr double kSmolLM2Tolerance = 2e-5;

// Fresh random values in every parameter: norm weights around one, biases and matrices around zero.
void randomize(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& item : module.named_parameters()) {
    const auto& name = item.key();
    if (name.find("norm.weight") != std::string::npos)
      item.value().normal_(1.0, 0.2);
    else if (name.find("bias") != std::string::npos)
      item.value().normal_(0.0, 0.2);
    else
      item.value().normal_(0.0, 0.15);
  }
}

// The base model as an HF directory transformers loads: config.json and model.safetensors (module names
// are HF's, model/llama.h).
void save_hf_directory(const fs::path& dir, const model::ModelConfig& c, model::CausalLM& base) {
  fs::create_directories(dir);
  const std::map<std::string, std::string> classes = {
      {"llama", "LlamaForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}, {"mistral", "MistralForCausalLM"}};
  Json j = {{"architectures", {classes.at(c.architecture)}},
            {"model_type", c.architecture},
            {"vocab_size", c.vocab_size},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"num_hidden_layers", c.num_layers},
            {"num_attention_heads", c.num_heads},
            {"num_key_value_heads", c.num_kv_heads},
            {"head_dim", c.head_dim},
            {"rms_norm_eps", c.rms_norm_eps},
            {"rope_theta", c.rope_theta},
            {"max_position_embeddings", c.max_position},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"hidden_act", "silu"},
            {"torch_dtype", "float32"}};
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  if (c.architecture == "llama") j["attention_bias"] = c.attention_bias;
  if (c.sliding_window) j["sliding_window"] = *c.sliding_window;
  std::ofstream(dir / "config.json") << j.dump(2) << "\n";
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : base->named_parameters()) tensors.emplace_back(item.key(), item.value().detach());
  format::write_safetensors((dir / "model.safetensors").string(), tensors, {{"format", "pt"}});
}

// One intra-op thread while a test runs: the shapes are small and decoding goes one token at a time, and
// two threads spin against each other when ctest runs tests side by side on 2 cores (measured: the whole
// suite 37 s with two threads, 24 s with one, on a busy 2-core machine).
struct OneThread {
  int saved = torch::get_num_threads();
  OneThread() { torch::set_num_threads(1); }
  ~OneThread() { torch::set_num_threads(saved); }
};

struct Case {
  std::string name;
  model::MemoryOptions options;
  int64_t segments = 0, residual = 0, prompt = 0, new_tokens = 0;
  bool sampled = false;
};

model::SamplingOptions sampling(const Case& c, bool sampled) {
  model::SamplingOptions o;
  o.max_new_tokens = c.new_tokens;
  if (sampled) o.temperature = 0.8, o.top_p = 0.95, o.seed = 4321;
  return o;
}

struct Expected {
  torch::Tensor logits, greedy, sampled, alone;  // alone: segment 1's logits with no memory
};

// uio's side of one case: a random compressor (LoRA B non-zero) saved and exported with uio's own
// save_memory + export_memory, its logits and generated ids, and the case's entry in the Python job.
Expected run_uio_side(const Case& c, const model::ModelConfig& config, model::CausalLM& base,
                      const std::string& base_path, const fs::path& dir, double lora_b_std, Json& job_cases) {
  auto memory_init = model::eos_memory_init(base) + 0.02 * torch::randn({config.hidden_size});
  model::MemoryCompressor compressor(config, c.options, memory_init);
  {
    torch::NoGradGuard no_grad;
    for (auto& item : compressor->named_parameters())
      if (item.key().find("lora_B") != std::string::npos) item.value().normal_(0.0, lora_b_std);
  }
  compressor->eval();
  model::save_memory((dir / ("compressor_" + c.name)).string(), compressor, model::identify(base_path, config));
  const auto export_dir = dir / ("export_" + c.name);
  model::export_memory((dir / ("compressor_" + c.name)).string(), export_dir.string());

  const int64_t l = c.options.segment_len, n = c.segments * l + c.residual;
  auto document = torch::randint(config.vocab_size, {n}, torch::kInt64);
  auto prompt = torch::randint(config.vocab_size, {c.prompt}, torch::kInt64);
  std::vector<int64_t> prompt_ids(prompt.data_ptr<int64_t>(), prompt.data_ptr<int64_t>() + c.prompt);
  Expected e;
  torch::NoGradGuard no_grad;
  e.logits = model::document_logits(base, compressor, document, /*chunk=*/4);
  e.alone = base->forward(document.narrow(0, l, l).unsqueeze(0))[0];
  for (bool sampled : {false, true}) {
    if (sampled && !c.sampled) continue;
    model::MemoryReader reader(base, compressor);
    auto ids = model::generate(reader, prompt_ids, sampling(c, sampled));
    (sampled ? e.sampled : e.greedy) = torch::tensor(ids, torch::kInt64);
  }
  Json entry = {{"name", c.name},
                {"export", export_dir.string()},
                {"document", std::vector<int64_t>(document.data_ptr<int64_t>(), document.data_ptr<int64_t>() + n)},
                {"prompt", prompt_ids},
                {"max_new_tokens", c.new_tokens}};
  if (c.sampled) {
    const auto o = sampling(c, true);
    entry["sampled"] = {{"temperature", o.temperature}, {"top_k", o.top_k}, {"top_p", o.top_p}, {"seed", o.seed}};
  }
  job_cases.push_back(entry);
  return e;
}

// Runs python/tests/cpp_check.py on `job` (the package from this source tree) and returns its tensors.
std::unique_ptr<format::SafetensorsFile> run_python(const fs::path& dir, const Json& job) {
  std::ofstream(dir / "job.json") << job.dump() << "\n";
  const std::string source = UIO_SOURCE_DIR;
  const std::string command = "PYTHONPATH=" + uio::test::shell_quote(source + "/python") + " " +
                              uio::test::shell_quote(UIO_PYTHON_EXE) + " " +
                              uio::test::shell_quote(source + "/python/tests/cpp_check.py") + " " +
                              uio::test::shell_quote((dir / "job.json").string()) + " " +
                              uio::test::shell_quote((dir / "python.safetensors").string()) + " 2>&1";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  return std::make_unique<format::SafetensorsFile>((dir / "python.safetensors").string());
}

double relative(const torch::Tensor& got, const torch::Tensor& want) {
  auto diff = (got.to(torch::kDouble) - want.to(torch::kDouble)).abs().max();
  return (diff / want.to(torch::kDouble).abs().max()).item<double>();
}

void compare(const Case& c, const Expected& e, const format::SafetensorsFile& py, double tolerance) {
  const auto logits = py.tensor(c.name + ".logits");
  ASSERT_EQ(logits.sizes(), e.logits.sizes()) << c.name;
  const double err = relative(logits, e.logits);
  EXPECT_LE(err, tolerance) << c.name;
  std::cout << "  " << c.name << " (memory_rope " << model::rope_kind_name(c.options.memory_rope)
            << "): logits max |diff| / max |logit| = " << err << "\n";
  // The memory really changes segment 1 (a package that dropped it would fail above, not pass vacuously).
  const int64_t l = c.options.segment_len;
  EXPECT_GT(relative(e.logits.narrow(0, l, l), e.alone), 1e-2) << c.name;
  EXPECT_TRUE(torch::equal(py.tensor(c.name + ".greedy"), e.greedy))
      << c.name << ": python " << py.tensor(c.name + ".greedy") << " uio " << e.greedy;
  if (c.sampled) {  // the same CPU generator draws from the same probabilities
    EXPECT_TRUE(torch::equal(py.tensor(c.name + ".sampled"), e.sampled))
        << c.name << ": python " << py.tensor(c.name + ".sampled") << " uio " << e.sampled;
  }
}

model::MemoryOptions memory_options(int64_t l, int64_t M, const std::string& rope, double factor,
                                    int64_t sink_tokens = 0, int64_t decoder_rank = 0) {
  model::MemoryOptions o;
  o.segment_len = l, o.num_memory_tokens = M, o.sink_tokens = sink_tokens;
  o.encoder_lora = {4, 8.0, 0.0, {"q_proj", "v_proj"}};
  o.transfer_lora = {3, 9.0, 0.0, {"k_proj", "v_proj"}};
  if (decoder_rank > 0) o.decoder_lora = {decoder_rank, 4.0, 0.0, {"q_proj", "k_proj", "v_proj", "o_proj"}};
  o.memory_rope = model::parse_rope_kind(rope), o.memory_rope_factor = factor;
  return o;
}

}  // namespace

// l = 16, M = 4 and a 32-position window: documents of 6 segments + 9 run positions up to 40, past the
// window, so dynamic NTK and YaRN scale; memory_rope none stays inside it (4 segments + 7, and a shorter
// generation). Generation starts 9 tokens into segment 2 and re-compresses at 48, 64 (and 80). One case
// has decoder adapters (beyond the paper) on q, k, v, o, with a sink whose keys they compute.
TEST(PythonPackage, TinyLlamaQwen2AndMistralGiveUiosLogitsAndGenerationForEveryMemoryRope) {
  OneThread one_thread;
  const auto dir = uio::test::scratch_dir();
  torch::manual_seed(uio::test::test_seed());
  struct Base {
    std::string name;
    model::ModelConfig config;
    std::vector<Case> cases;
  };
  auto tiny = uio::test::tiny_llama_config();
  tiny.max_position = 32;
  auto qwen2 = tiny;
  qwen2.architecture = "qwen2", qwen2.attention_bias = true, qwen2.tie_word_embeddings = true;
  auto mistral = tiny;
  mistral.architecture = "mistral", mistral.sliding_window = 12;  // binds inside a 16-token segment
  const std::vector<Base> bases = {
      {"llama",
       tiny,
       {{"llama_none", memory_options(16, 4, "none", 1.0), 4, 7, 41, 30, false},
        {"llama_linear", memory_options(16, 4, "linear", 2.5), 6, 9, 41, 45, false},
        {"llama_ntk", memory_options(16, 4, "ntk", 3.0), 6, 9, 41, 45, false},
        {"llama_dynamic", memory_options(16, 4, "dynamic", 2.0), 6, 9, 41, 45, true},
        {"llama_yarn", memory_options(16, 4, "yarn", 4.0), 6, 9, 41, 45, false},
        {"llama_dynamic_sink", memory_options(16, 4, "dynamic", 2.0, /*sink_tokens=*/3), 6, 9, 41, 45, false},
        {"llama_dynamic_sink_decoder", memory_options(16, 4, "dynamic", 2.0, 3, /*decoder_rank=*/2), 6, 9, 41, 45,
         false}}},
      {"qwen2", qwen2, {{"qwen2_dynamic", memory_options(16, 4, "dynamic", 2.0), 6, 9, 41, 45, false}}},
      {"mistral", mistral, {{"mistral_yarn", memory_options(16, 4, "yarn", 2.0), 6, 9, 41, 45, false}}}};

  Json job = Json::array();
  std::vector<std::pair<Case, Expected>> expected;
  for (const auto& b : bases) {
    model::CausalLM base(b.config, torch::TensorOptions().dtype(torch::kFloat));
    randomize(*base);
    base->eval();
    const auto hf_dir = dir / ("hf_" + b.name);
    save_hf_directory(hf_dir, b.config, base);
    Json cases = Json::array();
    for (const auto& c : b.cases)
      expected.emplace_back(c, run_uio_side(c, b.config, base, hf_dir.string(), dir, 0.3, cases));
    job.push_back({{"model", hf_dir.string()}, {"cases", cases}});
  }
  const auto py = run_python(dir, job);
  for (const auto& [c, e] : expected) compare(c, e, *py, kTinyTolerance);
}

// SmolLM2-135M from the GGUF scripts/get-model.sh fetches (dequantised the same way by uio and by
// transformers), a random compressor with l = 64, M = 8 and YaRN memory positions: a document of 3
// segments + 17, and a prompt of 1 segment + 52 whose greedy generation re-compresses at 128.
TEST(PythonPackage, SmolLM2FromItsGgufGivesUiosLogitsAndGeneration) {
  const std::string gguf = std::string(UIO_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(gguf)) GTEST_SKIP() << "no " << gguf << " (run scripts/get-model.sh)";
  OneThread one_thread;
  const auto dir = uio::test::scratch_dir();
  torch::manual_seed(uio::test::test_seed());
  auto loaded = model::load_model(gguf);
  const Case c{"smollm2_yarn", memory_options(64, 8, "yarn", 4.0), 3, 17, 64 + 52, 20, false};
  Json cases = Json::array();
  const auto e = run_uio_side(c, loaded.config, loaded.model, gguf, dir, 0.02, cases);
  Json job = Json::array();
  job.push_back({{"model", gguf}, {"cases", cases}});
  const auto py = run_python(dir, job);
  compare(c, e, *py, kSmolLM2Tolerance);
}
