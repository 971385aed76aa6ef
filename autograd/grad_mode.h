// Whether ops record the graph. Off inside a NoGradGuard (evaluation, optimizer updates,
// decoding): results then carry no grad_fn and nothing is saved for backward.
//
//   { NoGradGuard g; auto logits = model.forward(tokens); }   // no graph built
#pragma once

namespace hla {

bool grad_enabled();
void set_grad_enabled(bool on);

// Sets grad mode for a scope and restores the previous one.
class GradModeGuard {
 public:
  explicit GradModeGuard(bool on) : prev_(grad_enabled()) { set_grad_enabled(on); }
  ~GradModeGuard() { set_grad_enabled(prev_); }
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool prev_;
};

class NoGradGuard : public GradModeGuard {
 public:
  NoGradGuard() : GradModeGuard(false) {}
};

// The opposite, for code that must record inside a backward rule (checkpoint.h).
class EnableGradGuard : public GradModeGuard {
 public:
  EnableGradGuard() : GradModeGuard(true) {}
};

}  // namespace hla
