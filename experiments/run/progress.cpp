#include "experiments/run/progress.h"

#include <unistd.h>

#include <cmath>

namespace hla::run {

std::string format_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600),
                  (long long)(s / 60 % 60), (long long)(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

Progress::Progress(std::FILE* out, int64_t total_steps)
    : out_(out), total_steps_(total_steps), tty_(::isatty(::fileno(out)) == 1) {}

void Progress::update(int64_t step, double loss, double tokens_per_s, double lr, double elapsed_s,
                      int64_t steps_done, bool logged) {
  if (!tty_ && !logged) return;
  const double eta =
      steps_done > 0 ? elapsed_s / double(steps_done) * double(total_steps_ - step) : 0.0;
  const double ktok = tokens_per_s / 1000.0;
  std::fprintf(out_, "%sstep %lld/%lld | loss %.4f | %.1fk tok/s | lr %.2e | %s elapsed, ETA %s%s",
               tty_ ? "\r\033[K" : "", (long long)step, (long long)total_steps_, loss, ktok, lr,
               format_duration(elapsed_s).c_str(), format_duration(eta).c_str(), tty_ ? "" : "\n");
  std::fflush(out_);
  line_open_ = tty_;
}

void Progress::message(const std::string& text) {
  finish();
  std::fprintf(out_, "%s\n", text.c_str());
  std::fflush(out_);
}

void Progress::finish() {
  if (line_open_) std::fputc('\n', out_);
  line_open_ = false;
  std::fflush(out_);
}

}  // namespace hla::run
