// tests/eval_test.cpp — the long-context evaluation harness (trainer/evaluate.h, tools/eval.cpp): for
// `truncate` and the RoPE-scaling baselines (linear, ntk, dynamic, yarn) the perplexity harness gives
// the numbers of plain HF transformers on the same tokens (tests/python/eval_reference.py, a tiny Qwen2
// with a 128-token window, inside and past the window); `uio`'s score equals the memory forward of the
// whole prefix; passkey and needle prompts have their exact length and the key once at its depth;
// `uio eval` writes results.json and results.md with a row per method and length.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/passkey.h"
#include "data/tokenizer.h"
#include "model/loss.h"
#include "model/memory_reader.h"
#include "model/memory_pass.h"
#include "model/memory_io.h"
#include "data/format/safetensors.h"
#include "model/weights.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"
#include "trainer/train_flops.h"
#include "trainer/eval_run.h"
#include "trainer/evaluate.h"

using namespace uio;
namespace fs = std::filesystem;

namespace {

model::MemoryCompressor random_compressor(const model::ModelConfig& config, model::CausalLM& base, uint64_t seed,
                                          int64_t decoder_rank = 0) {
  torch::manual_seed(seed);
  model::MemoryOptions o;
  o.segment_len = 32, o.num_memory_tokens = 8;
  o.encoder_lora = {4, 8.0, 0.0, {"q_proj", "v_proj"}};
  o.transfer_lora = {4, 8.0, 0.0, {"k_proj", "v_proj"}};
  o.decoder_lora.rank = decoder_rank, o.decoder_lora.alpha = 8.0;  // beyond the paper; rank 0: off
  model::MemoryCompressor c(config, o, model::eos_memory_init(base));
  torch::NoGradGuard no_grad;
  for (auto& p : c->parameters()) p.normal_(0, 0.05);
  c->eval();
  return c;
}

std::string smollm2_gguf() {
  const auto ref = uio::test::testdata("smollm2") / "reference.json";
  if (!fs::exists(ref)) return "";
  return nlohmann::json::parse(std::ifstream(ref))["gguf"];
}

}  // namespace

TEST(Eval, TruncateAndRopeScalingBaselinesMatchHuggingFaceOnTheSameTokens) {
  const auto model_dir = uio::test::testdata("hf_models/qwen2_bias").string();
  auto loaded = model::load_model(model_dir);
  ASSERT_EQ(loaded.config.max_position, 128);
  const auto dir = uio::test::scratch_dir();
  torch::manual_seed(uio::test::test_seed());
  auto ids = torch::randint(3, loaded.config.vocab_size, {300}, torch::kInt64);
  uio::format::write_safetensors((dir / "ids.safetensors").string(), {{"ids", ids}});
  const int64_t scored = 40, window = 64;
  const std::string command = uio::test::shell_quote(UIO_PYTHON_EXE) + " " +
                              uio::test::shell_quote(std::string(UIO_SOURCE_DIR) + "/tests/python/eval_reference.py") +
                              " " + uio::test::shell_quote(model_dir) + " " +
                              uio::test::shell_quote((dir / "ids.safetensors").string()) + " 40 64 100,300 " +
                              uio::test::shell_quote((dir / "hf.json").string()) + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const auto hf = nlohmann::json::parse(std::ifstream(dir / "hf.json"));

  trainer::Evaluator ev;
  ev.base = loaded.model;
  ev.truncate_window = window;
  for (int64_t L : {100, 300}) {
    std::map<std::string, double> ours;
    for (auto m : {trainer::EvalMethod::truncate, trainer::EvalMethod::linear, trainer::EvalMethod::ntk,
                   trainer::EvalMethod::dynamic, trainer::EvalMethod::yarn}) {
      auto [loss, n] = ev.score_tail(m, ids.narrow(0, 0, L), scored);
      EXPECT_EQ(n, scored);
      const std::string name = trainer::eval_method_name(m);
      ours[name] = loss;
      const double reference = hf[std::to_string(L)][name].get<double>();
      EXPECT_NEAR(loss, reference, 1e-5 * std::abs(reference)) << name << " at L = " << L;
    }
    if (L > 128) {  // past the window the methods differ from each other (so a mix-up would show)
      EXPECT_GT(std::abs(ours["linear"] - ours["ntk"]), 1e-3);
      EXPECT_GT(std::abs(ours["linear"] - ours["yarn"]), 1e-3);
      EXPECT_GT(std::abs(ours["dynamic"] - ours["ntk"]), 1e-6);
    } else {  // inside it every scaling is the plain model
      EXPECT_NEAR(ours["linear"], ours["yarn"], 1e-6 * ours["linear"]);
    }
  }
}

// uio's score of the last tokens equals the cross-entropy of the memory model's forward over the whole
// prefix (model::document_logits, which the memory parity tests check against HF), for prefixes that
// end inside a segment, on a boundary, and scored regions that span segments.
TEST(Eval, UioScoreEqualsTheMemoryForwardOfTheWholePrefix) {
  auto loaded = model::load_model(uio::test::testdata("hf_models/qwen2_bias").string());
  trainer::Evaluator ev;
  ev.base = loaded.model;
  ev.compressor = random_compressor(loaded.config, loaded.model, uio::test::test_seed());
  ev.chunk = 3;
  torch::manual_seed(uio::test::test_seed() + 1);
  auto ids = torch::randint(3, loaded.config.vocab_size, {300}, torch::kInt64);
  torch::NoGradGuard no_grad;
  for (auto [L, scored] :
       std::vector<std::pair<int64_t, int64_t>>{{300, 40}, {256, 32}, {257, 70}, {70, 20}, {64, 63}}) {
    auto [loss, n] = ev.score_tail(trainer::EvalMethod::uio, ids.narrow(0, 0, L), scored);
    auto logits = model::document_logits(loaded.model, ev.compressor, ids.narrow(0, 0, L), 2).to(torch::kDouble);
    auto logp = logits.narrow(0, L - scored - 1, scored).log_softmax(-1);
    const double reference = -logp.gather(1, ids.narrow(0, L - scored, scored).unsqueeze(1)).sum().item<double>();
    EXPECT_EQ(n, scored);
    EXPECT_NEAR(loss, reference, 1e-5 * std::abs(reference)) << "L = " << L << ", scored " << scored;
  }
}

TEST(Passkey, PromptHasItsExactLengthAndTheKeyOnceAtItsDepth) {
  const auto gguf = smollm2_gguf();
  if (gguf.empty()) GTEST_SKIP() << "no SmolLM2 GGUF under models/ (run scripts/get-model.sh)";
  auto tokenizer = data::load_tokenizer(gguf);
  for (int64_t length : {300, 1000, 4096})
    for (double depth : {0.0, 0.3, 1.0}) {
      auto p = data::make_passkey_prompt(*tokenizer, length, depth, 5, static_cast<uint64_t>(length) + 7);
      ASSERT_EQ(static_cast<int64_t>(p.ids.size()), length);
      ASSERT_EQ(p.answer.size(), 5u);
      std::vector<int32_t> all(p.ids.begin(), p.ids.end());
      const auto text = tokenizer->decode(all);
      const std::string sentence = "The pass key is " + p.answer + ". Remember it. " + p.answer + " is the pass key.";
      ASSERT_NE(text.find(sentence), std::string::npos);
      EXPECT_EQ(text.find(sentence), text.rfind(sentence)) << "the key sentence appears once";
      // Twice in the sentence, nowhere else.
      size_t count = 0;
      for (size_t at = text.find(p.answer); at != std::string::npos; at = text.find(p.answer, at + 1)) ++count;
      EXPECT_EQ(count, 2u);
      EXPECT_EQ(text.rfind("What is the pass key? The pass key is"), text.size() - 37);
      std::vector<int32_t> needle(p.ids.begin() + p.needle_begin, p.ids.begin() + p.needle_end);
      EXPECT_NE(tokenizer->decode(needle).find(sentence), std::string::npos);
      // Depth: the share of the filler before the key.
      const auto preamble = tokenizer->encode(
          "There is an important info hidden inside a lot of irrelevant text. Find "
          "it and memorize it. I will quiz you about the important information there.");
      const auto question = tokenizer->encode(" What is the pass key? The pass key is");
      const double room = static_cast<double>(length - static_cast<int64_t>(preamble.size() + question.size()) -
                                              (p.needle_end - p.needle_begin));
      const double before = static_cast<double>(p.needle_begin - static_cast<int64_t>(preamble.size()));
      EXPECT_NEAR(before, depth * room, 0.5) << "length " << length << " depth " << depth;
    }
  EXPECT_THROW(data::make_passkey_prompt(*tokenizer, 20, 0.5, 5, 1), std::invalid_argument);
  // The needle variant over real text (here: the passkey's own filler would do; any ids serve).
  std::vector<int64_t> haystack;
  for (auto t : tokenizer->encode(" It was a truth universally acknowledged, that a single man in possession of a "
                                  "good fortune, must be in want of a wife."))
    haystack.push_back(t);
  auto n = data::make_needle_prompt(*tokenizer, haystack, 800, 0.5, 5, 3);
  EXPECT_EQ(n.ids.size(), 800u);
  std::vector<int32_t> needle(n.ids.begin() + n.needle_begin, n.ids.begin() + n.needle_end);
  EXPECT_NE(tokenizer->decode(needle).find("The special magic number is " + n.answer), std::string::npos);
}

TEST(Eval, RunEvalWritesEveryMethodAndLengthToResultsJsonAndMarkdown) {
  const auto dir = uio::test::scratch_dir();
  const auto model_dir = uio::test::testdata("hf_models/qwen2_bias").string();
  auto loaded = model::load_model(model_dir);
  auto compressor = random_compressor(loaded.config, loaded.model, 5);
  model::save_memory((dir / "memory").string(), compressor, model::identify(model_dir, loaded.config));
  trainer::EvalConfig c;
  c.model = model_dir, c.memory = (dir / "memory").string();
  c.data = uio::test::write_random_store(dir / "store", 6, 500, uio::test::test_seed()).string();
  for (const char* m : {"uio", "truncate", "linear", "ntk", "dynamic", "yarn"})
    c.methods.push_back(trainer::parse_eval_method(m));
  c.lengths = {100, 300}, c.score_tokens = 40, c.documents = 1, c.truncate_window = 64;
  std::ostringstream progress, log;
  const auto results = trainer::run_eval(c, progress);
  trainer::write_eval_report(results, (dir / "out").string(), /*plot=*/false, "", log);
  const auto written = nlohmann::json::parse(std::ifstream(dir / "out/results.json"));
  EXPECT_EQ(written, results);
  ASSERT_EQ(results["perplexity"].size(), 12u);  // 6 methods x 2 lengths
  for (const auto& row : results["perplexity"]) {
    EXPECT_EQ(row["status"], "ok") << row.dump();
    EXPECT_GT(row["ppl"].get<double>(), 1.0) << row.dump();
    EXPECT_EQ(row["scored_tokens"], 40) << row.dump();
  }
  const auto md = uio::test::read_file(dir / "out/results.md");
  for (const char* m : {"| uio |", "| truncate |", "| linear |", "| ntk |", "| dynamic |", "| yarn |"})
    EXPECT_NE(md.find(m), std::string::npos) << md;
  c.lengths = {40};
  EXPECT_THROW(trainer::run_eval(c, progress), std::invalid_argument);  // a length must exceed score_tokens
}

// Retrieval scoring wants every asked number, in order, at the start of the answer.
TEST(Eval, RetrievalAnswersMatchEveryAskedNumberInOrder) {
  EXPECT_TRUE(trainer::answer_matches_all(" 40821, 7731. The", " 40821, 7731."));
  EXPECT_TRUE(trainer::answer_matches_all(" 40821\nID", " 40821\n"));
  EXPECT_FALSE(trainer::answer_matches_all(" 7731, 40821.", " 40821, 7731."));
  EXPECT_FALSE(trainer::answer_matches_all(" 40821.", " 40821, 7731."));
  EXPECT_FALSE(trainer::answer_matches_all(" 408210, 7731.", " 40821, 7731."));
  EXPECT_FALSE(trainer::answer_matches_all(" 40821", " no number"));
}

// `--retrieval_lengths` asks the training's synthetic questions over held-out text and reports, per method
// and length, how many of the trials were answered; the plain SmolLM2 reading a short prompt whole answers
// some of them (the prompts end just before the answer, and the question is answerable from the text).
TEST(Eval, RetrievalInTheTrainingFormatsIsScoredPerMethodAndLength) {
  const auto gguf = smollm2_gguf();
  if (gguf.empty()) GTEST_SKIP() << "no SmolLM2 GGUF under models/ (run scripts/get-model.sh)";
  const auto dir = uio::test::scratch_dir();
  trainer::EvalConfig c;
  c.model = gguf;
  c.data = uio::test::write_random_store(dir / "store", 6, 600, uio::test::test_seed()).string();
  c.methods = {trainer::EvalMethod::truncate};
  c.retrieval_lengths = {256, 320}, c.retrieval_trials = 6, c.documents = 2;
  std::ostringstream progress, log;
  const auto results = trainer::run_eval(c, progress);
  ASSERT_EQ(results["retrieval"].size(), 2u);
  int64_t correct = 0;
  for (const auto& row : results["retrieval"]) {
    EXPECT_EQ(row["status"], "ok") << row.dump();
    EXPECT_EQ(row["trials"], 6);
    EXPECT_DOUBLE_EQ(row["accuracy"].get<double>(), row["correct"].get<double>() / 6.0);
    correct += row["correct"].get<int64_t>();
  }
  EXPECT_GT(correct, 0) << results["retrieval"].dump();
  trainer::write_eval_report(results, (dir / "out").string(), /*plot=*/false, "", log);
  EXPECT_NE(uio::test::read_file(dir / "out/results.md").find("Retrieval in the training's synthetic formats"),
            std::string::npos);
  c.retrieval_trials = 0;
  EXPECT_THROW(trainer::run_eval(c, progress), std::invalid_argument);
  // --retrieval_distance keeps the facts that far from the answer (data/retrieval_task's min_distance,
  // tested there): the rows and the table say so, and a length that cannot hold it is refused naming both.
  c.retrieval_trials = 2, c.retrieval_lengths = {320}, c.retrieval_distance = 128;
  const auto far = trainer::run_eval(c, progress);
  ASSERT_EQ(far["retrieval"].size(), 1u);
  EXPECT_EQ(far["retrieval"][0]["distance"], 128);
  EXPECT_EQ(far["retrieval"][0]["status"], "ok");
  trainer::write_eval_report(far, (dir / "far").string(), /*plot=*/false, "", log);
  EXPECT_NE(uio::test::read_file(dir / "far/results.md").find("every fact at least 128 tokens before the answer"),
            std::string::npos);
  // --retrieval_min/max_digits and --retrieval_max_facts reach the prompts (a run trained on short numbers is
  // asked short numbers) and the row says which; 12 facts of 18 digits cannot fit 320 tokens, and the
  // prompts' builder says so with these values.
  c.retrieval_distance = 0, c.retrieval_min_digits = 2, c.retrieval_max_digits = 2, c.retrieval_max_facts = 1;
  const auto two = trainer::run_eval(c, progress);
  ASSERT_EQ(two["retrieval"].size(), 1u);
  EXPECT_EQ(two["retrieval"][0]["digits"], "2-2");
  EXPECT_EQ(two["retrieval"][0]["max_facts"], 1);
  EXPECT_EQ(two["retrieval"][0]["status"], "ok");
  c.retrieval_min_digits = 18, c.retrieval_max_digits = 18, c.retrieval_max_facts = 12;
  try {
    trainer::run_eval(c, progress);
    ADD_FAILURE() << "12 facts of 18 digits in 320 tokens";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("max_facts (12) or max_digits (18)"), std::string::npos) << e.what();
  }
  c.retrieval_min_digits = 3, c.retrieval_max_digits = 2;
  EXPECT_THROW(trainer::run_eval(c, progress), std::invalid_argument);
  c.retrieval_min_digits = 4, c.retrieval_max_digits = 7, c.retrieval_max_facts = 0;
  EXPECT_THROW(trainer::run_eval(c, progress), std::invalid_argument);
  c.retrieval_max_facts = 4;
  c.retrieval_distance = 320;
  try {
    trainer::run_eval(c, progress);
    FAIL() << "a distance the prompt cannot hold";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("retrieval_distance"), std::string::npos) << e.what();
  }
}

// `uio eval --memory` of a compressor with decoder adapters (beyond the paper) scores `uio` through them and
// the truncate baseline (the base model alone) without: against the same compressor with its decoder
// adapters dropped, the uio perplexity moves and the truncate one is the same to the last bit.
TEST(Eval, ACompressorWithDecoderAdaptersScoresUioWithThemAndTruncateWithout) {
  const auto dir = uio::test::scratch_dir();
  const auto model_dir = uio::test::testdata("hf_models/qwen2_bias").string();
  auto loaded = model::load_model(model_dir);
  auto with = random_compressor(loaded.config, loaded.model, 7, /*decoder_rank=*/4);
  auto options = with->options();
  options.decoder_lora.rank = 0;
  model::MemoryCompressor without(loaded.config, options, model::eos_memory_init(loaded.model));
  {
    torch::NoGradGuard no_grad;
    auto ours = with->named_parameters();
    for (auto& item : without->named_parameters()) item.value().copy_(ours[item.key()]);
  }
  model::save_memory((dir / "with").string(), with, model::identify(model_dir, loaded.config));
  model::save_memory((dir / "without").string(), without, model::identify(model_dir, loaded.config));
  trainer::EvalConfig c;
  c.model = model_dir;
  c.data = uio::test::write_random_store(dir / "store", 6, 500, uio::test::test_seed()).string();
  c.methods = {trainer::EvalMethod::uio, trainer::EvalMethod::truncate};
  c.lengths = {200}, c.score_tokens = 40, c.documents = 1, c.truncate_window = 64;
  auto ppl = [&](const std::string& memory) {
    c.memory = (dir / memory).string();
    std::ostringstream progress;
    const auto results = trainer::run_eval(c, progress);
    std::map<std::string, double> out;
    for (const auto& row : results["perplexity"]) out[row["method"].get<std::string>()] = row["ppl"].get<double>();
    return out;
  };
  auto a = ppl("with"), b = ppl("without");
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a.at("truncate"), b.at("truncate"));
  EXPECT_GT(std::abs(a.at("uio") - b.at("uio")), 1e-6 * b.at("uio")) << a.at("uio");
}

// `truncate_lora` is the export's decoder (with its decoder LoRA) reading the truncation window without
// memory: inside the first segment, where `uio` has no memory yet, the two are the same computation by two
// code paths (a plain forward with the adapters against the memory pass), so their scores and greedy
// answers agree; with the adapters they differ from `truncate`; without adapters the method is refused.
TEST(Eval, TruncateLoraIsTheDecoderAdaptersWithoutMemory) {
  auto loaded = model::load_model(uio::test::testdata("hf_models/qwen2_bias").string());
  trainer::Evaluator ev;
  ev.base = loaded.model;
  ev.compressor = random_compressor(loaded.config, loaded.model, uio::test::test_seed(), /*decoder_rank=*/4);
  ev.truncate_window = 64;
  torch::manual_seed(uio::test::test_seed() + 3);
  auto ids = torch::randint(3, loaded.config.vocab_size, {31}, torch::kInt64);  // segment_len is 32
  torch::NoGradGuard no_grad;
  auto [uio_loss, n1] = ev.score_tail(trainer::EvalMethod::uio, ids, 12);
  auto [lora_loss, n2] = ev.score_tail(trainer::EvalMethod::truncate_lora, ids, 12);
  auto [plain_loss, n3] = ev.score_tail(trainer::EvalMethod::truncate, ids, 12);
  EXPECT_EQ(n1, 12);
  EXPECT_EQ(n2, 12);
  EXPECT_EQ(n3, 12);
  EXPECT_NEAR(lora_loss, uio_loss, 1e-5 * std::abs(uio_loss));
  EXPECT_GT(std::abs(lora_loss - plain_loss), 1e-3 * std::abs(plain_loss)) << "the adapters must change the score";
  std::vector<int64_t> prompt(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + 20);
  EXPECT_EQ(ev.greedy(trainer::EvalMethod::truncate_lora, prompt, 8), ev.greedy(trainer::EvalMethod::uio, prompt, 8));

  ev.compressor = random_compressor(loaded.config, loaded.model, uio::test::test_seed(), /*decoder_rank=*/0);
  try {
    ev.score_tail(trainer::EvalMethod::truncate_lora, ids, 12);
    ADD_FAILURE() << "truncate_lora without decoder adapters must be refused";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("truncate_lora"), std::string::npos) << e.what();
  }
  EXPECT_EQ(trainer::parse_eval_method("truncate_lora"), trainer::EvalMethod::truncate_lora);
  trainer::EvalConfig c;
  c.methods = {trainer::EvalMethod::truncate_lora};
  c.model = uio::test::testdata("hf_models/qwen2_bias").string(), c.data = "unused", c.lengths = {64};
  c.score_tokens = 16;
  std::ostringstream progress;
  try {
    trainer::run_eval(c, progress);
    ADD_FAILURE() << "truncate_lora without --memory must be refused";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--memory"), std::string::npos) << e.what();
  }
}

TEST(Eval, CliParsesItsOptionsIntoOneLibraryCall) {
  const auto model_dir = uio::test::testdata("hf_models/qwen2_bias").string();
  auto bad = uio::test::run_uio({"eval", "--model", model_dir, "--methods", "uio,rope", "--lengths", "100"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("is not one of uio, truncate"), std::string::npos) << bad.err;
  auto no_memory = uio::test::run_uio(
      {"eval", "--model", model_dir, "--methods", "uio", "--lengths", "100", "--score_tokens", "40"});
  EXPECT_NE(no_memory.exit_code, 0);
  EXPECT_NE(no_memory.err.find("needs --memory"), std::string::npos) << no_memory.err;
}

// The FLOP convention of `uio bench train` (tools/train_flops.h), recomputed by hand for a small shape,
// and the published shapes' parameter counts.
TEST(BenchTrain, FlopCountFollowsTheStatedConventionAndShapesHaveTheirPublishedSizes) {
  model::ModelConfig c;
  c.vocab_size = 100, c.hidden_size = 8, c.intermediate_size = 12, c.num_layers = 2, c.num_heads = 2;
  c.num_kv_heads = 1, c.head_dim = 4;
  // N per layer: q 8*8 + k 8*4 + v 8*4 + o 8*8 + 3 * 8*12 = 64 + 32 + 32 + 64 + 288 = 480; 2 layers: 960.
  const double N = 960, head = 800, HD = 8, l = 6, M = 2;
  double expected = 0;
  for (int t = 0; t < 3; ++t) {
    expected += 2 * N * (l + M) + 2 * 4 * HD * (l + M) * (l + M) / 2;
    expected += 4 * (N + head) * l + 2 * 12 * HD * l * (t * M + l / 2);
  }
  EXPECT_DOUBLE_EQ(uio::trainer::train_step_flops(c, 6, 2, 3), expected);
  // Parameter counts as published (HF config.json of each): 7B, 8B, 135M.
  EXPECT_NEAR(uio::trainer::named_shape("llama2-7b").num_parameters() / 1e9, 6.74, 0.01);
  EXPECT_NEAR(uio::trainer::named_shape("llama3-8b").num_parameters() / 1e9, 8.03, 0.01);
  EXPECT_NEAR(uio::trainer::named_shape("smollm2-135m").num_parameters() / 1e6, 134.5, 0.5);
  EXPECT_THROW(uio::trainer::named_shape("gpt2"), std::invalid_argument);
}

// `uio bench train --compare_python` runs the eager HF + PEFT step (tools/bench/uio_step_hf.py) on the
// same model and document and prints both speeds and their ratio.
TEST(BenchTrain, ComparesWithTheEagerPythonStepOnTheSameShape) {
  const auto r = uio::test::run_uio({"bench",
                                     "train",
                                     "--model",
                                     uio::test::testdata("hf_models/qwen2_bias").string(),
                                     "--dtype",
                                     "float32",
                                     "--device",
                                     "cpu",
                                     "--segment_len",
                                     "32",
                                     "--num_memory_tokens",
                                     "8",
                                     "--encoder_lora_rank",
                                     "4",
                                     "--transfer_lora_rank",
                                     "4",
                                     "--tokens",
                                     "256",
                                     "--estimators",
                                     "tbptt",
                                     "--chunks",
                                     "3",
                                     "--steps",
                                     "1",
                                     "--compare_python",
                                     "--python",
                                     UIO_PYTHON_EXE});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("uio/python "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("MFU"), std::string::npos) << r.out;
}
