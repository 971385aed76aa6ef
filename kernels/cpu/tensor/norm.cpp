// RMSNorm and gated RMSNorm over the last dimension D, on CPU (spec/recurrences.md 0.2, 0.3).
//   rstd = 1 / sqrt(mean(x^2) + eps),  xhat = x * rstd
//   rms_norm:        y = xhat * w
//   gated_rms_norm:  y = xhat * w * silu(g)
// Backward with u = dy * w (times silu(g) when gated):
//   dx = rstd * (u - xhat * mean(u * xhat)),  dw = sum_rows(dy' * xhat),
//   dg = dy * xhat * w * silu'(g),  silu'(g) = s (1 + g (1 - s)), s = sigmoid(g)
// and, when asked, y again from the same loop (the forward's operations in its order).
#include <cmath>

#include "kernels/cpu/tensor/stable_math.h"
#include "kernels/ops.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif
#include "tensor/dtype_dispatch.h"

namespace hla::ops {

namespace {

void check_norm_args(const Tensor& x, const Tensor& w, const char* op) {
  require_cpu(x, op);
  require_cpu(w, op);
  if (x.dim() < 1) throw Error(op, "x of rank >= 1 ([..., D])", "a scalar");
  check_shape(w, {x.size(-1)}, op, "weight", "[D]");
  check_same_dtype(x, w, op);
}

// Forward of both variants; g undefined means ungated.
Tensor norm_forward(const Tensor& x_in, const Tensor& g_in, const Tensor& w_in, double eps,
                    Tensor* rstd_out, const char* op) {
  check_norm_args(x_in, w_in, op);
  const bool gated = g_in.defined();
  if (gated) check_shape(g_in, x_in.shape(), op, "gate g");
  const Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const Tensor g = gated ? g_in.contiguous() : Tensor();
  const int64_t D = x.size(-1), rows = D ? x.numel() / D : 0;
  return visit_floating(x.dtype(), op, [&]<class T>() {
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    Tensor rstd = Tensor::empty({rows}, x.dtype());
    const T* px = x.data<T>();
    const T* pw = w.data<T>();
    const T* pg = gated ? g.data<T>() : nullptr;
    T* py = y.data<T>();
    T* pr = rstd.data<T>();
#pragma omp parallel for if (rows * D > (1 << 15))
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = px + r * D;
      double ss = 0;
      for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const T rs = static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(D) + eps));
      pr[r] = rs;
      T* yr = py + r * D;
      for (int64_t i = 0; i < D; ++i) yr[i] = xr[i] * rs * pw[i];
      if (gated) {
        const T* gr = pg + r * D;
        for (int64_t i = 0; i < D; ++i) yr[i] *= gr[i] * stable_sigmoid(gr[i]);
      }
    }
    if (rstd_out) *rstd_out = rstd;
    return y;
  });
}

void norm_backward(const Tensor& x_in, const Tensor& g_in, const Tensor& w_in,
                   const Tensor& rstd_in, const Tensor& dy_in, Tensor* dx, Tensor* dg, Tensor* dw,
                   Tensor* y, const char* op) {
  check_norm_args(x_in, w_in, op);
  check_shape(dy_in, x_in.shape(), op, "dy");
  const bool gated = g_in.defined();
  const Tensor x = x_in.contiguous(), w = w_in.contiguous(), dy = dy_in.contiguous();
  const Tensor rstd = rstd_in.contiguous();
  const Tensor g = gated ? g_in.contiguous() : Tensor();
  const int64_t D = x.size(-1), rows = D ? x.numel() / D : 0;
  visit_floating(x.dtype(), op, [&]<class T>() {
    Tensor dxt = Tensor::empty(x.shape(), x.dtype());
    Tensor dgt = gated ? Tensor::empty(x.shape(), x.dtype()) : Tensor();
    Tensor yt = y ? Tensor::empty(x.shape(), x.dtype()) : Tensor();
    // Per-row partial dw, summed afterwards in a fixed order (deterministic with threads).
    Tensor dw_rows = Tensor::empty({rows, D}, x.dtype());
    const T* px = x.data<T>();
    const T* pw = w.data<T>();
    const T* pd = dy.data<T>();
    const T* pr = rstd.data<T>();
    const T* pg = gated ? g.data<T>() : nullptr;
    T* pdx = dxt.data<T>();
    T* pdg = gated ? dgt.data<T>() : nullptr;
    T* pdw = dw_rows.data<T>();
    T* py = y ? yt.data<T>() : nullptr;
#pragma omp parallel for if (rows * D > (1 << 15))
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = px + r * D;
      const T* dr = pd + r * D;
      const T rs = pr[r];
      T* dxr = pdx + r * D;
      T* dwr = pdw + r * D;
      double dot = 0;
      for (int64_t i = 0; i < D; ++i) {
        const T xhat = xr[i] * rs;
        T d = dr[i];
        if (py) py[r * D + i] = xhat * pw[i];
        if (gated) {
          const T gi = pg[r * D + i], s = stable_sigmoid(gi);
          pdg[r * D + i] = d * xhat * pw[i] * s * (T(1) + gi * (T(1) - s));
          d *= gi * s;
          if (py) py[r * D + i] *= gi * s;
        }
        dwr[i] = d * xhat;
        const T u = d * pw[i];
        dxr[i] = u;  // u for now; finished below
        dot += static_cast<double>(u) * xhat;
      }
      const T mean_dot = static_cast<T>(dot / static_cast<double>(D));
      for (int64_t i = 0; i < D; ++i) dxr[i] = rs * (dxr[i] - xr[i] * rs * mean_dot);
    }
    if (dx) *dx = dxt;
    if (dg) *dg = dgt;
    if (dw) *dw = sum(dw_rows, {0}, false);
    if (y) *y = yt;
  });
}

}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor* rstd) {
#ifdef HLA_WITH_CUDA
  if (x.device() == Device::CUDA) return cuda::rms_norm(x, Tensor(), w, eps, rstd);
#endif
  return norm_forward(x, Tensor(), w, eps, rstd, "rms_norm");
}
void rms_norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                       Tensor* dx, Tensor* dw, Tensor* y) {
#ifdef HLA_WITH_CUDA
  if (x.device() == Device::CUDA) {
    cuda::rms_norm_backward(x, Tensor(), w, rstd, dy, dx, nullptr, dw, y);
    return;
  }
#endif
  norm_backward(x, Tensor(), w, rstd, dy, dx, nullptr, dw, y, "rms_norm_backward");
}
Tensor gated_rms_norm(const Tensor& x, const Tensor& g, const Tensor& w, double eps,
                      Tensor* rstd) {
  check_defined(g, "gated_rms_norm", "gate g");
#ifdef HLA_WITH_CUDA
  if (x.device() == Device::CUDA) return cuda::rms_norm(x, g, w, eps, rstd);
#endif
  return norm_forward(x, g, w, eps, rstd, "gated_rms_norm");
}
void gated_rms_norm_backward(const Tensor& x, const Tensor& g, const Tensor& w,
                             const Tensor& rstd, const Tensor& dy, Tensor* dx, Tensor* dg,
                             Tensor* dw, Tensor* y) {
#ifdef HLA_WITH_CUDA
  if (x.device() == Device::CUDA) {
    cuda::rms_norm_backward(x, g, w, rstd, dy, dx, dg, dw, y);
    return;
  }
#endif
  norm_backward(x, g, w, rstd, dy, dx, dg, dw, y, "gated_rms_norm_backward");
}

}  // namespace hla::ops
