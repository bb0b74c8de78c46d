// data/sentencepiece_tokenizer.cpp — libsentencepiece behind the Tokenizer interface.
#include "data/sentencepiece_tokenizer.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include <sentencepiece_processor.h>

#include "data/pretokenizer.h"

namespace uio::data {

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& path, bool add_bos, std::string chat_template)
      : add_bos_(add_bos), chat_template_(std::move(chat_template)) {
    auto status = sp_.Load(path);
    if (!status.ok())
      throw std::invalid_argument(path + ": not a SentencePiece model (" + status.ToString() +
                                  "); expected a tokenizer.model written by SentencePieceTrainer");
    for (int id = 0; id < sp_.GetPieceSize(); ++id)
      if (sp_.IsControl(id) && !sp_.IdToPiece(id).empty()) controls_.push_back(id);
    // Longest first, so that matching at one position takes the longest control piece.
    std::stable_sort(controls_.begin(), controls_.end(),
                     [&](int a, int b) { return sp_.IdToPiece(a).size() > sp_.IdToPiece(b).size(); });
  }

  // parse_special: control pieces written in the text ("<s>", "</s>") become their ids, and the text
  // between them is encoded piece by piece (each gets SentencePiece's dummy prefix, as in HF's legacy
  // LlamaTokenizer). User-defined pieces are always matched, by SentencePiece itself.
  std::vector<int32_t> encode(std::string_view text, bool parse_special) const override {
    std::string repaired;
    if (!is_valid_utf8(text)) {
      repaired = repair_utf8(text);
      text = repaired;
    }
    std::vector<int32_t> ids;
    size_t start = 0;
    if (parse_special && !controls_.empty()) {
      for (size_t i = 0; i < text.size();) {
        int hit = -1;
        for (int id : controls_) {
          const std::string& piece = sp_.IdToPiece(id);
          if (text.compare(i, piece.size(), piece) == 0) {
            hit = id;
            break;
          }
        }
        if (hit < 0) {
          ++i;
          continue;
        }
        encode_plain(text.substr(start, i - start), ids);
        ids.push_back(hit);
        i += sp_.IdToPiece(hit).size();
        start = i;
      }
    }
    encode_plain(text.substr(start), ids);
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::string out;
    std::vector<int> run;
    auto flush = [&] {
      if (run.empty()) return;
      std::string piece_text;
      auto status = sp_.Decode(run, &piece_text);
      if (!status.ok()) throw std::runtime_error("sentencepiece decode failed: " + status.ToString());
      out += piece_text;
      run.clear();
    };
    for (int32_t id : ids) {
      check_id(id);
      if (sp_.IsControl(id)) {
        flush();
        if (!skip_special) out += sp_.IdToPiece(id);
      } else if (skip_special && sp_.IsUnknown(id)) {
        flush();
      } else {
        run.push_back(id);
      }
    }
    flush();
    return out;
  }

  // The piece with U+2581 as a space, a byte piece "<0xAB>" as its byte; control pieces as written.
  std::string token_bytes(int32_t id) const override {
    check_id(id);
    const std::string& piece = sp_.IdToPiece(id);
    if (sp_.IsControl(id) || sp_.IsUnknown(id)) return piece;
    if (sp_.IsByte(id)) return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
    std::string out;
    const std::string space = "\xE2\x96\x81";
    for (size_t i = 0; i < piece.size();) {
      if (piece.compare(i, 3, space) == 0) {
        out += ' ';
        i += 3;
      } else {
        out += piece[i++];
      }
    }
    return out;
  }

  int64_t vocab_size() const override { return sp_.GetPieceSize(); }
  int32_t bos_id() const override { return sp_.bos_id(); }
  int32_t eos_id() const override { return sp_.eos_id(); }
  bool add_bos() const override { return add_bos_; }
  bool is_special(int32_t id) const override {
    check_id(id);
    return sp_.IsControl(id) || sp_.IsUnknown(id);
  }
  int32_t token_id(std::string_view token) const override {
    int id = sp_.PieceToId(std::string(token));
    return sp_.IdToPiece(id) == token ? id : -1;  // PieceToId answers unk_id for unknown pieces
  }
  std::string chat_template() const override { return chat_template_; }
  std::string chat_format() const override {
    return chat_template_.find("[INST]") != std::string::npos ? "llama2" : "";
  }

 private:
  void check_id(int32_t id) const {
    if (id < 0 || id >= sp_.GetPieceSize())
      throw std::out_of_range("sentencepiece tokenizer: token id " + std::to_string(id) + " is outside [0, " +
                              std::to_string(sp_.GetPieceSize()) + ")");
  }
  void encode_plain(std::string_view text, std::vector<int32_t>& ids) const {
    if (text.empty()) return;
    std::vector<int> out;
    auto status = sp_.Encode(text, &out);
    if (!status.ok()) throw std::runtime_error("sentencepiece encode failed: " + status.ToString());
    ids.insert(ids.end(), out.begin(), out.end());
  }

  sentencepiece::SentencePieceProcessor sp_;
  std::vector<int> controls_;
  bool add_bos_;
  std::string chat_template_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& model_path, bool add_bos,
                                                        std::string chat_template) {
  return std::make_unique<SentencePieceTokenizer>(model_path, add_bos, std::move(chat_template));
}

}  // namespace uio::data
