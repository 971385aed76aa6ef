// defines: Progress, the live training line. On a terminal it redraws one line in place after
// every step
//   step 120/300 | loss 2.9132 | 41.2k tok/s | lr 2.71e-03 | 0:07 elapsed, ETA 0:10
// and on a pipe or file (not a TTY) it prints the same text as plain lines, at logged steps only.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace hla::run {

class Progress {
 public:
  // out: where to print (stdout); total_steps: the step count of the whole run.
  Progress(std::FILE* out, int64_t total_steps);

  // After step `step` (1-based, of total_steps); elapsed_s and steps_done cover this process
  // only; logged: whether this step is a logged one (the only ones shown when not a TTY).
  void update(int64_t step, double loss, double tokens_per_s, double lr, double elapsed_s,
              int64_t steps_done, bool logged);
  // A line that must stay (evaluation results, messages): ends any in-place line first.
  void message(const std::string& text);
  // Ends the in-place line.
  void finish();

 private:
  std::FILE* out_;
  int64_t total_steps_;
  bool tty_;
  bool line_open_ = false;
};

// "1:05" or "1:02:03"
std::string format_duration(double seconds);

}  // namespace hla::run
