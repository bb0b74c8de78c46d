// tools/memory_options.cpp — memory settings as config keys.
#include "tools/memory_options.h"

#include <algorithm>
#include <sstream>

#include "model/lora.h"

namespace uio::cli {
namespace {

std::vector<std::string> split_targets(const std::string& key, const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    const auto& known = model::lora_target_names();
    if (std::find(known.begin(), known.end(), item) == known.end())
      throw OptionError("bad value '" + text + "' for '" + key + "': '" + item +
                        "' is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
    out.push_back(item);
  }
  if (out.empty()) throw OptionError("'" + key + "' is empty: name at least one projection");
  return out;
}

}  // namespace

void add_memory_options(Schema& s, MemoryOptionsInput& in) {
  auto& o = in.options;
  s.add("segment_len", &o.segment_len, "segment length l (tokens compressed together)")
      .add("num_memory_tokens", &o.num_memory_tokens, "memory tokens M per segment")
      .add("compression_ratio", &in.compression_ratio, "l / M; when > 0 it sets M (overrides num_memory_tokens)")
      .add("encoder_lora_rank", &o.encoder_lora.rank, "rank of the encoder's LoRA")
      .add("encoder_lora_alpha", &o.encoder_lora.alpha, "alpha of the encoder's LoRA (scale alpha / rank)")
      .add("encoder_lora_dropout", &o.encoder_lora.dropout, "dropout on the encoder LoRA's input")
      .add("encoder_lora_targets", &in.encoder_lora_targets, "comma-separated projections the encoder LoRA adapts")
      .add("transfer_lora_rank", &o.transfer_lora.rank, "rank of the transfer head's LoRA")
      .add("transfer_lora_alpha", &o.transfer_lora.alpha, "alpha of the transfer head's LoRA")
      .add("transfer_lora_dropout", &o.transfer_lora.dropout, "dropout on the transfer LoRA's input")
      .add("transfer_lora_targets", &in.transfer_lora_targets, "projections of the transfer head (k_proj,v_proj)")
      .add("decoder_lora_rank", &o.decoder_lora.rank,
           "beyond the paper: rank of a LoRA on the decoder's own projections, trained with the compressor "
           "(0 = off = the paper's frozen decoder)")
      .add("decoder_lora_alpha", &o.decoder_lora.alpha, "alpha of the decoder's LoRA (scale alpha / rank)")
      .add("decoder_lora_dropout", &o.decoder_lora.dropout, "dropout on the decoder LoRA's input")
      .add("decoder_lora_targets", &in.decoder_lora_targets, "comma-separated projections the decoder LoRA adapts")
      .add("memory_rope", &in.memory_rope, "RoPE of memory + segment positions: none, linear, ntk, dynamic, yarn")
      .add("memory_rope_factor", &o.memory_rope_factor, "scaling factor of memory_rope (dynamic: 1 is fine)")
      .add("sink_tokens", &o.sink_tokens,
           "beyond the paper: keep the document's first N tokens as raw keys/values "
           "ahead of the memory (an attention sink; 0 = the paper's decoder). It softens an untrained "
           "memory's harm to perplexity but keeps memory from learning recall (docs/memory.md)");
}

model::MemoryOptions resolve_memory_options(const MemoryOptionsInput& in) {
  auto o = in.options;
  // Every range first, before any value divides another.
  auto at_least = [](const char* key, int64_t value, int64_t least, const char* meaning) {
    if (value < least)
      throw OptionError("bad value " + std::to_string(value) + " for '" + key +
                        "': expected >= " + std::to_string(least) + " (" + meaning + ")");
  };
  at_least("segment_len", o.segment_len, 1, "tokens compressed together");
  at_least("compression_ratio", in.compression_ratio, 0, "0: num_memory_tokens sets M");
  at_least("sink_tokens", o.sink_tokens, 0, "0: the paper's decoder");
  if (o.sink_tokens > o.segment_len)
    throw OptionError("sink_tokens " + std::to_string(o.sink_tokens) + " exceeds segment_len " +
                      std::to_string(o.segment_len) + "; the sink is part of the first segment");
  at_least("decoder_lora_rank", o.decoder_lora.rank, 0, "0: the paper's frozen decoder");
  for (const auto& [name, lora] :
       {std::pair{"encoder_lora", &o.encoder_lora}, std::pair{"transfer_lora", &o.transfer_lora},
        std::pair{"decoder_lora", &o.decoder_lora}}) {
    const std::string prefix = name;
    if (lora != &o.decoder_lora) at_least((prefix + "_rank").c_str(), lora->rank, 1, "the adapter's rank");
    if (!(lora->alpha > 0))
      throw OptionError("bad value " + std::to_string(lora->alpha) + " for '" + prefix + "_alpha': expected > 0");
    if (!(lora->dropout >= 0 && lora->dropout < 1))
      throw OptionError("bad value " + std::to_string(lora->dropout) + " for '" + prefix +
                        "_dropout': expected a "
                        "probability in [0, 1)");
  }
  if (!(o.memory_rope_factor > 0))
    throw OptionError("bad value " + std::to_string(o.memory_rope_factor) + " for 'memory_rope_factor': expected > 0");
  if (in.compression_ratio > 0) {
    if (o.segment_len % in.compression_ratio != 0)
      throw OptionError("compression_ratio " + std::to_string(in.compression_ratio) + " does not divide segment_len " +
                        std::to_string(o.segment_len));
    o.num_memory_tokens = o.segment_len / in.compression_ratio;
  }
  if (o.num_memory_tokens <= 0 || o.segment_len % o.num_memory_tokens != 0)
    throw OptionError("num_memory_tokens " + std::to_string(o.num_memory_tokens) +
                      " must be > 0 and divide segment_len " + std::to_string(o.segment_len));
  try {
    o.memory_rope = model::parse_rope_kind(in.memory_rope);
  } catch (const std::invalid_argument& e) {
    throw OptionError(std::string("memory_rope: ") + e.what());
  }
  if (o.memory_rope == model::RopeKind::llama3)
    throw OptionError("memory_rope: llama3 is the base model's own scaling; choose none, linear, ntk, dynamic or yarn");
  o.encoder_lora.targets = split_targets("encoder_lora_targets", in.encoder_lora_targets);
  o.transfer_lora.targets = split_targets("transfer_lora_targets", in.transfer_lora_targets);
  o.decoder_lora.targets = split_targets("decoder_lora_targets", in.decoder_lora_targets);
  for (const auto& t : o.transfer_lora.targets)
    if (t != "k_proj" && t != "v_proj")
      throw OptionError("transfer_lora_targets: the transfer head computes keys and values only; '" + t +
                        "' is not k_proj or v_proj");
  return o;
}

}  // namespace uio::cli
