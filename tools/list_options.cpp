// tools/list_options.cpp — comma-separated list values.
#include "tools/list_options.h"

#include <sstream>

#include "tools/options.h"

namespace uio::cli {

std::vector<std::string> split_list(const std::string& key, const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  if (out.empty()) throw OptionError("--" + key + " is empty");
  return out;
}

std::vector<int64_t> int_list(const std::string& key, const std::string& text) {
  std::vector<int64_t> out;
  for (const auto& item : split_list(key, text)) {
    try {
      size_t used = 0;
      out.push_back(std::stoll(item, &used));
      if (used != item.size() || out.back() < 1) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw OptionError("--" + key + " takes positive integers separated by commas, got '" + item + "'");
    }
  }
  return out;
}

std::vector<double> fraction_list(const std::string& key, const std::string& text) {
  std::vector<double> out;
  for (const auto& item : split_list(key, text)) {
    try {
      size_t used = 0;
      out.push_back(std::stod(item, &used));
      if (used != item.size() || !(out.back() >= 0.0 && out.back() <= 1.0)) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw OptionError("--" + key + " takes numbers in [0, 1] separated by commas, got '" + item + "'");
    }
  }
  return out;
}

}  // namespace uio::cli
