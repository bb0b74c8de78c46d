// trainer/metrics.cpp — metrics.jsonl records and log formats.
#include "trainer/metrics.h"

#include <iomanip>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace uio::trainer {

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

std::string scientific(double v, int digits) {
  std::ostringstream s;
  s << std::scientific << std::setprecision(digits) << v;
  return s.str();
}

std::string duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  std::ostringstream out;
  if (s >= 3600)
    out << s / 3600 << "h" << std::setw(2) << std::setfill('0') << (s % 3600) / 60 << "m";
  else if (s >= 60)
    out << s / 60 << "m" << std::setw(2) << std::setfill('0') << s % 60 << "s";
  else
    out << s << "s";
  return out.str();
}

MetricsLog::MetricsLog(const std::string& path) : path_(path), out_(path, std::ios::app) {
  if (!out_) throw std::runtime_error("train: cannot write " + path);
}

void MetricsLog::write(const std::string& line) {
  out_ << line << "\n" << std::flush;
  if (!out_) throw std::runtime_error("train: cannot write " + path_ + " (is the disk full?)");
}

void MetricsLog::step(const StepResult& r, int64_t skipped, double elapsed, double peak_gb,
                      const std::vector<std::pair<std::string, double>>& loss_by_kind) {
  std::vector<double> by_segment;
  for (size_t t = 0; t < r.segment_loss.size(); ++t)
    by_segment.push_back(r.segment_loss[t] / static_cast<double>(std::max<int64_t>(1, r.segment_tokens[t])));
  nlohmann::json line{{"step", r.step},
                      {"loss", r.loss},
                      {"segment_loss", by_segment},
                      {"lr", r.lr},
                      {"grad_norm", r.grad_norm},
                      {"tokens_per_s", static_cast<double>(r.input_tokens) / r.seconds},
                      {"peak_memory_gb", peak_gb},
                      {"skipped", skipped},
                      {"elapsed_s", elapsed}};
  if (!loss_by_kind.empty()) {
    line["loss_by_kind"] = nlohmann::json::object();
    for (const auto& [kind, loss] : loss_by_kind) line["loss_by_kind"][kind] = loss;
  }
  write(line.dump());
}

void MetricsLog::validation(int64_t step, const Perplexity& p) {
  auto side = [](const SegmentScores& s) {
    return nlohmann::json{{"ppl", s.perplexity()},
                          {"ppl_after_first_segment", s.perplexity(1)},
                          {"ppl_by_segment", s.perplexity_by_segment()}};
  };
  write(nlohmann::json{{"step", step}, {"validation", {{"memory", side(p.memory)}, {"truncated", side(p.truncated)}}}}
            .dump());
}

}  // namespace uio::trainer
