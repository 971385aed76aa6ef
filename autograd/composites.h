// Composite ops: written with primitives only, so they need no backward code (style.md P5c).
//
//   gelu(x)       = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (tanh approximation)
//   l2_normalize(x) = x / sqrt(sum(x^2, -1) + eps)       (eps inside the sqrt, added to the sum;
//                                                          spec/recurrences.md 0.5)
#pragma once

#include "autograd/var.h"

namespace hla {

Var gelu(const Var& x);
Var l2_normalize(const Var& x, double eps = 1e-6);

}  // namespace hla
