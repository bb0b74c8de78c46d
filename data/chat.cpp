// data/chat.cpp — one user turn in ChatML, Llama-2 or Llama-3 form.
#include "data/chat.h"

#include <stdexcept>

namespace uio::data {
namespace {

// A ChatML template that adds a system turn when none is given carries that text literally.
std::string default_system_message(const std::string& tmpl) {
  const std::string open = "<|im_start|>system\n", close = "<|im_end|>";
  auto begin = tmpl.find(open);
  if (begin == std::string::npos) return "";
  begin += open.size();
  auto end = tmpl.find(close, begin);
  if (end == std::string::npos) return "";
  std::string text = tmpl.substr(begin, end - begin);
  // Only a literal (no Jinja expression inside) is a default message.
  return text.find("{{") == std::string::npos && text.find("{%") == std::string::npos ? text : "";
}

}  // namespace

std::string chat_prompt(const Tokenizer& tokenizer, const std::string& user) {
  const std::string format = tokenizer.chat_format();
  if (format == "chatml") {
    const std::string system = default_system_message(tokenizer.chat_template());
    std::string out = system.empty() ? "" : "<|im_start|>system\n" + system + "<|im_end|>\n";
    return out + "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n";
  }
  if (format == "llama3")
    return "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n" + user +
           "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
  if (format == "llama2") return "<s>[INST] " + user + " [/INST]";
  throw std::invalid_argument(
      "--chat: the model has no chat template uio recognises (ChatML, Llama-2 [INST] or "
      "Llama-3 headers); run without --chat");
}

}  // namespace uio::data
