#include "autograd/composites.h"

#include <cmath>

#include "autograd/primitives.h"

namespace hla {

Var gelu(const Var& x) {
  const double c = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (tanh((x + 0.044715 * pow(x, 3.0)) * c) + 1.0);
}

Var l2_normalize(const Var& x, double eps) {
  return x * rsqrt(sum(x * x, {-1}, true) + eps);
}

}  // namespace hla
