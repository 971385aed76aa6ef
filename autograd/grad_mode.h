// Whether ops record the graph. Off inside a NoGradGuard (evaluation, optimizer updates,
// decoding): results then carry no grad_fn and nothing is saved for backward.
//
//   { NoGradGuard g; auto logits = model.forward(tokens); }   // no graph built
#pragma once

namespace hla {

bool grad_enabled();
void set_grad_enabled(bool on);

class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace hla
