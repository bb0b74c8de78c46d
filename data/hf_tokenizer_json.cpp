// data/hf_tokenizer_json.cpp — HF tokenizer.json (+ tokenizer_config.json) to a BpeSpec. Only what a
// byte-level BPE needs is accepted; anything that would change the ids and is not modelled here
// (normalizers, BPE dropout, subword prefixes, prefix spaces) is refused with a message.
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/bpe_tokenizer.h"
#include "data/pretokenizer.h"
#include "data/format/json_file.h"

namespace uio::data {

namespace {

using nlohmann::json;

struct JsonFile {
  std::string path;
  json root;
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw std::invalid_argument(path + ": '" + key + "' " + what);
  }
};

JsonFile read_json(const std::string& path) {
  JsonFile f{path, {}};
  try {
    f.root = format::read_json_file(path);
  } catch (const format::FormatError& e) {
    throw std::invalid_argument(e.what());
  }
  return f;
}

// A regex matching `s` literally (HF Split with a String pattern).
std::string escape_regex(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}-/").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

// Appends the split regexes of one pre-tokenizer; sets byte_level when it is (or ends in) ByteLevel.
void read_pre_tokenizer(const JsonFile& f, const json& node, const std::string& key, std::vector<std::string>& regexes,
                        bool& byte_level) {
  const std::string type = node.value("type", "");
  if (byte_level) f.fail(key, "follows a ByteLevel pre-tokenizer; ByteLevel must come last in a byte-level BPE");
  if (type == "Sequence") {
    const auto& list = node.at("pretokenizers");
    for (size_t i = 0; i < list.size(); ++i)
      read_pre_tokenizer(f, list[i], key + ".pretokenizers[" + std::to_string(i) + "]", regexes, byte_level);
  } else if (type == "Split") {
    if (node.value("behavior", "") != "Isolated")
      f.fail(key + ".behavior", "is '" + node.value("behavior", "") + "'; only 'Isolated' is supported");
    if (node.value("invert", false)) f.fail(key + ".invert", "is true; only false is supported");
    const auto& pattern = node.at("pattern");
    if (pattern.contains("Regex"))
      regexes.push_back(pattern.at("Regex").get<std::string>());
    else if (pattern.contains("String"))
      regexes.push_back(escape_regex(pattern.at("String").get<std::string>()));
    else
      f.fail(key + ".pattern", "has neither 'Regex' nor 'String'");
  } else if (type == "Digits") {
    regexes.push_back(node.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)");
  } else if (type == "ByteLevel") {
    if (node.value("add_prefix_space", false))
      f.fail(key + ".add_prefix_space", "is true; only false is supported (SmolLM2, Llama-3, Qwen2 use false)");
    if (node.value("use_regex", true)) regexes.push_back(kGpt2SplitRegex);
    byte_level = true;
  } else {
    f.fail(key + ".type", "is '" + type + "'; supported: Sequence, Split, Digits, ByteLevel");
  }
}

// BOS from a TemplateProcessing whose single template starts with a special token.
void read_post_processor(const JsonFile& f, const json& node, const json& vocab, BpeSpec& spec) {
  if (node.is_null()) return;
  const std::string type = node.value("type", "");
  if (type == "Sequence") {
    for (const auto& p : node.at("processors")) read_post_processor(f, p, vocab, spec);
  } else if (type == "TemplateProcessing") {
    const auto& single = node.at("single");
    if (!single.empty() && single[0].contains("SpecialToken")) {
      const std::string name = single[0]["SpecialToken"].at("id").get<std::string>();
      const auto& specials = node.at("special_tokens");
      if (!specials.contains(name) || specials[name].at("ids").size() != 1)
        f.fail("post_processor.special_tokens", "lacks a single id for '" + name + "'");
      spec.bos = specials[name]["ids"][0].get<int32_t>();
      spec.add_bos = true;
    }
  }
}

// A token name in tokenizer_config.json: a string, or an AddedToken object with "content".
std::string config_token(const json& node) {
  if (node.is_string()) return node.get<std::string>();
  if (node.is_object() && node.contains("content")) return node["content"].get<std::string>();
  return "";
}

}  // namespace

BpeSpec bpe_spec_from_tokenizer_json(const std::string& path) {
  JsonFile f = read_json(path);
  const json& root = f.root;
  BpeSpec spec;
  try {
    if (!root.contains("model")) f.fail("model", "is missing");
    const json& model = root["model"];
    if (model.value("type", "") != "BPE")
      f.fail("model.type", "is '" + model.value("type", "") + "'; only 'BPE' is a byte-level BPE model");
    if (model.contains("dropout") && !model["dropout"].is_null())
      f.fail("model.dropout", "is set; BPE dropout is for training");
    if (model.value("byte_fallback", false))
      f.fail("model.byte_fallback", "is true: this is a SentencePiece-style BPE; load tokenizer.model instead");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty())
        f.fail(std::string("model.") + key, "is set; byte-level BPE has none");
    if (root.contains("normalizer") && !root["normalizer"].is_null())
      f.fail("normalizer", "is '" + root["normalizer"].value("type", "?") +
                               "'; normalizers are not supported (load the model's GGUF, as llama.cpp skips it)");
    spec.ignore_merges = model.value("ignore_merges", false);

    const json& vocab = model.at("vocab");
    const json& added = root.value("added_tokens", json::array());
    if (!vocab.is_object()) f.fail("model.vocab", "is not an object of token -> id");
    if (!added.is_array()) f.fail("added_tokens", "is not a list");
    // Ids are dense: each lies below the number of tokens (checked before the vocabulary is sized by them).
    const int64_t count = static_cast<int64_t>(vocab.size() + added.size());
    auto checked_id = [&](const json& id, const std::string& where) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= count)
        f.fail(where, "has id " + format::brief_json(id) + ", expected an integer in [0, " + std::to_string(count) +
                          ") (ids number the " + std::to_string(count) + " tokens densely)");
      return static_cast<int32_t>(id.get<int64_t>());
    };
    int32_t size = 0;
    for (auto it = vocab.begin(); it != vocab.end(); ++it)
      size = std::max(size, checked_id(it.value(), "model.vocab['" + it.key() + "']") + 1);
    for (size_t i = 0; i < added.size(); ++i)
      size = std::max(size, checked_id(added[i].at("id"), "added_tokens[" + std::to_string(i) + "].id") + 1);
    spec.tokens.assign(size, "");
    spec.token_types.assign(size, kTokenNormal);
    for (auto it = vocab.begin(); it != vocab.end(); ++it) spec.tokens[it.value().get<int32_t>()] = it.key();
    for (size_t i = 0; i < added.size(); ++i) {
      const auto& a = added[i];
      const std::string key = "added_tokens[" + std::to_string(i) + "]";
      for (const char* flag : {"single_word", "lstrip", "rstrip"})
        if (a.value(flag, false)) f.fail(key + "." + flag, "is true; not supported");
      const int32_t id = a.at("id").get<int32_t>();
      spec.tokens[id] = a.at("content").get<std::string>();
      spec.token_types[id] = a.value("special", false) ? kTokenControl : kTokenUserDefined;
    }
    for (int32_t id = 0; id < size; ++id)
      if (spec.tokens[id].empty()) f.fail("model.vocab", "has no token with id " + std::to_string(id));

    for (const auto& m : model.at("merges")) {
      if (m.is_string()) {
        spec.merges.push_back(m.get<std::string>());
      } else {
        const auto left = m.at(0).get<std::string>(), right = m.at(1).get<std::string>();
        if (left.find(' ') != std::string::npos || right.find(' ') != std::string::npos)
          f.fail("model.merges", "has a pair with a space in a token ('" + left + "', '" + right + "')");
        spec.merges.push_back(left + " " + right);
      }
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      auto it = vocab.find(model["unk_token"].get<std::string>());
      if (it == vocab.end()) f.fail("model.unk_token", "is not in model.vocab");
      spec.unk = it->get<int32_t>();
    }

    bool byte_level = false;
    if (!root.contains("pre_tokenizer") || root["pre_tokenizer"].is_null())
      f.fail("pre_tokenizer", "is missing; a byte-level BPE needs a ByteLevel pre-tokenizer");
    read_pre_tokenizer(f, root["pre_tokenizer"], "pre_tokenizer", spec.split_regexes, byte_level);
    if (!byte_level) f.fail("pre_tokenizer", "has no ByteLevel step; this is not a byte-level BPE");
    if (root.contains("post_processor")) read_post_processor(f, root["post_processor"], vocab, spec);
  } catch (const json::exception& e) {
    throw std::invalid_argument(path + ": unexpected structure: " + e.what());
  }

  // tokenizer_config.json beside it: BOS/EOS names and the chat template.
  const auto config_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    JsonFile c = read_json(config_path.string());
    auto id_of = [&](const char* key) -> int32_t {
      if (!c.root.contains(key)) return -1;
      const std::string name = config_token(c.root[key]);
      if (name.empty()) return -1;
      for (size_t id = 0; id < spec.tokens.size(); ++id)
        if (spec.tokens[id] == name) return static_cast<int32_t>(id);
      c.fail(key, "names '" + name + "', which is not a token of " + path);
    };
    if (spec.bos < 0) spec.bos = id_of("bos_token");
    spec.eos = id_of("eos_token");
    if (c.root.contains("chat_template") && c.root["chat_template"].is_string())
      spec.chat_template = c.root["chat_template"].get<std::string>();
  }
  return spec;
}

}  // namespace uio::data
