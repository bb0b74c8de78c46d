// tests/fuzz_runs_test.cpp — what a training run reads back from disk, mutated: INI option files,
// checkpoints (the manifest trainer_state.json and every other file, with and without a manifest that
// still matches), and token stores (index.bin, tokens.bin). Bit flips, truncations, inserted bytes, field
// edits (wrong types, absurd numbers, paths out of their directory) and nesting 60,000 levels deep. Every
// case ends in a correct result or an error of the documented type naming the file (or the option) —
// never a signal, a hang or a stray library exception. Mostly in-process; a few dozen runs of the `uio`
// binary under a timeout (exit 0 or 1, never a signal). The model-file side (GGUF, safetensors,
// config.json, tokenizers) is fuzzed by tests/fuzz_test.cpp.
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/document_source.h"
#include "data/format/fingerprint.h"
#include "data/sampler.h"
#include "data/token_store.h"
#include "model/memory_io.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"
#include "tools/memory_options.h"
#include "tools/options.h"
#include "trainer/checkpoint.h"
#include "trainer/train.h"
#include "trainer/train_job.h"

using namespace uio;
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

// Nested arrays `depth` levels deep: the text of a hostile JSON value.
std::string nested(int depth) {
  return std::string(static_cast<size_t>(depth), '[') + std::string(static_cast<size_t>(depth), ']');
}

// ---- byte-level mutations, for any file ----

std::string flip_bits(std::string s, std::mt19937_64& rng) {
  if (s.empty()) return s;
  const int flips = 1 + static_cast<int>(rng() % 8);
  for (int i = 0; i < flips; ++i) s[rng() % s.size()] ^= static_cast<char>(1u << (rng() % 8));
  return s;
}

std::string mutate_bytes(const std::string& s, std::mt19937_64& rng) {
  const size_t at = s.empty() ? 0 : rng() % s.size();
  switch (rng() % 6) {
    case 0:
    case 1: return flip_bits(s, rng);
    case 2: return s.substr(0, at);  // truncated
    case 3: {  // random bytes inserted
      std::string junk(1 + rng() % 16, '\0');
      for (auto& c : junk) c = static_cast<char>(rng());
      return s.substr(0, at) + junk + s.substr(at);
    }
    case 4: return s.substr(0, at) + s.substr(at, 64) + s.substr(at);  // a chunk repeated
    default: {  // a chunk zeroed
      std::string out = s;
      for (size_t i = at; i < std::min(out.size(), at + 1 + rng() % 32); ++i) out[i] = '\0';
      return out;
    }
  }
}

// ---- JSON field edits ----

// Every node's JSON pointer (the root excluded), depth-first.
void pointers(const Json& j, const Json::json_pointer& at, std::vector<Json::json_pointer>& out) {
  if (j.is_object()) {
    for (const auto& [key, value] : j.items()) {
      out.push_back(at / key);
      pointers(value, at / key, out);
    }
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) {
      out.push_back(at / i);
      pointers(j[i], at / i, out);
    }
  }
}

constexpr const char* kDeep = "@@deep@@";

// One field of `j` replaced by a value of another type or an absurd one, removed, or renamed; the text,
// with kDeep replaced by 60,000 levels of nesting.
std::string edit_field(Json j, std::mt19937_64& rng) {
  std::vector<Json::json_pointer> all;
  pointers(j, Json::json_pointer(), all);
  if (all.empty()) return j.dump();
  const auto& at = all[rng() % all.size()];
  static const std::vector<Json> values = {nullptr,
                                           true,
                                           -1,
                                           0,
                                           1,
                                           Json(INT64_MAX),
                                           Json(INT64_MIN),
                                           Json(UINT64_MAX),
                                           1e308,
                                           -0.5,
                                           "",
                                           "x",
                                           "../../../etc/hostname",
                                           "/etc/hostname",
                                           Json::array(),
                                           Json::object(),
                                           Json::array({1, "two", nullptr}),
                                           std::string(5000, 'a'),
                                           kDeep};
  const auto parent = at.parent_pointer();
  switch (rng() % 8) {
    case 0:
      if (j.at(parent).is_object()) {
        j.at(parent).erase(at.back());
        break;
      }
      [[fallthrough]];
    case 1:
      if (j.at(parent).is_object()) {
        auto value = j.at(at);
        j.at(parent).erase(at.back());
        j.at(parent)[rng() % 2 ? "../" + at.back() : at.back() + "_"] = value;
        break;
      }
      [[fallthrough]];
    default: j.at(at) = values[rng() % values.size()];
  }
  auto text = j.dump(1);
  const auto deep = text.find(std::string("\"") + kDeep + "\"");
  if (deep != std::string::npos) text.replace(deep, std::strlen(kDeep) + 2, nested(60000));
  return text;
}

// `f` either succeeds or throws an exception whose message holds one of `names`; anything else (another
// message, a non-std exception) is a failure described with `what`.
template <typename F>
bool ends_well(const F& f, const std::vector<std::string>& names, const std::string& what) {
  try {
    f();
    return true;
  } catch (const std::exception& e) {
    const std::string message = e.what();
    for (const auto& n : names)
      if (message.find(n) != std::string::npos) return false;
    ADD_FAILURE() << what << ": the error names none of the expected files or options: " << message;
  } catch (...) {
    ADD_FAILURE() << what << ": a non-standard exception";
  }
  return false;
}

// ---- the binary under a timeout ----

struct Run {
  int code = -1;
  std::string err;
};

// `uio ARGS` killed after `seconds`: exit code, or 128 + the signal (timeout's 137 for a hang).
Run run_with_timeout(const std::vector<std::string>& args, const fs::path& err_file, int seconds = 60) {
  std::string command = "timeout -s KILL " + std::to_string(seconds) + " " + test::shell_quote(test::uio_binary());
  for (const auto& a : args) command += " " + test::shell_quote(a);
  command += " </dev/null >/dev/null 2>" + test::shell_quote(err_file.string());
  const int status = std::system(command.c_str());
  Run r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.err = test::read_file(err_file);
  return r;
}

// Exit 0, or exit 1 with an error line naming one of `names`.
void expect_clean_exit(const Run& r, const std::vector<std::string>& names, const std::string& what) {
  if (r.code == 0) return;
  EXPECT_EQ(r.code, 1) << what << ": a signal or a hang (" << r.code << "): " << r.err;
  bool named = false;
  for (const auto& n : names) named = named || r.err.find(n) != std::string::npos;
  EXPECT_TRUE(named) << what << ": the error names none of the expected files: " << r.err;
}

// ---- INI files ----

const char* kIni = R"(# a training recipe
[model]
model = models/base.gguf
dtype = float32

[memory]
segment_len = 64
compression_ratio = 8
encoder_lora_rank = 8
encoder_lora_alpha = 16
encoder_lora_dropout = 0.05
encoder_lora_targets = q_proj,v_proj
memory_rope = dynamic

[data]
data = out/store
seq_len = 256
sampler = long_only

[optimizer]
lr = 1e-3
beta2 = 0.95
eps = 1e-8
warmup_steps = 4
min_lr_ratio = 0.1

[run]
steps = 40
log_every = 5
keep_checkpoints = 3
out_dir = "out/run one"
)";

// The keys above bound as `uio train` binds them (same names, same fields), then resolved and checked.
void parse_ini_as_train(const std::string& path) {
  cli::MemoryOptionsInput memory;
  trainer::TrainJob job;
  std::string model, dtype = "float32", device = "cpu";
  cli::Schema schema("train", "fuzzed");
  schema.add("model", &model, "").add("dtype", &dtype, "").add("device", &device, "");
  cli::add_memory_options(schema, memory);
  auto& c = job.train;
  schema.add("data", &job.data, "")
      .add("seq_len", &job.seq_len, "")
      .add("sampler", &job.sampler, "")
      .add("lr", &c.optimizer.lr, "")
      .add("beta2", &c.optimizer.beta2, "")
      .add("eps", &c.optimizer.eps, "")
      .add("warmup_steps", &c.schedule.warmup_steps, "")
      .add("min_lr_ratio", &c.schedule.min_lr_ratio, "")
      .add("steps", &c.steps, "")
      .add("log_every", &c.log_every, "")
      .add("keep_checkpoints", &c.checkpoints.keep_last, "")
      .add("out_dir", &c.out_dir, "");
  std::ostringstream help;
  schema.parse({"--config", path}, help);
  job.memory = cli::resolve_memory_options(memory);
  if (job.data.empty()) job.data = "out/store";
  trainer::check_train_job(job);
}

const std::vector<std::string> kIniKeys = {"model",
                                           "dtype",
                                           "device",
                                           "segment_len",
                                           "num_memory_tokens",
                                           "compression_ratio",
                                           "encoder_lora",
                                           "transfer_lora",
                                           "memory_rope",
                                           "sink_tokens",
                                           "data",
                                           "seq_len",
                                           "sampler",
                                           "lr",
                                           "beta2",
                                           "eps",
                                           "warmup_steps",
                                           "min_lr_ratio",
                                           "steps",
                                           "log_every",
                                           "keep_checkpoints",
                                           "out_dir"};

std::string mutate_ini(const std::string& text, std::mt19937_64& rng) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  static const std::vector<std::string> values = {"0",
                                                  "-1",
                                                  "9223372036854775807",
                                                  "9223372036854775808",
                                                  "1e308",
                                                  "nan",
                                                  "inf",
                                                  "-inf",
                                                  "",
                                                  "\"",
                                                  "\"\"",
                                                  "\"unterminated",
                                                  "0x10",
                                                  "1.5",
                                                  "true",
                                                  std::string(10000, '9'),
                                                  "../../etc/passwd",
                                                  "a = b = c",
                                                  "\"quoted\" trailing",
                                                  "# comment",
                                                  "\xff\xfe",
                                                  std::string("a\0b", 3)};
  const size_t at = rng() % lines.size();
  const auto eq = lines[at].find('=');
  switch (rng() % 9) {
    case 0: return mutate_bytes(text, rng);
    case 1: lines.erase(lines.begin() + static_cast<long>(at)); break;
    case 2: lines.insert(lines.begin() + static_cast<long>(at), lines[at]); break;  // a key twice
    case 3: lines[at] = std::string(rng() % 2 ? 50000 : 3, '[') + "section"; break;
    case 4: lines.insert(lines.begin(), "\xEF\xBB\xBF"); break;
    case 5: lines[at] += "\r"; break;
    case 6:
      if (eq != std::string::npos) lines[at] = lines[at].substr(0, eq) + "_typo" + lines[at].substr(eq);
      break;
    default:
      if (eq != std::string::npos) lines[at] = lines[at].substr(0, eq + 1) + " " + values[rng() % values.size()];
  }
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

// ---- token stores ----

void write_fuzz_store(const fs::path& dir) {
  data::TokenStoreWriter w(dir.string(), {300, 299, "fuzz tokenizer"});
  std::mt19937_64 rng(5);
  for (int d = 0; d < 6; ++d) {
    std::vector<int32_t> tokens(static_cast<size_t>(50 + 40 * d));
    for (auto& t : tokens) t = static_cast<int32_t>(rng() % 299);
    w.add("doc" + std::to_string(d) + ".txt", d == 5 ? data::Split::heldout : data::Split::train, tokens);
  }
  w.finish();
}

// Opens the store, checks its ids against the model's vocabulary (300, as training does) and draws a
// few sequences in each sampler mode and split.
void read_store(const fs::path& dir) {
  data::TokenStore store(dir.string());
  store.check_ids(300, "the fuzz model");
  for (auto mode : {data::SamplerMode::long_only, data::SamplerMode::join})
    for (auto split : {data::Split::train, data::Split::heldout}) {
      data::SamplerOptions o;
      o.seq_len = 48, o.mode = mode, o.split = split, o.seed = 3;
      std::unique_ptr<data::Sampler> sampler;
      try {
        sampler = std::make_unique<data::Sampler>(store, o);
      } catch (const std::invalid_argument& e) {  // no document long enough in this split: said, and fine
        if (std::string(e.what()).find(dir.string()) == std::string::npos) throw;
        continue;
      }
      for (int i = 0; i < 4; ++i) sampler->next();
    }
}

// Field edits of index.bin at known offsets: header fields (version 8, width 12, vocabulary 16, EOS 24,
// counts 32 and 40, tokenizer name length 48) and, after the name, the first document's fields.
std::string edit_index(std::string index, std::mt19937_64& rng) {
  uint32_t name_len = 0;
  std::memcpy(&name_len, index.data() + 48, 4);
  const size_t doc0 = 52 + name_len;
  const std::vector<std::pair<size_t, size_t>> fields = {{8, 4},        {12, 4},        {16, 8},       {24, 8},
                                                         {32, 8},       {40, 8},        {48, 4},       {doc0, 8},
                                                         {doc0 + 8, 8}, {doc0 + 16, 1}, {doc0 + 17, 4}};
  static const std::vector<uint64_t> values = {0,          1,
                                               2,          3,
                                               4,          7,
                                               255,        299,
                                               300,        301,
                                               65535,      65536,
                                               1ull << 31, (1ull << 32) - 1,
                                               1ull << 32, 1ull << 40,
                                               UINT64_MAX, UINT64_MAX - 7};
  const auto [at, width] = fields[rng() % fields.size()];
  const uint64_t v = values[rng() % values.size()];
  std::memcpy(&index[at], &v, width);
  return index;
}

// ---- checkpoints ----

// A tiny run's trainer, set to resume from checkpoints in `out` (its own metrics go to `scratch`).
struct TinyRun {
  model::ModelConfig config = test::tiny_llama_config();
  model::CausalLM base{nullptr};
  data::RandomDocuments documents{48, 4 * 8, 9};

  TinyRun() {
    torch::manual_seed(1);
    base = model::CausalLM(config, torch::TensorOptions().dtype(torch::kFloat));
  }
  trainer::TrainConfig train_config(const fs::path& out) const {
    trainer::TrainConfig c;
    c.estimator.kind = optim::EstimatorKind::unbiased, c.estimator.window = 2, c.estimator.chunk = 2;
    c.optimizer.lr = 1e-3, c.steps = 10, c.log_every = 1, c.out_dir = out.string(), c.config_text = "[train]\n";
    return c;
  }
  std::unique_ptr<trainer::Trainer> trainer(const fs::path& out) {
    model::MemoryOptions o;
    o.segment_len = 8, o.num_memory_tokens = 2;
    o.encoder_lora = {4, 8.0, 0.0, {"q_proj", "v_proj"}};
    o.transfer_lora = {4, 8.0, 0.0, {"k_proj", "v_proj"}};
    model::MemoryCompressor memory(config, o, torch::randn({config.hidden_size}));
    return std::make_unique<trainer::Trainer>(train_config(out), base, memory, model::BaseIdentity{}, documents,
                                              std::vector<torch::Tensor>{});
  }
};

// The manifest of `dir` with the entry for `file` matching its bytes again (a mutation the manifest
// cannot catch: what reads the file must).
void rewrite_manifest_entry(const fs::path& dir, const std::string& file) {
  auto manifest = Json::parse(test::read_file(dir / "trainer_state.json"));
  manifest["files"][file] = {{"bytes", fs::file_size(dir / file)},
                             {"checksum", format::file_checksum((dir / file).string())}};
  test::write_file(dir / "trainer_state.json", manifest.dump(2));
}

void copy_tree(const fs::path& from, const fs::path& to) {
  fs::remove_all(to);
  fs::copy(from, to, fs::copy_options::recursive);
}

}  // namespace

TEST(FuzzRuns, MutatedIniFilesParseOrFailNamingTheFileOrTheOption) {
  const auto dir = test::scratch_dir();
  std::mt19937_64 rng(test::test_seed());
  const auto path = (dir / "recipe.ini").string();
  test::write_file(path, kIni);
  ASSERT_NO_THROW(parse_ini_as_train(path));
  auto names = kIniKeys;
  names.push_back(path);
  int accepted = 0;
  const int kCases = 320;
  for (int i = 0; i < kCases; ++i) {
    const auto text = mutate_ini(i % 4 == 3 ? mutate_ini(kIni, rng) : std::string(kIni), rng);
    test::write_file(path, text);
    accepted += ends_well([&] { parse_ini_as_train(path); }, names, "INI case " + std::to_string(i));
  }
  EXPECT_GT(accepted, 10);  // harmless edits (a comment, a trailing CR, a BOM) still parse
  EXPECT_LT(accepted, kCases);
}

TEST(FuzzRuns, MutatedTokenStoresReadCorrectlyOrFailNamingTheStore) {
  const auto root = test::scratch_dir();
  const auto pristine = root / "pristine", dir = root / "store";
  write_fuzz_store(pristine);
  ASSERT_NO_THROW(read_store(pristine));
  const auto index = test::read_file(pristine / "index.bin"), tokens = test::read_file(pristine / "tokens.bin");
  std::mt19937_64 rng(test::test_seed());
  int accepted = 0;
  const int kCases = 300;
  for (int i = 0; i < kCases; ++i) {
    copy_tree(pristine, dir);
    switch (i % 5) {
      case 0:
      case 1: test::write_file(dir / "index.bin", mutate_bytes(index, rng)); break;
      case 2: test::write_file(dir / "index.bin", edit_index(index, rng)); break;
      case 3: test::write_file(dir / "tokens.bin", mutate_bytes(tokens, rng)); break;
      default: {  // a file replaced by a directory, or missing
        const char* file = rng() % 2 ? "index.bin" : "tokens.bin";
        fs::remove(dir / file);
        if (rng() % 2) fs::create_directories(dir / file);
      }
    }
    accepted += ends_well([&] { read_store(dir); }, {dir.string()}, "token store case " + std::to_string(i));
  }
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, kCases);
}

TEST(FuzzRuns, MutatedCheckpointsResumeOrFailNamingTheFileAndAutoFallsBack) {
  const auto root = test::scratch_dir();
  const auto out = root / "run", checkpoints = out / "checkpoints";
  TinyRun run;
  std::string older, newest;
  {
    auto t = run.trainer(out);
    t->step();
    older = t->save_checkpoint();
    t->step();
    newest = t->save_checkpoint();
  }
  const auto pristine = root / "pristine";
  copy_tree(newest, pristine);
  const std::vector<std::string> files = {"trainer_state.json", "uio_config.json", "config.ini",
                                          "uio_memory.safetensors", "optimizer.safetensors"};
  const auto manifest = Json::parse(test::read_file(pristine / "trainer_state.json"));
  std::mt19937_64 rng(test::test_seed());
  int restored = 0, fell_back = 0;
  const int kCases = 360;
  for (int i = 0; i < kCases; ++i) {
    copy_tree(pristine, newest);
    const auto what = "checkpoint case " + std::to_string(i);
    const auto file = files[rng() % files.size()];
    const auto path = fs::path(newest) / file;
    switch (i % 6) {
      case 0:  // the manifest, byte by byte
        test::write_file(fs::path(newest) / "trainer_state.json",
                         mutate_bytes(test::read_file(fs::path(newest) / "trainer_state.json"), rng));
        break;
      case 1:
      case 2:  // the manifest, field by field (counters, rank states, file entries)
        test::write_file(fs::path(newest) / "trainer_state.json", edit_field(manifest, rng));
        break;
      case 3:  // another file, the manifest left as it was: verification must catch it
        test::write_file(path, mutate_bytes(test::read_file(path), rng));
        break;
      case 4:  // another file with a manifest that matches it again: what reads the file must catch it
        if (file.size() > 5 && file.substr(file.size() - 5) == ".json")
          test::write_file(path, rng() % 2 ? edit_field(Json::parse(test::read_file(path)), rng)
                                           : mutate_bytes(test::read_file(path), rng));
        else
          test::write_file(path, mutate_bytes(test::read_file(path), rng));
        if (file != "trainer_state.json") rewrite_manifest_entry(newest, file);
        break;
      default:  // the directory's structure
        switch (rng() % 3) {
          case 0: fs::remove(path), fs::create_directories(path / "x"); break;
          case 1: fs::remove(path); break;
          default: fs::remove(path), fs::create_symlink("/etc/hostname", path);
        }
    }
    // verify_checkpoint: a CheckpointError naming the directory, or the checkpoint is whole.
    bool verified = false;
    try {
      trainer::verify_checkpoint(newest);
      verified = true;
    } catch (const trainer::CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(newest), std::string::npos) << what << ": " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << what << ": not a CheckpointError: " << e.what();
    }
    // --resume auto: never throws for a damaged newest checkpoint; takes it when whole, else the older.
    std::ostringstream log;
    std::optional<std::string> found;
    EXPECT_NO_THROW(found = trainer::newest_checkpoint(checkpoints.string(), log)) << what;
    EXPECT_EQ(found.value_or(""), verified ? newest : older) << what << ": " << log.str();
    fell_back += !verified;
    // What verified is restored, or refused naming a file of the checkpoint.
    if (verified) restored += ends_well([&] { run.trainer(root / "resumed")->restore(newest, log); }, {newest}, what);
  }
  EXPECT_GT(restored, 0);
  EXPECT_GT(fell_back, kCases / 2);
}

// The binary on mutated inputs: `uio train` with a mutated recipe, `uio train --resume auto` and `uio
// export` on a mutated newest checkpoint, `uio train` on a mutated token store. Exit 0 or 1 naming the
// file, within the timeout.
TEST(FuzzRuns, TheBinaryOnMutatedRecipesCheckpointsAndStoresExitsZeroOrOneNamingTheFile) {
  const auto root = test::scratch_dir();
  const auto store = test::write_random_store(root / "store", 4, 300, test::test_seed());
  const auto model = test::testdata("hf_models/qwen2_bias").string();
  const auto recipe_text = "[model]\nmodel = " + model +
                           "\n[memory]\nsegment_len = 16\nnum_memory_tokens = 4\n"
                           "encoder_lora_rank = 2\ntransfer_lora_rank = 2\n[data]\ndata = " +
                           store.string() + "\nseq_len = 32\nval_documents = 0\n[run]\nsteps = 1\nlog_every = 1\n";
  const auto recipe = root / "recipe.ini";
  std::mt19937_64 rng(test::test_seed());
  const auto err = root / "err.txt";
  // A finished run to resume and export.
  test::write_file(recipe, recipe_text);
  ASSERT_EQ(run_with_timeout({"train", "--config", recipe.string(), "--out_dir", (root / "run").string(),
                              "--checkpoint_every", "1", "--steps", "2"},
                             err)
                .code,
            0)
      << test::read_file(err);
  const auto checkpoints = root / "run" / "checkpoints";
  const auto newest = checkpoints / "step-00000002", pristine = root / "pristine";
  copy_tree(newest, pristine);
  const auto manifest = Json::parse(test::read_file(pristine / "trainer_state.json"));
  int runs = 0;
  for (int i = 0; i < 8; ++i, ++runs) {
    test::write_file(recipe, mutate_ini(recipe_text, rng));
    const auto r = run_with_timeout(
        {"train", "--config", recipe.string(), "--out_dir", (root / "fresh").string(), "--overwrite", "--steps", "1"},
        err);  // a mutated steps = 10^18 would run on
    auto names = kIniKeys;
    names.insert(names.end(), {recipe.string(), "config file", "token store", "model", "--"});
    expect_clean_exit(r, names, "recipe " + std::to_string(i));
  }
  test::write_file(recipe, recipe_text);
  for (int i = 0; i < 16; ++i, ++runs) {
    copy_tree(pristine, newest);
    const auto file = i % 2 ? "trainer_state.json" : "uio_config.json";
    if (i % 4 < 2) {
      test::write_file(newest / file, edit_field(Json::parse(test::read_file(newest / file)), rng));
    } else {
      test::write_file(newest / file, mutate_bytes(test::read_file(newest / file), rng));
      if (std::string(file) != "trainer_state.json") rewrite_manifest_entry(newest, file);
    }
    const auto what = "checkpoint " + std::to_string(i) + " (" + file + ")";
    if (i % 2 == 0) {
      expect_clean_exit(run_with_timeout({"train", "--config", recipe.string(), "--out_dir", (root / "run").string(),
                                          "--resume", "auto", "--steps", "2"},
                                         err),
                        {checkpoints.string()}, what + ", resume");
    } else {
      fs::remove_all(root / "export");
      expect_clean_exit(
          run_with_timeout({"export", "--checkpoint", newest.string(), "--out", (root / "export").string()}, err),
          {newest.string()}, what + ", export");
    }
  }
  for (int i = 0; i < 8; ++i, ++runs) {
    const auto mutated = root / "mutated-store";
    copy_tree(store, mutated);
    const auto file = i % 2 ? "index.bin" : "tokens.bin";
    test::write_file(mutated / file, mutate_bytes(test::read_file(mutated / file), rng));
    expect_clean_exit(run_with_timeout({"train", "--config", recipe.string(), "--data", mutated.string(), "--out_dir",
                                        (root / "store-run").string(), "--overwrite"},
                                       err),
                      {mutated.string()}, "store " + std::to_string(i) + " (" + file + ")");
  }
  EXPECT_EQ(runs, 32);
}
