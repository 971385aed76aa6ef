// softmax and log_softmax over the last dimension on CUDA, forward and backward.
//   softmax:      y_i = exp(x_i - m) / sum_j exp(x_j - m),  m = max_j x_j;  dx = y (dy - sum(dy y))
//   log_softmax:  y_i = x_i - m - log sum_j exp(x_j - m);                   dx = dy - exp(y) sum(dy)
// Layout: rows of the last dim, made contiguous [rows, n]; one block per row (sums in double).
// Output: fresh contiguous tensors. dtypes: f32, f64, bf16 (bf16 rows are read as float, the max
// taken in float and the sum of exponentials in double; y and dx are rounded to bf16 once).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

// ---- kernels

template <class S>
__global__ void softmax_fwd_kernel(S* __restrict__ y,        // [rows, n]
                                   const S* __restrict__ x,  // [rows, n]
                                   int64_t n, bool log) {
  using C = compute_t<S>;
  __shared__ C shm_c[32];
  __shared__ double shm_d[32];
  const S* xr = x + blockIdx.x * n;
  S* yr = y + blockIdx.x * n;
  const C x0 = value_cast<C>(xr[0]);
  C m = x0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const C v = value_cast<C>(xr[j]);
    m = v > m ? v : m;
  }
  m = block_reduce(m, MaxOp{}, x0, shm_c);
  double s = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
    s += exp(static_cast<double>(value_cast<C>(xr[j]) - m));
  s = block_reduce(s, SumOp{}, 0.0, shm_d);
  if (log) {
    const C lse = static_cast<C>(::log(s)) + m;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      yr[j] = value_cast<S>(value_cast<C>(xr[j]) - lse);
  } else {
    const double inv = 1.0 / s;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      yr[j] = value_cast<S>(exp(static_cast<double>(value_cast<C>(xr[j]) - m)) * inv);
  }
}

template <class S>
__global__ void softmax_bwd_kernel(S* __restrict__ dx,        // [rows, n]
                                   const S* __restrict__ y,   // [rows, n] forward output
                                   const S* __restrict__ dy,  // [rows, n]
                                   int64_t n, bool log) {
  using C = compute_t<S>;
  __shared__ double shm_d[32];
  const int64_t off = blockIdx.x * n;
  double s = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
    s += log ? value_cast<double>(dy[off + j])
             : value_cast<double>(dy[off + j]) * value_cast<double>(y[off + j]);
  s = block_reduce(s, SumOp{}, 0.0, shm_d);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const C yj = value_cast<C>(y[off + j]), dyj = value_cast<C>(dy[off + j]);
    if (log)
      dx[off + j] = value_cast<S>(dyj - static_cast<C>(exp(static_cast<double>(yj)) * s));
    else
      dx[off + j] = value_cast<S>(yj * (dyj - static_cast<C>(s)));
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
  return visit_cuda_storage(x.dtype(), op, [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    Tensor y = cuda_empty(x.shape(), x.dtype());
    if (rows == 0) return y;
    softmax_fwd_kernel<S><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
        y.data<S>(), x.data<S>(), n, log);
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
  return visit_cuda_storage(y.dtype(), op, [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    Tensor dx = cuda_empty(y.shape(), y.dtype());
    if (rows == 0) return dx;
    softmax_bwd_kernel<S><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
        dx.data<S>(), y.data<S>(), dy.data<S>(), n, log);
    CUDA_CHECK(cudaGetLastError());
    return dx;
  });
}

}  // namespace hla::cuda
