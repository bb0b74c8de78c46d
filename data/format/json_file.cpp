// data/format/json_file.cpp — parsing with a depth limit.
#include "data/format/json_file.h"

#include <fstream>
#include <sstream>

namespace uio::format {

nlohmann::json parse_json(const std::string& text, const std::string& where) {
  using Json = nlohmann::json;
  try {
    return Json::parse(text, [&](int depth, Json::parse_event_t, Json&) {
      if (depth > kMaxJsonDepth)
        throw FormatError(where + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) +
                          " levels; not a file uio writes or reads");
      return true;
    });
  } catch (const Json::exception& e) {
    throw FormatError(where + ": not valid JSON: " + e.what());
  }
}

nlohmann::json read_json_file(const std::string& path) {
  require_regular_file(path, "a JSON file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError(path + ": cannot open the file");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_json(text.str(), path);
}

std::string brief_json(const nlohmann::json& value, size_t max_chars) {
  std::string s = value.dump();  // parse_json bounded the depth, so this recursion is shallow
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

}  // namespace uio::format
