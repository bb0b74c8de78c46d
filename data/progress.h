// data/progress.h — a progress line for long jobs (tokenising a corpus, ...): a redrawn bar with rate
// and ETA on a terminal, plain lines at a steady interval otherwise (logs, CI). Knows nothing of what
// is counted; callers give a total and report how much is done.
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>

namespace uio::data {

class ProgressBar {
 public:
  // `unit` names what is counted ("bytes" is shown as MB). `interactive`: redraw one line with '\r'
  // (a terminal) or print a plain line every `interval_s` seconds (anything else).
  ProgressBar(std::ostream& out, std::string label, int64_t total, std::string unit, bool interactive,
              double interval_s = 10.0);
  // Whether `out` is std::cout or std::cerr attached to a terminal.
  static bool is_terminal(const std::ostream& out);

  // `done` of `total` finished; `extra` is appended to the line (e.g. "1.2M tokens").
  void update(int64_t done, const std::string& extra = "");
  // Final line with the totals and the elapsed time.
  void finish(const std::string& extra = "");

 private:
  std::string line(int64_t done, const std::string& extra, bool final) const;
  std::string amount(double v) const;

  std::ostream& out_;
  std::string label_, unit_;
  int64_t total_;
  bool interactive_;
  double interval_s_;
  std::chrono::steady_clock::time_point start_, last_;
  bool finished_ = false;
  size_t last_width_ = 0;
};

}  // namespace uio::data
