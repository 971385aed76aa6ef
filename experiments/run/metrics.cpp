#include "experiments/run/metrics.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

#include "tensor/error.h"

namespace hla::run {

namespace {
std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  char buf[64];
  return std::string(buf, std::to_chars(buf, buf + sizeof buf, x).ptr);
}
// The step of a line written by MetricsRecord::to_json ({"step": N, ...}); -1 if unreadable.
int64_t step_of(const std::string& line) {
  const std::string prefix = "{\"step\": ";
  if (line.rfind(prefix, 0) != 0) return -1;
  int64_t step = -1;
  std::from_chars(line.data() + prefix.size(), line.data() + line.size(), step);
  return step;
}
}  // namespace

std::string MetricsRecord::to_json() const {
  std::string out = "{\"step\": " + std::to_string(step);
  for (const auto& [key, value] : values) out += ", \"" + key + "\": " + json_number(value);
  return out + "}";
}

MetricsLog::MetricsLog(const std::string& path, int64_t keep_up_to_step) : path_(path) {
  std::string kept;
  if (keep_up_to_step >= 0) {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      const int64_t step = step_of(line);
      if (step >= 0 && step <= keep_up_to_step) kept += line + "\n";
    }
  }
  file_ = std::fopen(path.c_str(), "w");
  if (!file_) throw Error("metrics", "a writable file '" + path + "'", "fopen failed");
  std::fputs(kept.c_str(), file_);
  std::fflush(file_);
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::write(const MetricsRecord& record) {
  const std::string line = record.to_json() + "\n";
  if (std::fputs(line.c_str(), file_) < 0 || std::fflush(file_) != 0)
    throw Error("metrics", "to append to '" + path_ + "'", "a write error", "is the disk full?");
}

}  // namespace hla::run
