#include "optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "tensor/error.h"

namespace hla::optim {

double LrSchedule::lr(int64_t s) const {
  if (s < warmup_steps) return lr_max * double(s + 1) / double(warmup_steps);
  if (kind == Kind::Constant) return lr_max;
  const int64_t decay_steps = total_steps - warmup_steps;
  const double q =
      decay_steps > 0 ? std::min(1.0, double(s - warmup_steps) / double(decay_steps)) : 1.0;
  return lr_min + (lr_max - lr_min) * 0.5 * (1.0 + std::cos(std::numbers::pi * q));
}

void LrSchedule::validate() const {
  if (!(lr_max > 0.0)) throw Error("schedule", "lr > 0", std::to_string(lr_max));
  if (!(lr_min >= 0.0 && lr_min <= lr_max))
    throw Error("schedule", "0 <= min_lr <= lr = " + std::to_string(lr_max),
                std::to_string(lr_min));
  if (warmup_steps < 0) throw Error("schedule", "warmup_steps >= 0", std::to_string(warmup_steps));
}

LrSchedule::Kind parse_schedule_kind(const std::string& name) {
  if (name == "cosine") return LrSchedule::Kind::Cosine;
  if (name == "constant") return LrSchedule::Kind::Constant;
  throw Error("schedule", "one of cosine, constant", "'" + name + "'");
}

const char* schedule_kind_name(LrSchedule::Kind kind) {
  return kind == LrSchedule::Kind::Cosine ? "cosine" : "constant";
}

}  // namespace hla::optim
