// tests/fuzz_test.cpp — malformed model files: a tiny HF model (config.json, model.safetensors,
// tokenizer.json) and the tiny GGUF files of tests/reference/gguf_ref.py, mutated by bit flips,
// truncations, field edits and deep nesting, then loaded in-process (and, a few dozen times, through the
// `uio` binary under a timeout). Every case ends in an error naming the file, or in a correct result:
// never a signal, never a hang, and never a loaded model with other logits when the mutation hit a tensor's
// type, shape or offset. The seed is fixed and printed; each case draws fresh mutations from it.
// (INI files, checkpoint manifests and token stores are fuzzed beside the trainer's tests.)
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/format/gguf.h"
#include "data/format/safetensors.h"
#include "data/tokenizer.h"
#include "model/weights.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

constexpr uint64_t kSeed = 20251203;

// What the running case is, for the signal handler and the hang watchdog to print.
char g_case[512] = "setup";
std::atomic<int64_t> g_case_started{0};

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void set_case(const std::string& what) {
  std::snprintf(g_case, sizeof g_case, "fuzz seed %llu, %s", static_cast<unsigned long long>(kSeed), what.c_str());
  g_case_started = now_ms();
}

extern "C" void on_fatal_signal(int sig) {
  const char* head = "\nFUZZ: signal during case: ";
  [[maybe_unused]] auto a = ::write(2, head, std::strlen(head));
  [[maybe_unused]] auto b = ::write(2, g_case, std::strlen(g_case));
  [[maybe_unused]] auto c = ::write(2, "\n", 1);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// Names the case that crashed or hung: a signal handler, and a watchdog ending the process when one
// in-process case runs past `seconds` (a hang has no other way out).
class CaseGuard {
 public:
  explicit CaseGuard(double seconds) : limit_ms_(static_cast<int64_t>(seconds * 1000)) {
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGABRT, SIGILL}) ::signal(sig, on_fatal_signal);
    watchdog_ = std::thread([this] {
      while (!done_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (!done_ && now_ms() - g_case_started > limit_ms_) {
          std::fprintf(stderr, "\nFUZZ: case hung for more than %lld ms: %s\n", static_cast<long long>(limit_ms_),
                       g_case);
          std::_Exit(3);
        }
      }
    });
  }
  ~CaseGuard() {
    done_ = true;
    watchdog_.join();
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGABRT, SIGILL}) ::signal(sig, SIG_DFL);
  }

 private:
  int64_t limit_ms_;
  std::atomic<bool> done_{false};
  std::thread watchdog_;
};

// ---- the files ----

// A tiny random Llama (2 layers, GQA) with the small SmolLM-style tokenizer of tests/reference/tokenizer_ref.py,
// as an HF directory: config.json, model.safetensors, tokenizer.json.
fs::path write_tiny_hf_model(const fs::path& dir) {
  fs::create_directories(dir);
  const fs::path tokenizer = uio::test::testdata("tokenizer_ref/smollm/tokenizer.json");
  fs::copy_file(tokenizer, dir / "tokenizer.json");
  auto config = uio::test::tiny_llama_config();
  config.vocab_size = uio::data::load_tokenizer(tokenizer.string())->vocab_size();
  config.hidden_size = 16, config.intermediate_size = 24, config.head_dim = 4, config.tie_word_embeddings = true;
  torch::manual_seed(kSeed);
  uio::model::CausalLM model(config);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : model->named_parameters()) tensors.emplace_back(p.key(), p.value().detach());
  // One float16 tensor, so dtype edits meet more than one dtype.
  tensors[1].second = tensors[1].second.to(torch::kHalf);
  uio::format::write_safetensors((dir / "model.safetensors").string(), tensors, {{"format", "pt"}});
  const Json j = {{"model_type", "llama"},
                  {"architectures", {"LlamaForCausalLM"}},
                  {"vocab_size", config.vocab_size},
                  {"hidden_size", config.hidden_size},
                  {"intermediate_size", config.intermediate_size},
                  {"num_hidden_layers", config.num_layers},
                  {"num_attention_heads", config.num_heads},
                  {"num_key_value_heads", config.num_kv_heads},
                  {"head_dim", config.head_dim},
                  {"max_position_embeddings", config.max_position},
                  {"rms_norm_eps", 1e-5},
                  {"rope_theta", config.rope_theta},
                  {"tie_word_embeddings", true},
                  {"hidden_act", "silu"},
                  {"bos_token_id", 1},
                  {"eos_token_id", 2},
                  {"torch_dtype", "float32"}};
  uio::test::write_file(dir / "config.json", j.dump(2));
  return dir;
}

// Logits of a fixed prompt, float64 on the CPU.
torch::Tensor logits_of(const std::string& model_path) {
  auto loaded = uio::model::load_model(model_path);
  torch::NoGradGuard no_grad;
  const int64_t V = loaded.config.vocab_size;
  auto ids = torch::arange(5, 17, torch::kInt64).remainder(V).unsqueeze(0);
  return loaded.model->forward(ids).to(torch::kDouble);
}

// The outcome of one case: an error must name the file (or the directory holding it).
struct Outcome {
  bool loaded = false;
  std::string error;
};

template <class Fn>
Outcome attempt(Fn fn) {
  Outcome o;
  try {
    fn();
    o.loaded = true;
  } catch (const std::exception& e) {
    o.error = e.what();
  }
  return o;
}

// ---- mutations ----

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}
  uint64_t next() { return rng_(); }
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng_() % n); }

  // 1-4 random bytes in [from, to) set to random or "interesting" values.
  std::string flip_bytes(std::string bytes, size_t from, size_t to, std::string* what) {
    static const char kInteresting[] = {'0', '9', '-', '"',  ',',    '[', ']', '{',
                                        '}', ':', ' ', '\0', '\xff', 'e', '.', '\x7f'};
    const int n = 1 + static_cast<int>(below(4));
    for (int k = 0; k < n && to > from; ++k) {
      const size_t at = from + below(to - from);
      bytes[at] = below(2) ? kInteresting[below(sizeof kInteresting)] : static_cast<char>(next());
      *what += " byte@" + std::to_string(at);
    }
    return bytes;
  }
  // One random bit in [from, to).
  std::string flip_bit(std::string bytes, size_t from, size_t to, std::string* what) {
    if (to <= from) return bytes;
    const size_t at = from + below(to - from);
    const int bit = static_cast<int>(below(8));
    bytes[at] = static_cast<char>(bytes[at] ^ (1 << bit));
    *what += " bit " + std::to_string(bit) + " of byte@" + std::to_string(at);
    return bytes;
  }
  std::string truncate(const std::string& bytes, std::string* what) {
    const size_t n = below(bytes.size());
    *what += " truncated to " + std::to_string(n);
    return bytes.substr(0, n);
  }
  // A value to put where a number, string or object was.
  Json value(std::string* what) {
    Json v;
    switch (below(12)) {
      case 0: v = -1; break;
      case 1: v = 0; break;
      case 2: v = 1000000000; break;
      case 3: v = int64_t(1) << 62; break;
      case 4: v = -(int64_t(1) << 40); break;
      case 5: v = 1e300; break;
      case 6: v = "x"; break;
      case 7: v = nullptr; break;
      case 8: v = Json::array({1, 2}); break;
      case 9: v = Json::object({{"a", 1}}); break;
      case 10: v = 0.5; break;
      default: v = static_cast<int64_t>(below(70000)) - 3; break;
    }
    *what += " = " + v.dump();
    return v;
  }

 private:
  std::mt19937_64 rng_;
};

// A JSON text with a value nested `depth` levels deep put at key `key` of the top-level object.
std::string with_deep_value(const std::string& json_text, const std::string& key, size_t depth) {
  const std::string deep = std::string(depth, '[') + "1" + std::string(depth, ']');
  const size_t brace = json_text.find('{');
  return json_text.substr(0, brace + 1) + "\"" + key + "\":" + deep + "," + json_text.substr(brace + 1);
}

// Expects an outcome to be a success, or an error whose message names `place` (a file or directory).
void expect_named_or_loaded(const Outcome& o, const std::string& place, const std::string& what) {
  if (!o.loaded) {
    EXPECT_NE(o.error.find(place), std::string::npos)
        << g_case << "\n  (" << what << ")\n  error names no file: " << o.error;
  }
}

bool same_logits(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() && torch::equal(a, b);
}

// Byte positions of a safetensors header: [8, 8 + n).
size_t header_end(const std::string& file) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file[i]);
  return static_cast<size_t>(8 + n);
}

// Where a GGUF's tensor infos start (the first tensor's length-prefixed name) and its data section starts.
std::pair<size_t, size_t> gguf_info_range(const std::string& bytes, const std::string& path) {
  uio::format::GgufFile f(path);
  const std::string& first = f.tensors().front().name;
  std::string needle(8, '\0');
  const uint64_t len = first.size();
  std::memcpy(needle.data(), &len, 8);
  needle += first;
  return {bytes.find(needle), static_cast<size_t>(f.data_offset())};
}

}  // namespace

// Thousands of in-process cases across the five kinds of file.
TEST(Fuzz, MalformedModelFilesFailNamingTheFileOrLoadCorrectly) {
  std::printf("fuzz seed %llu\n", static_cast<unsigned long long>(kSeed));
  const auto root = uio::test::scratch_dir();
  const auto good_dir = write_tiny_hf_model(root / "good");
  const auto dir = root / "case";
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(good_dir)) fs::copy_file(e.path(), dir / e.path().filename());
  const std::string st_good = uio::test::read_file(good_dir / "model.safetensors");
  const std::string config_good = uio::test::read_file(good_dir / "config.json");
  const std::string tok_good = uio::test::read_file(good_dir / "tokenizer.json");
  const auto gguf_path = (root / "case.gguf").string();
  const std::string gguf_good = uio::test::read_file(uio::test::testdata("gguf_ref/llama.gguf"));
  const std::string vocab_good = uio::test::read_file(uio::test::testdata("gguf_ref/types.gguf"));
  const auto vocab_path = (root / "vocab.gguf").string();
  uio::test::write_file(gguf_path, gguf_good);
  const auto [info_begin, data_begin] = gguf_info_range(gguf_good, gguf_path);
  uio::test::write_file(vocab_path, vocab_good);
  const auto [vocab_info_begin, vocab_data_begin] = gguf_info_range(vocab_good, vocab_path);

  const auto hf_base = logits_of(good_dir.string());
  const auto gguf_base = logits_of(gguf_path);
  ASSERT_TRUE(torch::isfinite(hf_base).all().item<bool>());
  const std::string sample = "The river rose in 1923, and we'll see naïve geese —";

  Mutator m(kSeed);
  CaseGuard guard(30);
  int cases = 0, loaded = 0;
  const auto t0 = std::chrono::steady_clock::now();
  auto restore_hf = [&] {
    uio::test::write_file(dir / "model.safetensors", st_good);
    uio::test::write_file(dir / "config.json", config_good);
    uio::test::write_file(dir / "tokenizer.json", tok_good);
  };

  // model.safetensors: header bytes (type, shape, offsets, names: the model must not load with other
  // logits), data bytes (any values; must not crash), truncations, field edits, deep nesting.
  for (int i = 0; i < 900; ++i, ++cases) {
    std::string what = "model.safetensors #" + std::to_string(i);
    const size_t hend = header_end(st_good);
    std::string bytes;
    bool header_hit = true;
    switch (m.below(6)) {
      case 0: bytes = m.flip_bytes(st_good, 8, hend, &what); break;
      case 1: bytes = m.flip_bit(st_good, 8, hend, &what); break;
      case 2: bytes = m.truncate(st_good, &what); break;
      case 3: bytes = m.flip_bytes(st_good, hend, st_good.size(), &what), header_hit = false; break;
      case 4: bytes = m.flip_bytes(st_good, 0, 8, &what); break;
      default: {
        Json header = Json::parse(st_good.substr(8, hend - 8));
        std::vector<std::string> names;
        for (auto it = header.begin(); it != header.end(); ++it)
          if (it.key() != "__metadata__") names.push_back(it.key());
        const std::string name = names[m.below(names.size())];
        const int field = static_cast<int>(m.below(5));
        what += " edit '" + name + "'";
        if (field == 0) {
          const char* dtypes[] = {"F32", "F16", "BF16", "F64", "I32", "I64", "U8", "BOOL", "F8_E4M3", "f32"};
          std::string dtype = dtypes[m.below(10)];
          // F16 and BF16 have the same size and both decode to finite numbers: a swap between them is
          // indistinguishable from a file written that way, so it is left out (as in the GGUF cases).
          if ((dtype == "BF16" && header[name]["dtype"] == "F16") ||
              (dtype == "F16" && header[name]["dtype"] == "BF16"))
            dtype = "F64";
          header[name]["dtype"] = dtype, what += ".dtype = " + dtype;
        } else if (field == 1) {
          auto& shape = header[name]["shape"];
          const size_t d = m.below(shape.size());
          what += ".shape[" + std::to_string(d) + "]";
          shape[d] = m.value(&what);
        } else if (field == 2) {
          const size_t which = m.below(2);
          what += ".data_offsets[" + std::to_string(which) + "]";
          header[name]["data_offsets"][which] = m.value(&what);
        } else if (field == 3) {
          const uint64_t end = header[name]["data_offsets"][1].get<uint64_t>() ^ (uint64_t(1) << m.below(24));
          header[name]["data_offsets"][1] = end, what += ".data_offsets[1] = " + std::to_string(end);
        } else {
          const std::string key = m.below(2) ? "__metadata__" : name;
          bytes = with_deep_value(header.dump(), key + (m.below(2) ? "" : "x"), 1000 + m.below(80000));
          what += " deep nesting";
        }
        if (bytes.empty()) bytes = header.dump();
        std::string len(8, '\0');
        for (int k = 0; k < 8; ++k) len[k] = static_cast<char>(static_cast<uint64_t>(bytes.size()) >> (8 * k));
        bytes = len + bytes + st_good.substr(hend);
      }
    }
    set_case(what);
    uio::test::write_file(dir / "model.safetensors", bytes);
    torch::Tensor logits;
    const auto o = attempt([&] { logits = logits_of(dir.string()); });
    expect_named_or_loaded(o, dir.string(), what);
    if (o.loaded) {
      ++loaded;
      if (header_hit) {
        EXPECT_TRUE(same_logits(logits, hf_base)) << g_case << ": loaded with other logits";
      }
    }
  }
  restore_hf();

  // config.json: values replaced by absurd or wrongly typed ones, deep nesting, flips, truncation. A
  // loaded model may compute other logits (eps, theta are free), but never non-finite ones from a crash.
  const Json config = Json::parse(config_good);
  std::vector<std::string> keys;
  for (auto it = config.begin(); it != config.end(); ++it) keys.push_back(it.key());
  for (const std::string extra : {"rope_scaling", "attention_bias", "sliding_window", "rope_parameters"})
    keys.push_back(extra);
  for (int i = 0; i < 700; ++i, ++cases) {
    std::string what = "config.json #" + std::to_string(i);
    std::string text;
    const int kind = static_cast<int>(m.below(6));
    if (kind <= 2) {
      Json j = config;
      const int edits = 1 + static_cast<int>(m.below(2));
      for (int k = 0; k < edits; ++k) {
        const std::string key = keys[m.below(keys.size())];
        what += " '" + key + "'";
        j[key] = m.value(&what);
      }
      text = j.dump();
    } else if (kind == 3) {
      text = with_deep_value(config_good, keys[m.below(keys.size())], 1000 + m.below(80000)), what += " deep nesting";
    } else if (kind == 4) {
      text = m.flip_bytes(config_good, 0, config_good.size(), &what);
    } else {
      text = m.truncate(config_good, &what);
    }
    set_case(what);
    uio::test::write_file(dir / "config.json", text);
    const auto o = attempt([&] { logits_of(dir.string()); });
    expect_named_or_loaded(o, dir.string(), what);
    loaded += o.loaded;
  }
  restore_hf();

  // tokenizer.json: flips, truncation, field edits (ids, merges, pre-tokenizer), deep nesting; loaded
  // tokenizers must encode and decode.
  const Json tok = Json::parse(tok_good);
  for (int i = 0; i < 400; ++i, ++cases) {
    std::string what = "tokenizer.json #" + std::to_string(i);
    std::string text;
    const int kind = static_cast<int>(m.below(6));
    if (kind <= 2) {
      Json j = tok;
      const int field = static_cast<int>(m.below(5));
      if (field == 0) {
        auto it = j["model"]["vocab"].begin();
        std::advance(it, static_cast<long>(m.below(j["model"]["vocab"].size())));
        what += " vocab['" + it.key() + "']";
        *it = m.value(&what);
      } else if (field == 1 && !j["added_tokens"].empty()) {
        what += " added_tokens[0].id";
        j["added_tokens"][m.below(j["added_tokens"].size())]["id"] = m.value(&what);
      } else if (field == 2) {
        what += " merges[i]";
        j["model"]["merges"][m.below(j["model"]["merges"].size())] = m.value(&what);
      } else if (field == 3) {
        what += " pre_tokenizer";
        j["pre_tokenizer"] = m.value(&what);
      } else {
        what += " model";
        j["model"][m.below(2) ? "type" : "vocab"] = m.value(&what);
      }
      text = j.dump();
    } else if (kind == 3) {
      text = with_deep_value(tok_good, m.below(2) ? "model" : "added_tokens", 1000 + m.below(80000)), what += " deep";
    } else if (kind == 4) {
      text = m.flip_bytes(tok_good, 0, tok_good.size(), &what);
    } else {
      text = m.truncate(tok_good, &what);
    }
    set_case(what);
    uio::test::write_file(dir / "tokenizer.json", text);
    const auto o = attempt([&] {
      auto t = uio::data::load_tokenizer(dir.string());
      auto ids = t->encode(sample);
      t->decode(ids);
    });
    expect_named_or_loaded(o, dir.string(), what);
    loaded += o.loaded;
  }
  restore_hf();

  // GGUF model: tensor-info field edits (type, dims, offset) and single-bit flips there must never load
  // with other logits; metadata bytes may change the model (eps, theta), data bytes its weights.
  for (int i = 0; i < 900; ++i, ++cases) {
    std::string what = "llama.gguf #" + std::to_string(i);
    std::string bytes;
    bool info_hit = false;
    switch (m.below(6)) {
      case 0: bytes = m.flip_bit(gguf_good, info_begin, data_begin, &what), info_hit = true; break;
      case 1: bytes = m.flip_bytes(gguf_good, 0, info_begin, &what); break;
      case 2: bytes = m.flip_bytes(gguf_good, data_begin, gguf_good.size(), &what); break;
      case 3: bytes = m.truncate(gguf_good, &what); break;
      default: {
        // One field of one tensor info: the ggml type, a dimension or the data offset.
        uio::format::GgufFile f(gguf_path);
        const auto& t = f.tensors()[m.below(f.tensors().size())];
        std::string needle(8, '\0');
        const uint64_t len = t.name.size();
        std::memcpy(needle.data(), &len, 8);
        needle += t.name;
        const size_t dims_at = gguf_good.find(needle) + needle.size() + 4;
        const size_t type_at = dims_at + 8 * t.dims.size();
        bytes = gguf_good;
        const int field = static_cast<int>(m.below(3));
        info_hit = true;
        if (field == 0) {
          // F16 and BF16 have the same size and both decode to finite numbers: a swap between them is
          // indistinguishable from a file written that way, so it is left out.
          uint32_t type = static_cast<uint32_t>(m.below(41));
          if ((t.type == 1 && type == 30) || (t.type == 30 && type == 1)) type = 2;
          std::memcpy(bytes.data() + type_at, &type, 4);
          what += " '" + t.name + "' type " + std::to_string(t.type) + " -> " + std::to_string(type);
        } else if (field == 1) {
          const size_t d = m.below(t.dims.size());
          const uint64_t dim = m.below(2) ? static_cast<uint64_t>(t.dims[d]) ^ (uint64_t(1) << m.below(40))
                                          : static_cast<uint64_t>(m.below(1 << 20));
          std::memcpy(bytes.data() + dims_at + 8 * d, &dim, 8);
          what += " '" + t.name + "' dims[" + std::to_string(d) + "] = " + std::to_string(dim);
        } else {
          uint64_t offset;
          std::memcpy(&offset, bytes.data() + type_at + 4, 8);
          offset = m.below(2) ? offset ^ (uint64_t(1) << m.below(48)) : offset + 32 * (1 + m.below(8));
          std::memcpy(bytes.data() + type_at + 4, &offset, 8);
          what += " '" + t.name + "' offset = " + std::to_string(offset);
        }
      }
    }
    set_case(what);
    uio::test::write_file(gguf_path, bytes);
    torch::Tensor logits;
    const auto o = attempt([&] { logits = logits_of(gguf_path); });
    expect_named_or_loaded(o, gguf_path, what);
    if (o.loaded) {
      ++loaded;
      if (info_hit) {
        EXPECT_TRUE(same_logits(logits, gguf_base)) << g_case << ": loaded with other logits";
      }
    }
    uio::test::write_file(gguf_path, gguf_good);
  }

  // GGUF vocabulary (tokenizer.ggml.*): flips and truncations of the metadata, loaded tokenizers encode
  // and decode.
  for (int i = 0; i < 500; ++i, ++cases) {
    std::string what = "types.gguf tokenizer #" + std::to_string(i);
    const std::string bytes = m.below(5) ? m.flip_bytes(vocab_good, 24, vocab_info_begin, &what)
                                         : m.truncate(vocab_good.substr(0, vocab_data_begin), &what);
    set_case(what);
    uio::test::write_file(vocab_path, bytes);
    const auto o = attempt([&] {
      auto t = uio::data::load_tokenizer(vocab_path);
      t->decode(t->encode("ab ba aab"));
    });
    expect_named_or_loaded(o, vocab_path, what);
    loaded += o.loaded;
  }
  (void)vocab_data_begin;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("fuzz: %d in-process cases (%d loaded) in %.1f s\n", cases, loaded, seconds);
  EXPECT_GT(loaded, cases / 20) << "almost every mutation was refused: are the cases too crude to reach the loaders?";
}

// A few dozen runs of the `uio` binary (generate on the tiny HF model, info on the GGUF) under a timeout:
// exit 0, or exit 1 with a message naming the file; never a signal or a hang.
TEST(Fuzz, TheUioBinaryExitsZeroOrOneOnMalformedFiles) {
  std::printf("fuzz seed %llu\n", static_cast<unsigned long long>(kSeed + 1));
  const auto root = uio::test::scratch_dir();
  const auto dir = write_tiny_hf_model(root / "model");
  const std::string st_good = uio::test::read_file(dir / "model.safetensors");
  const std::string config_good = uio::test::read_file(dir / "config.json");
  const std::string gguf_good = uio::test::read_file(uio::test::testdata("gguf_ref/llama.gguf"));
  const auto gguf_path = root / "case.gguf";
  Mutator m(kSeed + 1);
  const std::string bin = uio::test::uio_binary();
  int runs = 0;
  auto run = [&](const std::vector<std::string>& args, const std::string& place, const std::string& what) {
    ++runs;
    std::string command = "timeout -s KILL 60 " + uio::test::shell_quote(bin);
    for (const auto& a : args) command += " " + uio::test::shell_quote(a);
    command += " </dev/null 2>&1";
    std::string out;
    FILE* pipe = ::popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    char buffer[4096];
    for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
    const int status = ::pclose(pipe);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    EXPECT_TRUE(code == 0 || code == 1) << "seed " << kSeed + 1 << ", " << what << ": exit " << code
                                        << (code == 137 ? " (killed after 60 s: a hang)" : "") << "\n"
                                        << out;
    if (code == 1) {
      EXPECT_NE(out.find(place), std::string::npos) << what << ": error names no file:\n" << out;
    }
  };
  for (int i = 0; i < 24; ++i) {
    std::string what = "generate, model.safetensors/config.json #" + std::to_string(i);
    const size_t hend = header_end(st_good);
    if (i % 3 == 2) {
      Json j = Json::parse(config_good);
      const char* keys[] = {"num_hidden_layers", "hidden_size", "vocab_size", "max_position_embeddings", "head_dim"};
      const std::string key = keys[m.below(5)];
      what += " '" + key + "'";
      j[key] = m.value(&what);
      uio::test::write_file(dir / "config.json", j.dump());
    } else {
      uio::test::write_file(dir / "model.safetensors", i % 3 ? m.flip_bytes(st_good, 8, hend, &what)
                                                             : m.flip_bytes(st_good, hend, st_good.size(), &what));
    }
    run({"generate", "--model", dir.string(), "--prompt", "The river", "--max_new_tokens", "3"}, dir.string(), what);
    uio::test::write_file(dir / "model.safetensors", st_good);
    uio::test::write_file(dir / "config.json", config_good);
  }
  // Weights made NaN: generate stops with a message (exit 1), never prints text from them.
  {
    auto bytes = st_good;
    const size_t hend = header_end(st_good);
    for (size_t at = hend; at + 4 <= bytes.size(); at += 4) std::memcpy(bytes.data() + at, "\xff\xff\xff\x7f", 4);
    uio::test::write_file(dir / "model.safetensors", bytes);
    run({"generate", "--model", dir.string(), "--prompt", "The river", "--max_new_tokens", "3"}, "not finite",
        "NaN weights");
    uio::test::write_file(dir / "model.safetensors", st_good);
  }
  for (int i = 0; i < 12; ++i) {
    std::string what = "info, llama.gguf #" + std::to_string(i);
    uio::test::write_file(gguf_path, i % 2 ? m.flip_bytes(gguf_good, 0, 4096, &what) : m.truncate(gguf_good, &what));
    run({"info", "--model", gguf_path.string(), "--forward_tokens", "4"}, gguf_path.string(), what);
  }
  std::printf("fuzz: %d runs of uio\n", runs);
}
