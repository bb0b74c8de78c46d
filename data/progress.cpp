// data/progress.cpp — the progress line of progress.h.
#include "data/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>

namespace uio::data {

ProgressBar::ProgressBar(std::ostream& out, std::string label, int64_t total, std::string unit, bool interactive,
                         double interval_s)
    : out_(out),
      label_(std::move(label)),
      unit_(std::move(unit)),
      total_(std::max<int64_t>(total, 0)),
      interactive_(interactive),
      interval_s_(interval_s),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

bool ProgressBar::is_terminal(const std::ostream& out) {
  if (&out == &std::cout) return ::isatty(STDOUT_FILENO) == 1;
  if (&out == &std::cerr || &out == &std::clog) return ::isatty(STDERR_FILENO) == 1;
  return false;
}

std::string ProgressBar::amount(double v) const {
  char buf[64];
  if (unit_ == "bytes")
    std::snprintf(buf, sizeof buf, "%.1f MB", v / 1e6);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2fM %s", v / 1e6, unit_.c_str());
  else
    std::snprintf(buf, sizeof buf, "%.0f %s", v, unit_.c_str());
  return buf;
}

std::string ProgressBar::line(int64_t done, const std::string& extra, bool final) const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double fraction = total_ > 0 ? std::min(1.0, static_cast<double>(done) / total_) : 1.0;
  const double rate = elapsed > 0 ? done / elapsed : 0.0;
  std::string s = label_ + " ";
  if (interactive_) {
    const int width = 24;
    const int filled = static_cast<int>(fraction * width);
    s += "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] ";
  }
  char buf[160];
  std::snprintf(buf, sizeof buf, "%5.1f%% %s of %s, %s/s", 100.0 * fraction, amount(done).c_str(),
                amount(total_).c_str(), amount(rate).c_str());
  s += buf;
  if (final) {
    std::snprintf(buf, sizeof buf, ", %.1f s", elapsed);
  } else if (rate > 0 && done < total_) {
    const double eta = (total_ - done) / rate;
    std::snprintf(buf, sizeof buf, ", ETA %d:%02d", static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
  } else {
    buf[0] = '\0';
  }
  s += buf;
  if (!extra.empty()) s += ", " + extra;
  return s;
}

void ProgressBar::update(int64_t done, const std::string& extra) {
  if (finished_) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (since < (interactive_ ? 0.1 : interval_s_)) return;
  last_ = now;
  const std::string s = line(done, extra, false);
  if (interactive_) {
    out_ << '\r' << s << std::string(last_width_ > s.size() ? last_width_ - s.size() : 0, ' ') << std::flush;
    last_width_ = s.size();
  } else {
    out_ << s << '\n' << std::flush;
  }
}

void ProgressBar::finish(const std::string& extra) {
  if (finished_) return;
  finished_ = true;
  const std::string s = line(total_, extra, true);
  if (interactive_)
    out_ << '\r' << s << std::string(last_width_ > s.size() ? last_width_ - s.size() : 0, ' ') << '\n' << std::flush;
  else
    out_ << s << '\n' << std::flush;
}

}  // namespace uio::data
