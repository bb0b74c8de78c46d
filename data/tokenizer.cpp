// data/tokenizer.cpp — which tokenizer a model path holds (load_tokenizer), and the throughput bench.
#include "data/tokenizer.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/bpe_tokenizer.h"
#include "data/sentencepiece_tokenizer.h"

namespace uio::data {

namespace {

namespace fs = std::filesystem;

nlohmann::json read_json_or_empty(const fs::path& p) {
  if (!fs::exists(p)) return nlohmann::json::object();
  std::ifstream in(p);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(p.string() + ": not valid JSON: " + e.what());
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
  return j.contains("model") && j["model"].is_object() && j["model"].value("byte_fallback", false);
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_path) {
  const fs::path path(model_path);
  if (!fs::exists(path)) throw std::invalid_argument(model_path + ": no such file or directory");
  if (fs::is_regular_file(path)) {
    if (path.extension() == ".gguf")
      throw std::invalid_argument(model_path + ": a GGUF tokenizer is built from the file's metadata: read it "
                                  "with model/gguf.h and call bpe_spec_from_gguf_metadata + make_bpe_tokenizer");
    if (path.filename() == "tokenizer.model") return load_sentencepiece(path, path.parent_path());
    if (path.extension() == ".json") return make_bpe_tokenizer(bpe_spec_from_tokenizer_json(model_path));
    throw std::invalid_argument(model_path + ": not a tokenizer file; expected tokenizer.json, tokenizer.model "
                                "or a .gguf model");
  }
  const fs::path json = path / "tokenizer.json", sp = path / "tokenizer.model";
  if (fs::exists(sp) && (!fs::exists(json) || is_sentencepiece_json(json))) return load_sentencepiece(sp, path);
  if (fs::exists(json)) return make_bpe_tokenizer(bpe_spec_from_tokenizer_json(json.string()));
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
