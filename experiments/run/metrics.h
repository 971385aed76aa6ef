// defines: MetricsLog, the run's metrics.jsonl: one JSON object per line, keys in the order
// given, e.g.
//   {"step": 10, "loss": 3.2172, "lr": 0.0015, "grad_norm": 0.83, "tokens_per_s": 41234.5, ...}
//   {"step": 100, ..., "val_loss": 2.91, "val_ppl": 18.4, "val_accuracy": 0.62}
// "step" comes first in every record; NaN and infinities are written as null (JSON has none).
// Lines are flushed as they are written, so the file can be followed while a run trains.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace hla::run {

// One record: "step" and then named numbers.
struct MetricsRecord {
  int64_t step = 0;
  std::vector<std::pair<std::string, double>> values;
  void add(const std::string& key, double value) { values.emplace_back(key, value); }
  std::string to_json() const;
};

class MetricsLog {
 public:
  // Opens `path` for appending. With keep_up_to_step >= 0 (a resumed run), records of later
  // steps, written after the checkpoint the run resumes from, are dropped first, so the file
  // reads as one uninterrupted run. keep_up_to_step < 0 starts an empty file.
  MetricsLog(const std::string& path, int64_t keep_up_to_step);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void write(const MetricsRecord& record);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace hla::run
