#include "autograd/composites.h"

#include <cmath>

#include "autograd/primitives.h"

namespace hla {

Var silu(const Var& x) { return x * sigmoid(x); }

Var softplus(const Var& x) { return relu(x) + log1p(exp(-abs(x))); }

Var logsigmoid(const Var& x) { return -softplus(-x); }

Var gelu(const Var& x) {
  const double c = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (tanh((x + 0.044715 * pow(x, 3.0)) * c) + 1.0);
}

Var l2_normalize(const Var& x, double eps) {
  return x * rsqrt(sum(x * x, {-1}, true) + eps);
}

}  // namespace hla
