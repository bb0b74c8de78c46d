// trainer/metrics.h — what the training loop reports: one optimiser step's numbers (StepResult), the
// metrics.jsonl records (a line per logged step and per validation), and the formats of the log lines.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "trainer/perplexity.h"

namespace uio::trainer {

// One optimiser step as the loop saw it.
struct StepResult {
  int64_t step = 0;  // 1-based
  double loss = 0;  // mean over the step's documents of each one's mean cross-entropy per counted prediction
  double grad_norm = 0, lr = 0;
  int64_t predictions = 0, input_tokens = 0;
  bool finite = true;  // false: non-finite loss or gradient, the update was skipped
  bool stop = false;  // some rank was asked to stop (SIGINT/SIGTERM) during this step
  bool diverged = false;  // the update left a parameter non-finite; the step was undone (not counted)
  double seconds = 0;  // wall time of the step (synchronised with the device)
  std::vector<double> segment_loss;  // summed per segment position
  std::vector<int64_t> segment_tokens;
  // Per kind of document (a mixed source's kinds(), in order; empty otherwise): the summed mean losses of
  // the step's documents of that kind, and how many there were.
  std::vector<double> kind_loss;
  std::vector<int64_t> kind_documents;
};

// Appends to <out_dir>/metrics.jsonl (created when missing), flushing each line.
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path);
  // `loss_by_kind`: mean loss per kind of document since the last logged step (none: not written).
  void step(const StepResult& r, int64_t skipped, double elapsed_s, double peak_memory_gb,
            const std::vector<std::pair<std::string, double>>& loss_by_kind = {});
  void validation(int64_t step, const Perplexity& p);

 private:
  std::string path_;
  std::ofstream out_;
  void write(const std::string& line);
};

std::string fixed(double value, int digits);  // "12.345"
std::string scientific(double value, int digits);  // "2.576e-03"
std::string duration(double seconds);  // "1h05m", "3m07s", "42s"

}  // namespace uio::trainer
