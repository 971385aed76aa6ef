// defines: AdamW, Adam with decoupled weight decay (Loshchilov & Hutter 2019, "Decoupled Weight
// Decay Regularization", arXiv 1711.05101), with PyTorch's torch.optim.AdamW semantics.
//
// For each parameter p with gradient g, at step t = 1, 2, ... and learning rate lr:
//
// (g is the gradient times step()'s grad_scale, formed in double.)
//
//   p   <- p - lr * wd * p                      (decoupled decay; only if the parameter decays)
//   m   <- beta1 * m + (1 - beta1) * g          (first moment,  "exp_avg")
//   v   <- beta2 * v + (1 - beta2) * g^2        (second moment, "exp_avg_sq")
//   m^  =  m / (1 - beta1^t)                    (bias corrections)
//   v^  =  v / (1 - beta2^t)
//   p   <- p - lr * m^ / (sqrt(v^) + eps)
//
// m and v start at zero and have the parameter's shape and dtype; arithmetic is in double per
// element, stored back in the parameter's dtype (f32, f64 or bf16), each stored value rounded
// once (bf16: from the double straight to the nearest bf16, ties to even: hla::convert, as
// CUDA's __double2bfloat16; not through float). A loop on the CPU, and for CUDA parameters one
// multi-tensor kernel launch per dtype (kernels/cuda/optim_cuda.h) that evaluates the same
// double expressions in the same order. bf16 parameters (train.precision = "pure_bf16") thus
// have bf16 moments, as torch.optim.AdamW(fused=True) keeps them on bf16 parameters.
//
//   AdamW opt(optim_params(model.named_parameters()), {.beta2 = 0.95, .weight_decay = 0.1});
#pragma once

#include "optim/optimizer.h"

namespace hla::optim {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  // PyTorch's default
};

class AdamW final : public Optimizer {
 public:
  // Throws hla::Error unless 0 <= beta < 1, eps > 0 and weight_decay >= 0.
  AdamW(std::vector<OptimParam> params, const AdamWOptions& options = {});

  std::vector<std::pair<std::string, Tensor>> state() const override;
  const AdamWOptions& options() const { return options_; }

 private:
  void update(double lr, double grad_scale) override;

  AdamWOptions options_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;  // m, v: one per parameter
};

}  // namespace hla::optim
