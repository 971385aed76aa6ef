#include "nn/rotary.h"

#include <cmath>
#include <vector>

#include "autograd/primitives.h"

namespace hla::nn {

Var apply_rotary(const Var& x, int64_t offset, double base) {
  if (x.dim() != 4 || x.size(3) % 2 != 0)
    throw Error("apply_rotary", "x [B,T,H,d] with an even head dim d", to_string(x.shape()));
  const int64_t T = x.size(1), d = x.size(3), half = d / 2;
  std::vector<double> cos_v(T * half), sin_v(T * half);
  for (int64_t i = 0; i < half; ++i) {
    const float inv_freq =
        1.0f / std::pow(static_cast<float>(base), static_cast<float>(2 * i) / static_cast<float>(d));
    for (int64_t t = 0; t < T; ++t) {
      const float theta = static_cast<float>(offset + t) * inv_freq;
      cos_v[t * half + i] = std::cos(theta);
      sin_v[t * half + i] = std::sin(theta);
    }
  }
  // [T, 1, d/2]: broadcast over batch and heads; built on the host, moved to x's device.
  const Var c(Tensor::from_values(cos_v, {T, 1, half}, x.dtype()).to(x.device()));
  const Var s(Tensor::from_values(sin_v, {T, 1, half}, x.dtype()).to(x.device()));
  const Var x1 = slice(x, 3, 0, half), x2 = slice(x, 3, half, d);
  return concat({x1 * c - x2 * s, x2 * c + x1 * s}, 3);
}

}  // namespace hla::nn
