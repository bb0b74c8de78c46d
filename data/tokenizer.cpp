// data/tokenizer.cpp — which tokenizer a model path holds (load_tokenizer), and the throughput bench.
#include "data/tokenizer.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/bpe_tokenizer.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/format/gguf.h"
#include "data/format/json_file.h"

namespace uio::data {

namespace {

namespace fs = std::filesystem;

nlohmann::json read_json_or_empty(const fs::path& p) {
  if (!fs::exists(p)) return nlohmann::json::object();
  try {
    return format::read_json_file(p.string());
  } catch (const format::FormatError& e) {
    throw std::invalid_argument(e.what());
  }
}

std::unique_ptr<Tokenizer> load_sentencepiece(const fs::path& model, const fs::path& dir) {
  auto config = read_json_or_empty(dir / "tokenizer_config.json");
  bool add_bos = true;  // Llama-2 and Mistral; tokenizer_config.json says otherwise when it differs
  if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) add_bos = config["add_bos_token"];
  std::string tmpl = config.contains("chat_template") && config["chat_template"].is_string()
                         ? config["chat_template"].get<std::string>()
                         : "";
  return make_sentencepiece_tokenizer(model.string(), add_bos, tmpl);
}

// A tokenizer.json whose BPE has byte_fallback is the HF rendering of a SentencePiece model.
bool is_sentencepiece_json(const fs::path& json_path) {
  auto j = read_json_or_empty(json_path);
  return j.contains("model") && j["model"].is_object() && j["model"].contains("byte_fallback") &&
         j["model"]["byte_fallback"].is_boolean() && j["model"]["byte_fallback"].get<bool>();
}

// llama.cpp's tokenizer.ggml.* metadata: byte-level BPE ("gpt2" model) is supported.
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path) {
  format::GgufFile file(path);
  const std::string kind = file.has("tokenizer.ggml.model") ? file.get_string("tokenizer.ggml.model") : "";
  if (kind != "gpt2")
    throw std::invalid_argument(path + ": tokenizer.ggml.model is '" + kind +
                                "'; uio reads byte-level BPE ('gpt2') tokenizers from GGUF. For a SentencePiece "
                                "model use the HF directory with tokenizer.model");
  std::vector<int32_t> types;
  if (file.has("tokenizer.ggml.token_type"))
    for (auto t : file.get_int_array("tokenizer.ggml.token_type")) types.push_back(static_cast<int32_t>(t));
  auto id = [&](const char* key) { return file.has(key) ? static_cast<int32_t>(file.get_int(key)) : -1; };
  return make_bpe_tokenizer(bpe_spec_from_gguf_metadata(
      file.get_string_array("tokenizer.ggml.tokens"),
      file.has("tokenizer.ggml.merges") ? file.get_string_array("tokenizer.ggml.merges") : std::vector<std::string>{},
      std::move(types), file.has("tokenizer.ggml.pre") ? file.get_string("tokenizer.ggml.pre") : "gpt2",
      id("tokenizer.ggml.bos_token_id"), id("tokenizer.ggml.eos_token_id"),
      file.has("tokenizer.ggml.add_bos_token") && file.get_bool("tokenizer.ggml.add_bos_token"),
      file.has("tokenizer.chat_template") ? file.get_string("tokenizer.chat_template") : ""));
}

// `make()`, with the file named in front of errors raised where it is not known (building the BPE
// tables from a spec: "bpe tokenizer: merge 3 ('x') is not ...").
template <class Make>
std::unique_ptr<Tokenizer> naming(const fs::path& file, Make make) {
  try {
    return make();
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    if (msg.rfind(file.string(), 0) == 0) throw;
    throw std::invalid_argument(file.string() + ": " + msg);
  }
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_path) {
  const fs::path path(model_path);
  if (!fs::exists(path)) throw std::invalid_argument(model_path + ": no such file or directory");
  if (fs::is_regular_file(path)) {
    if (path.extension() == ".gguf") return naming(path, [&] { return load_gguf_tokenizer(model_path); });
    if (path.filename() == "tokenizer.model") return load_sentencepiece(path, path.parent_path());
    if (path.extension() == ".json")
      return naming(path, [&] { return make_bpe_tokenizer(bpe_spec_from_tokenizer_json(model_path)); });
    throw std::invalid_argument(model_path +
                                ": not a tokenizer file; expected tokenizer.json, tokenizer.model "
                                "or a .gguf model");
  }
  const fs::path json = path / "tokenizer.json", sp = path / "tokenizer.model";
  if (fs::exists(sp) && (!fs::exists(json) || is_sentencepiece_json(json))) return load_sentencepiece(sp, path);
  if (fs::exists(json))
    return naming(json, [&] { return make_bpe_tokenizer(bpe_spec_from_tokenizer_json(json.string())); });
  throw std::invalid_argument(model_path + ": the directory has neither tokenizer.json nor tokenizer.model");
}

double bench_tokenizer(const Tokenizer& tokenizer, const std::string& text) {
  if (text.empty()) throw std::invalid_argument("bench_tokenizer: the text is empty");
  double best = 0;
  size_t total_ids = 0;
  for (int run = 0; run < 3; ++run) {
    auto t0 = std::chrono::steady_clock::now();
    total_ids += tokenizer.encode(text).size();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, text.size() / 1e6 / s);
  }
  if (total_ids == 0) throw std::runtime_error("bench_tokenizer: the tokenizer produced no ids");
  return best;
}

}  // namespace uio::data
