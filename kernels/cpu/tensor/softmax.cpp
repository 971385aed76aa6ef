// softmax and log_softmax over the last dimension, forward and backward, on CPU.
//   softmax:      y_i = exp(x_i - m) / sum_j exp(x_j - m),  m = max_j x_j
//                 dx  = y * (dy - sum(dy * y))
//   log_softmax:  y_i = x_i - m - log sum_j exp(x_j - m)
//                 dx  = dy - exp(y) * sum(dy)
#include <algorithm>
#include <cmath>

#include "kernels/cpu/eigen.h"
#include "kernels/ops.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif
#include "tensor/dtype_dispatch.h"

namespace hla::ops {

namespace {

// Calls f(row_in..., row_out, n) for each last-dim row of contiguous tensors.
template <class T, class F>
void for_rows(int64_t rows, int64_t n, F&& f) {
#pragma omp parallel for if (rows * n > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) f(r * n, n);
}

template <class T>
using Row = Eigen::Array<T, Eigen::Dynamic, 1>;

// Eigen's exp is vectorised (the scalar std::exp was most of the time).
template <class T>
void softmax_row(const T* x, T* y, int64_t n, bool log) {
  const Eigen::Map<const Row<T>> xr(x, n);
  Eigen::Map<Row<T>> yr(y, n);
  const T m = xr.maxCoeff();
  yr = (xr - m).exp();
  const T s = yr.sum();
  if (log)
    yr = xr - (m + std::log(s));
  else
    yr *= T(1) / s;
}

Tensor softmax_impl(const Tensor& x_in, bool log, const char* op) {
  require_cpu(x_in, op);
  if (x_in.dim() == 0) throw Error(op, "a tensor of rank >= 1", "a scalar");
  const Tensor x = x_in.contiguous();
  const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
  return visit_floating(x.dtype(), op, [&]<class T>() {
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    const T* px = x.data<T>();
    T* py = y.data<T>();
    if (n > 0) for_rows<T>(rows, n, [&](int64_t off, int64_t len) { softmax_row(px + off, py + off, len, log); });
    return y;
  });
}

Tensor softmax_backward_impl(const Tensor& y_in, const Tensor& dy_in, bool log, const char* op) {
  require_cpu(y_in, op);
  check_shape(dy_in, y_in.shape(), op, "dy");
  const Tensor y = y_in.contiguous(), dy = dy_in.contiguous();
  const int64_t n = y.size(-1), rows = n ? y.numel() / n : 0;
  return visit_floating(y.dtype(), op, [&]<class T>() {
    Tensor dx = Tensor::empty(y.shape(), y.dtype());
    const T* py = y.data<T>();
    const T* pd = dy.data<T>();
    T* px = dx.data<T>();
    if (n > 0) for_rows<T>(rows, n, [&](int64_t off, int64_t len) {
      double s = 0;
      if (log) {
        for (int64_t i = 0; i < len; ++i) s += pd[off + i];
        for (int64_t i = 0; i < len; ++i)
          px[off + i] = pd[off + i] - static_cast<T>(std::exp(static_cast<double>(py[off + i])) * s);
      } else {
        for (int64_t i = 0; i < len; ++i) s += static_cast<double>(pd[off + i]) * py[off + i];
        for (int64_t i = 0; i < len; ++i) px[off + i] = py[off + i] * (pd[off + i] - static_cast<T>(s));
      }
    });
    return dx;
  });
}

}  // namespace

Tensor softmax(const Tensor& x) {
#ifdef HLA_WITH_CUDA
  if (x.device() == Device::CUDA) return cuda::softmax(x, false);
#endif
  return softmax_impl(x, false, "softmax");
}
Tensor log_softmax(const Tensor& x) {
#ifdef HLA_WITH_CUDA
  if (x.device() == Device::CUDA) return cuda::softmax(x, true);
#endif
  return softmax_impl(x, true, "log_softmax");
}
Tensor softmax_backward(const Tensor& y, const Tensor& dy) {
#ifdef HLA_WITH_CUDA
  if (y.device() == Device::CUDA) return cuda::softmax_backward(y, dy, false);
#endif
  return softmax_backward_impl(y, dy, false, "softmax_backward");
}
Tensor log_softmax_backward(const Tensor& y, const Tensor& dy) {
#ifdef HLA_WITH_CUDA
  if (y.device() == Device::CUDA) return cuda::softmax_backward(y, dy, true);
#endif
  return softmax_backward_impl(y, dy, true, "log_softmax_backward");
}

}  // namespace hla::ops
