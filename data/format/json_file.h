// data/format/json_file.h — reading JSON documents (config.json, tokenizer files, manifests, metadata)
// with errors that name the file, and a nesting limit: a hostile document nested tens of thousands of
// levels deep is refused while parsing, before any recursive code (printing, destruction) could overflow
// the stack on it.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "data/format/mapped_file.h"

namespace uio::format {

constexpr int kMaxJsonDepth = 128;  // far beyond any real config, tokenizer or manifest

// The parsed file; throws FormatError "<path>: cannot open ..." or "<path>: not valid JSON: ...".
nlohmann::json read_json_file(const std::string& path);
// The same for text that came from `where` (a file name, or "tensor header of X").
nlohmann::json parse_json(const std::string& text, const std::string& where);
// A short, bounded rendering of a value for error messages (never recursive past kMaxJsonDepth).
std::string brief_json(const nlohmann::json& value, size_t max_chars = 80);

}  // namespace uio::format
