// Rotary position embedding on CPU (kernels/ops.h): for x [B,T,H,d], half = d / 2, i < half,
//   theta_{t,i} = (offset + t) * base^(-2i/d)           (in float, as fla and HF compute it)
//   y[..., i] = x1 cos - x2 sin,   y[..., half + i] = x2 cos + x1 sin,   x1 = x[..., i], x2 =
//   x[..., half + i]
// The backward rotates by -theta: dx1 = dy1 cos + dy2 sin, dx2 = dy2 cos - dy1 sin.
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif
#include "tensor/dtype_dispatch.h"

namespace hla::ops {

namespace {

void check_rotary_input(const Tensor& x, const char* op) {
  if (x.dim() != 4 || x.size(3) % 2 != 0)
    throw Error(op, "x [B,T,H,d] with an even head dim d", to_string(x.shape()),
                "split the heads first (split_heads)");
}

// y = rotate(x, sign * theta): sign = +1 forward, -1 backward.
Tensor rotate(const Tensor& x_in, int64_t offset, double base, double sign, const char* op) {
  require_cpu(x_in, op);
  check_rotary_input(x_in, op);
  const Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), d = x.size(3), half = d / 2;
  std::vector<float> cos_t(T * half), sin_t(T * half);
  for (int64_t i = 0; i < half; ++i) {
    const float inv_freq = rotary_inverse_frequency(i, d, base);
    for (int64_t t = 0; t < T; ++t) {
      const float theta = static_cast<float>(offset + t) * inv_freq;
      cos_t[t * half + i] = std::cos(theta);
      sin_t[t * half + i] = std::sin(theta);
    }
  }
  return visit_floating(x.dtype(), op, [&]<class T_>() {
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    const T_* px = x.data<T_>();
    T_* py = y.data<T_>();
#pragma omp parallel for if (B * T * H * d > (1 << 15))
    for (int64_t bt = 0; bt < B * T; ++bt) {
      const float* c = cos_t.data() + bt % T * half;
      const float* s = sin_t.data() + bt % T * half;
      for (int64_t h = 0; h < H; ++h) {
        const T_* xr = px + (bt * H + h) * d;
        T_* yr = py + (bt * H + h) * d;
        for (int64_t i = 0; i < half; ++i) {
          const T_ x1 = xr[i], x2 = xr[half + i], ci = c[i], si = T_(sign) * T_(s[i]);
          yr[i] = x1 * ci - x2 * si;
          yr[half + i] = x2 * ci + x1 * si;
        }
      }
    }
    return y;
  });
}

}  // namespace

float rotary_inverse_frequency(int64_t i, int64_t d, double base) {
  return 1.0f /
         std::pow(static_cast<float>(base), static_cast<float>(2 * i) / static_cast<float>(d));
}

#ifdef HLA_WITH_CUDA
namespace {
std::vector<float> inverse_frequencies(const Tensor& x, double base) {
  const int64_t d = x.dim() == 4 ? x.size(3) : 0;
  std::vector<float> f(d / 2);
  for (int64_t i = 0; i < d / 2; ++i) f[i] = rotary_inverse_frequency(i, d, base);
  return f;
}
}  // namespace
#endif

Tensor rotary(const Tensor& x, int64_t offset, double base) {
#ifdef HLA_WITH_CUDA
  if (x.device() == Device::CUDA)
    return cuda::rotary(x, offset, inverse_frequencies(x, base), false);
#endif
  return rotate(x, offset, base, 1.0, "rotary");
}

Tensor rotary_backward(const Tensor& dy, int64_t offset, double base) {
#ifdef HLA_WITH_CUDA
  if (dy.device() == Device::CUDA)
    return cuda::rotary(dy, offset, inverse_frequencies(dy, base), true);
#endif
  return rotate(dy, offset, base, -1.0, "rotary_backward");
}

}  // namespace hla::ops
