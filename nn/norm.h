// RMSNorm and gated RMSNorm over the last dimension (spec/recurrences.md 0.2, 0.3).
//
//   RMSNorm:       y = x / sqrt(mean(x^2) + eps) * w
//   GatedRMSNorm:  y = RMSNorm(x) * w * silu(g)          (fla FusedRMSNormGated, swish)
//
// x, g [..., D]; w [D] initialised to 1, no bias. Applied "per head" by passing [B,T,H,D]: the
// statistics run over the head's D channels and all heads share w. Computes in x's dtype (w is
// cast to it; the kernels accumulate the statistics in f32 for bf16 x).
#pragma once

#include "nn/module.h"

namespace hla::nn {

class RMSNorm : public Module {
 public:
  RMSNorm(int64_t dim, double eps);
  Var forward(const Var& x) const;  // [..., D] -> [..., D]

  double eps;
  Var weight;  // [D]
};

class GatedRMSNorm : public Module {
 public:
  GatedRMSNorm(int64_t dim, double eps);
  Var forward(const Var& x, const Var& g) const;  // x, g [..., D] -> [..., D]

  double eps;
  Var weight;  // [D]
};

}  // namespace hla::nn
