// Rotary position embedding, non-interleaved "rotate-half" (GPT-NeoX) form, as fla's
// RotaryEmbedding (spec/recurrences.md 0.6). RoFormer: Enhanced Transformer with Rotary Position
// Embedding, https://arxiv.org/abs/2104.09864
//
//   inv_freq_i = base^(-2i/d),  theta_{p,i} = p * inv_freq_i,  i = 0 .. d/2-1
//   x = [x1, x2] (halves of the head dim d)
//   rope(x)_p = [x1 cos(theta_p) - x2 sin(theta_p),  x2 cos(theta_p) + x1 sin(theta_p)]
//
// x [B,T,H,d] (d even) at positions p = offset + t, t = 0..T-1 (offset: tokens already decoded).
// The angles, their cos / sin and the rotation are computed in f32 (as fla computes the angles),
// one fused kernel forward and one backward (autograd/fused.h: rotary). No parameters.
#pragma once

#include "autograd/var.h"

namespace hla::nn {

Var apply_rotary(const Var& x, int64_t offset, double base = 10000.0);

}  // namespace hla::nn
