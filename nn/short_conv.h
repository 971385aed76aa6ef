// ShortConvolution: causal depthwise conv over time (fla/modules/conv/short_conv.py;
// spec/recurrences.md 0.4).
//
//   y_t[c] = act( sum_{j=0}^{W-1} w[c, j] * x_{t-(W-1)+j}[c] ),   act = silu or identity
//
// w[c, W-1] multiplies the current token (PyTorch cross-correlation). The weight is stored as
// fla's nn.Conv1d weight [D, 1, W] (so checkpoints exchange) and viewed as [D, W] for the op.
// No bias. Init N(0, std^2). Computes in x's dtype (the weight is cast to it where used).
//
// Decoding cache: [B, D, W-1], the last W-1 inputs, oldest first (fla keeps W slots including
// the current one; the newest W-1 are all the next step reads).
#pragma once

#include "nn/module.h"

namespace hla::nn {

class ShortConvolution : public Module {
 public:
  ShortConvolution(int64_t dim, int64_t width, bool silu, Generator& gen, double std = 0.02);
  // x [B,T,D] -> [B,T,D]. cache [B,D,W-1]: the inputs before t = 0 (undefined = zeros). If
  // new_cache is given it receives the cache after the last token of x.
  Var forward(const Var& x, const Var& cache = {}, Var* new_cache = nullptr) const;

  int64_t dim, width;
  bool silu;
  Var weight;  // [D, 1, W]
};

}  // namespace hla::nn
