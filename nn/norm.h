// RMSNorm and gated RMSNorm over the last dimension (spec/recurrences.md 0.2, 0.3).
//
//   RMSNorm:       y = x / sqrt(mean(x^2) + eps) * w
//   GatedRMSNorm:  y = RMSNorm(x) * w * silu(g)          (fla FusedRMSNormGated, swish)
//
// x, g [..., D]; w [D] initialised to 1, no bias. Applied "per head" by passing [B,T,H,D]: the
// statistics run over the head's D channels and all heads share w. Computes in x's dtype (w is
// cast to it; the kernels accumulate the statistics in f32 for bf16 x).
#pragma once

#include <vector>

#include "nn/module.h"

namespace hla::nn {

class Linear;

class RMSNorm : public Module {
 public:
  RMSNorm(int64_t dim, double eps);
  Var forward(const Var& x) const;  // [..., D] -> [..., D]
  // proj(forward(x)) with x merged over the trailing dims proj reads ([B,T,H,D] -> [B,T,H*D]
  // for a per-head norm): the same values and gradients, but the normed x is recomputed in the
  // backward instead of kept (autograd/fused.h rms_norm_linear).
  Var forward_projected(const Var& x, const Linear& proj) const;
  // {proj_i(forward(x))} for projections of x [..., D]: one node over all of them that keeps x
  // and recomputes the normed x once in the backward (autograd/fused.h rms_norm_linears).
  std::vector<Var> forward_projected(const Var& x, const std::vector<const Linear*>& projs) const;

  double eps;
  Var weight;  // [D]
};

class GatedRMSNorm : public Module {
 public:
  GatedRMSNorm(int64_t dim, double eps);
  Var forward(const Var& x, const Var& g) const;  // x, g [..., D] -> [..., D]
  // proj(forward(x, g)) merged as RMSNorm::forward_projected, the normed x recomputed in the
  // backward (gated_rms_norm_linear).
  Var forward_projected(const Var& x, const Var& g, const Linear& proj) const;

  double eps;
  Var weight;  // [D]
};

}  // namespace hla::nn
