// tools/list_options.h — comma-separated list values of option keys ("--tokens 8192,32768",
// "--depths 0,0.5,1"), parsed with errors that name the key and the bad item.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace uio::cli {

std::vector<std::string> split_list(const std::string& key, const std::string& text);  // non-empty items
std::vector<int64_t> int_list(const std::string& key, const std::string& text);  // positive integers
std::vector<double> fraction_list(const std::string& key, const std::string& text);  // numbers in [0, 1]

}  // namespace uio::cli
