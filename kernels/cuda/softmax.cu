// softmax and log_softmax over the last dimension on CUDA, forward and backward.
//   softmax:      y_i = exp(x_i - m) / sum_j exp(x_j - m),  m = max_j x_j;  dx = y (dy - sum(dy y))
//   log_softmax:  y_i = x_i - m - log sum_j exp(x_j - m);                   dx = dy - exp(y) sum(dy)
// Layout: rows of the last dim, made contiguous [rows, n]; one block per row (sums in double).
// Output: fresh contiguous tensors. dtypes: f32, f64.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

// ---- kernels

template <class T>
__global__ void softmax_fwd_kernel(T* __restrict__ y,        // [rows, n]
                                   const T* __restrict__ x,  // [rows, n]
                                   int64_t n, bool log) {
  __shared__ T shm_t[32];
  __shared__ double shm_d[32];
  const T* xr = x + blockIdx.x * n;
  T* yr = y + blockIdx.x * n;
  T m = xr[0];
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = xr[j] > m ? xr[j] : m;
  m = block_reduce(m, MaxOp{}, xr[0], shm_t);
  double s = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += exp(static_cast<double>(xr[j] - m));
  s = block_reduce(s, SumOp{}, 0.0, shm_d);
  if (log) {
    const T lse = static_cast<T>(::log(s)) + m;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = xr[j] - lse;
  } else {
    const double inv = 1.0 / s;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      yr[j] = static_cast<T>(exp(static_cast<double>(xr[j] - m)) * inv);
  }
}

template <class T>
__global__ void softmax_bwd_kernel(T* __restrict__ dx,        // [rows, n]
                                   const T* __restrict__ y,   // [rows, n] forward output
                                   const T* __restrict__ dy,  // [rows, n]
                                   int64_t n, bool log) {
  __shared__ double shm_d[32];
  const int64_t off = blockIdx.x * n;
  double s = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
    s += log ? static_cast<double>(dy[off + j])
             : static_cast<double>(dy[off + j]) * static_cast<double>(y[off + j]);
  s = block_reduce(s, SumOp{}, 0.0, shm_d);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    if (log)
      dx[off + j] = dy[off + j] - static_cast<T>(exp(static_cast<double>(y[off + j])) * s);
    else
      dx[off + j] = y[off + j] * (dy[off + j] - static_cast<T>(s));
  }
}

// ---- launchers

void check_rows(int64_t rows, const char* op) {
  if (rows > INT32_MAX) throw Error(op, "fewer than 2^31 rows", std::to_string(rows));
}

}  // namespace

Tensor softmax(const Tensor& x_in, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  require_cuda(x_in, op);
  if (x_in.dim() == 0) throw Error(op, "a tensor of rank >= 1", "a scalar");
  const Tensor x = contiguous(x_in);
  const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
  check_rows(rows, op);
  return visit_cuda_float(x.dtype(), op, [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    Tensor y = cuda_empty(x.shape(), x.dtype());
    if (rows == 0) return y;
    softmax_fwd_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
        y.data<T>(), x.data<T>(), n, log);
    CUDA_CHECK(cudaGetLastError());
    return y;
  });
}

Tensor softmax_backward(const Tensor& y_in, const Tensor& dy_in, bool log) {
  const char* op = log ? "log_softmax_backward" : "softmax_backward";
  require_cuda(y_in, op, "y");
  require_cuda(dy_in, op, "dy");
  check_same_dtype(y_in, dy_in, op);
  check_shape(dy_in, y_in.shape(), op, "dy");
  if (y_in.dim() == 0) throw Error(op, "a tensor of rank >= 1", "a scalar");
  const Tensor y = contiguous(y_in), dy = contiguous(dy_in);
  const int64_t n = y.size(-1), rows = n ? y.numel() / n : 0;
  check_rows(rows, op);
  return visit_cuda_float(y.dtype(), op, [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    Tensor dx = cuda_empty(y.shape(), y.dtype());
    if (rows == 0) return dx;
    softmax_bwd_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
        dx.data<T>(), y.data<T>(), dy.data<T>(), n, log);
    CUDA_CHECK(cudaGetLastError());
    return dx;
  });
}

}  // namespace hla::cuda
