// defines: Sgd, stochastic gradient descent with heavy-ball momentum, with PyTorch's
// torch.optim.SGD semantics (dampening 0).
//
// For each parameter p with gradient g and learning rate lr:
//
//   g   <- g + wd * p                (L2 weight decay, coupled; only if the parameter decays)
//   b   <- mu * b + g                (momentum buffer, "momentum_buffer"; b = g at the first step)
//   d   =  nesterov ? g + mu * b : b
//   p   <- p - lr * d
//
// With mu = 0 this is plain SGD (no buffer is kept); g is the gradient times step()'s grad_scale.
// Arithmetic is in double per element on the CPU; CUDA parameters take the same steps as tensor
// ops in the parameter's dtype.
//
//   Sgd opt(optim_params(model.named_parameters()), {.momentum = 0.9});
#pragma once

#include "optim/optimizer.h"

namespace hla::optim {

struct SgdOptions {
  double momentum = 0.9;
  double weight_decay = 0.0;
  bool nesterov = false;
};

class Sgd final : public Optimizer {
 public:
  // Throws hla::Error unless 0 <= momentum < 1 and weight_decay >= 0.
  Sgd(std::vector<OptimParam> params, const SgdOptions& options = {});

  std::vector<std::pair<std::string, Tensor>> state() const override;
  const SgdOptions& options() const { return options_; }

 private:
  void update(double lr, double grad_scale) override;
  void step_with_tensor_ops(double lr, double grad_scale, bool first_step);

  SgdOptions options_;
  std::vector<Tensor> momentum_buffer_;  // b: one per parameter (none when momentum is 0)
};

}  // namespace hla::optim
