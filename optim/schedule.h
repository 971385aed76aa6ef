// defines: LrSchedule, the learning rate as a function of the optimizer step: linear warmup,
// then cosine decay (or a constant), the schedule of flame/torchtitan and nanoGPT.
//
// With s = 0, 1, ... the step about to be taken, W = warmup_steps, S = total_steps:
//
//   s <  W:       lr(s) = lr_max * (s + 1) / W                         (linear warmup)
//   W <= s <= S:  cosine:   lr(s) = lr_min + (lr_max - lr_min) * (1 + cos(pi * q)) / 2,
//                           q = (s - W) / (S - W)  (q = 1 when S = W)
//                 constant: lr(s) = lr_max
//   s >  S:       lr(s) = lr(S)  (lr_min for cosine)
//
//   LrSchedule sched{.kind = LrSchedule::Kind::Cosine, .lr_max = 3e-4, .lr_min = 3e-5,
//                    .warmup_steps = 100, .total_steps = 1000};
//   opt.step(sched.lr(step));
#pragma once

#include <cstdint>
#include <string>

namespace hla::optim {

struct LrSchedule {
  enum class Kind { Cosine, Constant };
  Kind kind = Kind::Cosine;
  double lr_max = 1e-3;
  double lr_min = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  // The learning rate for step s (0-based).
  double lr(int64_t s) const;
  // Throws hla::Error naming the field unless lr_max > 0, 0 <= lr_min <= lr_max,
  // warmup_steps >= 0 (it may exceed total_steps: the run then ends inside the warmup).
  void validate() const;
};

// "cosine" | "constant"; throws hla::Error listing them otherwise.
LrSchedule::Kind parse_schedule_kind(const std::string& name);
const char* schedule_kind_name(LrSchedule::Kind kind);

}  // namespace hla::optim
