// GatedMLP (SwiGLU), the channel mixer of every block (fla/modules/mlp.py; spec 8.2).
//
//   y = down_proj( silu(gate_proj(x)) * up_proj(x) )
//
// x [..., d] -> [..., d]; gate_proj, up_proj [I, d], down_proj [d, I], no biases. The down
// projection runs as swiglu_linear (autograd/fused.h): the [..., I] product is recomputed in the
// backward instead of kept between the passes.
// I = 256 * ceil( int(d * hidden_ratio * 2/3) / 256 ) unless given (d=1024: ratio 4 -> 2816,
// ratio 2 -> 1536).
#pragma once

#include <memory>

#include "nn/linear.h"
#include "nn/norm.h"

namespace hla::nn {

// fla's default intermediate size.
int64_t mlp_intermediate_size(int64_t hidden, double hidden_ratio);

class GatedMLP : public Module {
 public:
  GatedMLP(int64_t hidden, int64_t intermediate, Generator& gen, double std = 0.02);
  Var forward(const Var& x) const;
  // forward(norm.forward(x)) with the normed x recomputed in the backward instead of kept
  // (autograd/fused.h rms_norm_linears): the block's pre-MLP norm.
  Var forward_normed(const Var& x, const RMSNorm& norm) const;

  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;
};

}  // namespace hla::nn
