// model/memory_io.cpp — memory compressor directories.
#include "model/memory_io.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/format/atomic_file.h"
#include "data/format/fingerprint.h"
#include "model/peft.h"
#include "data/format/safetensors.h"
#include "data/format/json_file.h"

namespace uio::model {
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

Json lora_json(const LoraOptions& o) {
  return {{"rank", o.rank}, {"alpha", o.alpha}, {"dropout", o.dropout}, {"targets", o.targets}};
}

// j[key], an integer in [least, most] (a float is refused: converting 1e308 to an integer is undefined).
int64_t integer_in(const Json& j, const std::string& key, int64_t least, int64_t most, const std::string& file) {
  const auto& v = j.at(key);
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)))
    throw std::runtime_error(file + ": '" + key + "' is " + format::brief_json(v) + ", expected an integer");
  const auto x = v.get<int64_t>();
  if (x < least || x > most)
    throw std::runtime_error(file + ": '" + key + "' is " + std::to_string(x) + ", expected " + std::to_string(least) +
                             ".." + std::to_string(most) + "; the file is damaged or not written by uio");
  return x;
}

// Far beyond any real compressor, and small enough that shapes built from them allocate or fail cleanly.
constexpr int64_t kMaxSegmentLen = int64_t{1} << 20, kMaxLoraRank = int64_t{1} << 16, kMaxModelDim = int64_t{1} << 24;

LoraOptions lora_from_json(const Json& j, const std::string& file, const std::string& key) {
  try {
    LoraOptions o{integer_in(j, "rank", 1, kMaxLoraRank, file + " (" + key + ")"), j.at("alpha").get<double>(),
                  j.at("dropout").get<double>(), j.at("targets").get<std::vector<std::string>>()};
    if (!(o.alpha > 0) || !std::isfinite(o.alpha) || !(o.dropout >= 0 && o.dropout < 1))
      throw std::runtime_error(file + ": key '" + key + "': alpha must be > 0 and dropout in [0, 1)");
    return o;
  } catch (const Json::exception& e) {
    throw std::runtime_error(file + ": key '" + key + "' is malformed (" + e.what() + ")");
  }
}

// The compressor's adapter sets by their uio_config.json keys; the decoder's only when on (rank > 0).
std::vector<std::pair<const char*, const LoraOptions*>> adapter_sets(const MemoryOptions& o) {
  std::vector<std::pair<const char*, const LoraOptions*>> sets = {{"encoder_lora", &o.encoder_lora},
                                                                  {"transfer_lora", &o.transfer_lora}};
  if (o.decoder_lora.rank > 0) sets.emplace_back("decoder_lora", &o.decoder_lora);
  return sets;
}

// Sizes read from a file are checked before anything of their size is allocated (the encoder's mask
// is [l + M, l + M], a LoRA's factors [r, C]): libtorch's allocator aborts on absurd ones.
void check_sizes(const MemoryOptions& o, const std::string& file) {
  auto fail = [&](const std::string& what) {
    throw std::runtime_error(file + ": " + what + "; the file is damaged, or not a compressor uio wrote");
  };
  if (o.segment_len <= 0) fail("segment_len is " + std::to_string(o.segment_len) + ", expected > 0");
  if (o.num_memory_tokens <= 0 || o.num_memory_tokens > o.segment_len || o.segment_len % o.num_memory_tokens != 0)
    fail("num_memory_tokens is " + std::to_string(o.num_memory_tokens) + ", expected a divisor of segment_len " +
         std::to_string(o.segment_len));
  if (o.sink_tokens < 0 || o.sink_tokens > o.segment_len)
    fail("sink_tokens is " + std::to_string(o.sink_tokens) + ", expected 0 .. segment_len (" +
         std::to_string(o.segment_len) + ")");
  const auto& known = lora_target_names();
  for (const auto& [key, lora] : adapter_sets(o)) {
    if (lora->rank <= 0 || !(lora->dropout >= 0 && lora->dropout < 1) || !std::isfinite(lora->alpha))
      fail(std::string(key) + " has rank " + std::to_string(lora->rank) + ", alpha " + std::to_string(lora->alpha) +
           ", dropout " + std::to_string(lora->dropout) + "; expected rank > 0, a finite alpha, dropout in [0, 1)");
    for (const auto& target : lora->targets)
      if (std::find(known.begin(), known.end(), target) == known.end())
        fail(std::string(key) + " targets '" + target +
             "', not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
  }
}

// The same against the base model: a segment fits the positions the model was trained on, and a LoRA's
// rank is below the model's width (a higher one would not be low-rank).
void check_sizes_fit(const MemoryOptions& o, const ModelConfig& config, const std::string& file) {
  if (o.segment_len > config.max_position)
    throw std::runtime_error(file + ": segment_len is " + std::to_string(o.segment_len) +
                             ", but the base model holds " + std::to_string(config.max_position) +
                             " positions (max_position_embeddings); the encoder "
                             "reads a whole segment at once");
  for (const auto& [key, lora] : adapter_sets(o))
    if (lora->rank > config.hidden_size)
      throw std::runtime_error(file + ": " + key + " has rank " + std::to_string(lora->rank) +
                               ", more than the base model's hidden_size " + std::to_string(config.hidden_size) +
                               "; the file is damaged, or not a compressor uio wrote");
}

}  // namespace

BaseIdentity identify(const std::string& path, const ModelConfig& c) {
  return {path,         c.architecture, c.num_layers, c.hidden_size,
          c.vocab_size, c.num_kv_heads, c.head_dim,   format::weights_fingerprint(path)};
}

void check_same_base(const BaseIdentity& saved, const BaseIdentity& now, const std::string& file) {
  auto mismatch = [&](const char* key, int64_t have, int64_t need) {
    if (have != need)
      throw std::runtime_error(file + ": the compressor was trained for a base model with " + key + " = " +
                               std::to_string(have) + " (" + saved.path + "), this model has " + std::to_string(need) +
                               " (" + now.path + "); pass the base model it was trained on");
  };
  mismatch("num_layers", saved.num_layers, now.num_layers);
  mismatch("hidden_size", saved.hidden_size, now.hidden_size);
  mismatch("vocab_size", saved.vocab_size, now.vocab_size);
  mismatch("num_kv_heads", saved.num_kv_heads, now.num_kv_heads);
  mismatch("head_dim", saved.head_dim, now.head_dim);
  if (!saved.fingerprint.empty() && !now.fingerprint.empty() && saved.fingerprint != now.fingerprint)
    throw std::runtime_error(file + ": the compressor was trained on the base model " + saved.path + " (fingerprint " +
                             saved.fingerprint + "), but " + now.path + " has other weights (fingerprint " +
                             now.fingerprint + "); pass the base model it was trained on");
}

namespace {

// uio_config.json of a compressor directory (format uio-memory) or an export (uio-export).
Json memory_config_json(const MemoryOptions& o, const BaseIdentity& base, const std::string& format) {
  Json j = {{"format", format},
            {"version", 1},
            {"segment_len", o.segment_len},
            {"num_memory_tokens", o.num_memory_tokens},
            {"memory_rope", rope_kind_name(o.memory_rope)},
            {"memory_rope_factor", o.memory_rope_factor},
            {"sink_tokens", o.sink_tokens},
            {"encoder_lora", lora_json(o.encoder_lora)},
            {"transfer_lora", lora_json(o.transfer_lora)},
            {"base_model",
             {{"path", base.path},
              {"architecture", base.architecture},
              {"num_layers", base.num_layers},
              {"hidden_size", base.hidden_size},
              {"vocab_size", base.vocab_size},
              {"num_kv_heads", base.num_kv_heads},
              {"head_dim", base.head_dim},
              {"fingerprint", base.fingerprint}}}};
  // Only when on: a compressor without decoder adapters writes the file it wrote before the option.
  if (o.decoder_lora.rank > 0) j["decoder_lora"] = lora_json(o.decoder_lora);
  return j;
}

// Whole or not at all: a full disk is an error naming the file, never a 0-byte uio_config.json.
void write_json(const fs::path& path, const Json& j) { format::write_file_atomic(path.string(), j.dump(2) + "\n"); }

constexpr const char* kEncoderAdapter = "encoder_adapter";
constexpr const char* kTransferAdapter = "transfer_adapter";
constexpr const char* kDecoderAdapter = "decoder_adapter";
constexpr const char* kMemoryEmbedding = "memory_embedding.safetensors";

}  // namespace

void save_memory(const std::string& dir, MemoryCompressor& compressor, const BaseIdentity& base) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : compressor->named_parameters()) {
    if (!torch::isfinite(item.value().detach()).all().item<bool>())
      throw std::runtime_error(dir + ": refusing to save the compressor: its parameter '" + item.key() +
                               "' holds non-finite values (NaN or inf; training diverged)");
    tensors.emplace_back(item.key(), item.value().detach());
  }
  fs::create_directories(dir);
  format::write_safetensors((fs::path(dir) / "uio_memory.safetensors").string(), tensors, {{"format", "uio-memory"}});
  write_json(fs::path(dir) / "uio_config.json", memory_config_json(compressor->options(), base, "uio-memory"));
}

void check_export_target(const std::string& dir, bool force) {
  const fs::path d(dir);
  std::error_code ec;
  const auto name = d.filename().empty() ? d.parent_path().filename().string() : d.filename().string();
  const auto parent = d.filename().empty() ? d.parent_path().parent_path() : d.parent_path();
  if (name.rfind("step-", 0) == 0 || name.rfind(".tmp-", 0) == 0 || parent.filename() == "checkpoints" ||
      fs::exists(fs::symlink_status(parent / "latest", ec)))
    throw std::runtime_error(dir +
                             ": lies among a run's checkpoints; choose a directory outside <out_dir>/checkpoints");
  const auto status = fs::status(d, ec);
  if (!fs::exists(status)) return;
  if (!fs::is_directory(status))
    throw std::runtime_error(dir + ": exists and is not a directory; choose a new directory for the export");
  // A compressor, a checkpoint or a run holds uio_config.json or files beside it that an export would
  // overwrite or outdate: never written into, --force or not.
  for (const char* ours : {"uio_memory.safetensors", "trainer_state.json", "checkpoints", "metrics.jsonl"})
    if (fs::exists(fs::symlink_status(d / ours, ec)))
      throw std::runtime_error(dir + ": holds " + ours +
                               ", so it is a compressor, a checkpoint or a run's out_dir; "
                               "an export never writes into one (even with --force); choose a new directory");
  if (!force && fs::directory_iterator(d, ec) != fs::directory_iterator())
    throw std::runtime_error(dir +
                             ": is not empty; choose a new directory, or pass --force to write the export "
                             "into it (its files of the export's names are replaced, others are left)");
}

void export_memory(const std::string& from, const std::string& dir, const ExportOptions& options) {
  check_export_target(dir, options.force);
  const auto loaded = read_memory_config(from);
  std::optional<uint64_t> checksum;
  if (!options.base_model.empty()) {  // the base model the user names, never the path the file records
    const auto fingerprint = format::weights_fingerprint(options.base_model);
    if (fingerprint.empty()) throw std::runtime_error(options.base_model + ": no such base model (--model)");
    if (loaded.base.fingerprint.empty() || fingerprint != loaded.base.fingerprint)
      throw std::runtime_error(options.base_model +
                               ": other weights than the base model the compressor was trained "
                               "on (fingerprint " +
                               fingerprint + ", " + from + "/uio_config.json records '" + loaded.base.fingerprint +
                               "'); pass the base model it was trained on");
    if (fs::is_regular_file(options.base_model)) checksum = format::file_checksum(options.base_model);
  }
  format::SafetensorsFile weights((fs::path(from) / "uio_memory.safetensors").string());
  const bool with_decoder = loaded.options.decoder_lora.rank > 0;
  std::map<std::string, torch::Tensor> encoder, transfer, decoder;
  torch::Tensor embedding;
  for (const auto& info : weights.tensors()) {
    if (info.name.rfind("encoder.", 0) == 0)
      encoder[info.name.substr(8)] = weights.tensor(info.name);
    else if (info.name.rfind("transfer.", 0) == 0)
      transfer[info.name.substr(9)] = weights.tensor(info.name);
    else if (with_decoder && info.name.rfind("decoder.", 0) == 0)
      decoder[info.name.substr(8)] = weights.tensor(info.name);
    else if (info.name == "memory_embedding")
      embedding = weights.tensor(info.name);
    else
      throw std::runtime_error(weights.path() + ": unexpected tensor '" + info.name + "' in a compressor");
  }
  if (!embedding.defined()) throw std::runtime_error(weights.path() + ": no tensor 'memory_embedding'");
  fs::create_directories(dir);
  write_peft_adapter((fs::path(dir) / kEncoderAdapter).string(), encoder, loaded.options.encoder_lora,
                     loaded.base.path);
  write_peft_adapter((fs::path(dir) / kTransferAdapter).string(), transfer, loaded.options.transfer_lora,
                     loaded.base.path);
  if (with_decoder) {
    if (decoder.empty())
      throw std::runtime_error(weights.path() + ": no 'decoder.' tensors, but " + from +
                               "/uio_config.json has decoder_lora of rank " +
                               std::to_string(loaded.options.decoder_lora.rank));
    write_peft_adapter((fs::path(dir) / kDecoderAdapter).string(), decoder, loaded.options.decoder_lora,
                       loaded.base.path);
  }
  format::write_safetensors((fs::path(dir) / kMemoryEmbedding).string(), {{"memory_embedding", embedding}},
                            {{"format", "pt"}});
  auto j = memory_config_json(loaded.options, loaded.base, "uio-export");
  if (checksum) j["base_model"]["checksum"] = *checksum;
  j["files"] = {{kEncoderAdapter, "PEFT LoRA adapter of the encoder (q_proj, v_proj by default): compression"},
                {kTransferAdapter, "PEFT LoRA adapter of the transfer head (k_proj, v_proj): memory keys and values"},
                {kMemoryEmbedding, "the <mem> token embedding [hidden_size], float32"}};
  if (with_decoder)
    j["files"][kDecoderAdapter] = "PEFT LoRA adapter of the decoder (beyond the paper): reading with memory";
  write_json(fs::path(dir) / "uio_config.json", j);
}

LoadedMemory read_memory_config(const std::string& dir) {
  const auto config_path = (fs::path(dir) / "uio_config.json").string();
  Json j;
  try {
    j = format::read_json_file(config_path);
  } catch (const format::FormatError& e) {
    throw std::runtime_error(std::string(e.what()) +
                             "; --memory expects a directory written by uio (a checkpoint "
                             "or an export) holding uio_config.json and uio_memory.safetensors");
  }
  LoadedMemory out;
  try {
    auto& o = out.options;
    o.segment_len = integer_in(j, "segment_len", 1, kMaxSegmentLen, config_path);
    o.num_memory_tokens = integer_in(j, "num_memory_tokens", 1, o.segment_len, config_path);
    if (o.segment_len % o.num_memory_tokens != 0)
      throw std::runtime_error(config_path + ": num_memory_tokens " + std::to_string(o.num_memory_tokens) +
                               " does not divide segment_len " + std::to_string(o.segment_len));
    o.memory_rope = parse_rope_kind(j.at("memory_rope").get<std::string>());
    o.memory_rope_factor = j.at("memory_rope_factor").get<double>();
    if (!(o.memory_rope_factor > 0) || !std::isfinite(o.memory_rope_factor))
      throw std::runtime_error(config_path + ": memory_rope_factor must be a finite number > 0");
    // Absent in compressors written before the option.
    o.sink_tokens = j.contains("sink_tokens") ? integer_in(j, "sink_tokens", 0, o.segment_len, config_path) : 0;
    const auto& b = j.at("base_model");  // zeros: a base model built in memory (tests), identity unknown
    out.base = {b.at("path").get<std::string>(),
                b.at("architecture").get<std::string>(),
                integer_in(b, "num_layers", 0, kMaxModelDim, config_path),
                integer_in(b, "hidden_size", 0, kMaxModelDim, config_path),
                integer_in(b, "vocab_size", 0, kMaxModelDim, config_path),
                integer_in(b, "num_kv_heads", 0, kMaxModelDim, config_path),
                integer_in(b, "head_dim", 0, kMaxModelDim, config_path),
                b.value("fingerprint", std::string())};
    o.encoder_lora = lora_from_json(j.at("encoder_lora"), config_path, "encoder_lora");
    o.transfer_lora = lora_from_json(j.at("transfer_lora"), config_path, "transfer_lora");
    // Absent when off, and in compressors written before the option: the paper's frozen decoder.
    if (j.contains("decoder_lora")) o.decoder_lora = lora_from_json(j.at("decoder_lora"), config_path, "decoder_lora");
  } catch (const Json::exception& e) {
    throw std::runtime_error(config_path + ": missing or wrongly typed key (" + e.what() + ")");
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(config_path + ": memory_rope: " + e.what());
  }
  check_sizes(out.options, config_path);
  return out;
}

LoadedMemory load_memory(const std::string& dir, const ModelConfig& config, const BaseIdentity& base,
                         const torch::Device& device) {
  auto out = read_memory_config(dir);
  check_same_base(out.base, base, (fs::path(dir) / "uio_config.json").string());
  check_sizes_fit(out.options, config, (fs::path(dir) / "uio_config.json").string());
  out.compressor = MemoryCompressor(config, out.options, torch::zeros({config.hidden_size}, device));
  load_memory_weights(dir, out.compressor);
  return out;
}

void load_memory_weights(const std::string& dir, MemoryCompressor& compressor) {
  torch::NoGradGuard no_grad;
  auto params = compressor->named_parameters();
  auto set = [&](const std::string& name, const torch::Tensor& t, const std::string& file) {
    auto* p = params.find(name);
    if (!p)
      throw std::runtime_error(file + ": tensor '" + name + "' has no place in this compressor (targets differ?)");
    if (t.sizes() != p->sizes())
      throw std::runtime_error(file + ": tensor '" + name + "' has shape " + c10::str(t.sizes()) +
                               ", uio_config.json "
                               "expects " +
                               c10::str(p->sizes()));
    p->copy_(t);
  };
  if (!fs::exists(fs::path(dir) / "uio_memory.safetensors") && fs::is_directory(fs::path(dir) / kEncoderAdapter)) {
    // An export: two PEFT adapters and the <mem> embedding.
    size_t count = 0;
    std::vector<std::pair<const char*, const char*>> adapters = {{kEncoderAdapter, "encoder."},
                                                                 {kTransferAdapter, "transfer."}};
    // A decoder adapter the compressor has no place for is refused by name below, not skipped.
    if (compressor->decoder || fs::exists(fs::path(dir) / kDecoderAdapter))
      adapters.emplace_back(kDecoderAdapter, "decoder.");
    for (const auto& [sub, prefix] : adapters) {
      const auto adapter = read_peft_adapter((fs::path(dir) / sub).string());
      for (const auto& [name, t] : adapter.tensors) set(prefix + name, t, (fs::path(dir) / sub).string());
      count += adapter.tensors.size();
    }
    format::SafetensorsFile embedding((fs::path(dir) / kMemoryEmbedding).string());
    set("memory_embedding", embedding.tensor("memory_embedding"), embedding.path());
    if (count + 1 != params.size())
      throw std::runtime_error(dir + ": the export holds " + std::to_string(count + 1) +
                               " tensors, the compressor has " + std::to_string(params.size()));
    return;
  }
  format::SafetensorsFile weights((fs::path(dir) / "uio_memory.safetensors").string());
  for (const auto& info : weights.tensors())  // e.g. decoder adapters a compressor without them would drop
    if (!params.find(info.name))
      throw std::runtime_error(weights.path() + ": tensor '" + info.name +
                               "' has no place in this compressor (its uio_config.json and this run's settings "
                               "differ?)");
  for (auto& item : params)
    set(item.key(), weights.tensor(item.key(), item.value().sizes().vec(), "uio_config.json"), weights.path());
}

}  // namespace uio::model
