// SwiGLU on CUDA: y = silu(a) * b;  da = dy * b * silu'(a),  db = dy * silu(a),
//   silu(a) = a s,  silu'(a) = s (1 + a (1 - s)),  s = sigmoid(a).
// Layout: a, b, dy of one shape (made contiguous); outputs fresh contiguous. dtypes: f32, f64.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

// ---- kernels

template <class T>
__global__ void swiglu_fwd_kernel(T* __restrict__ y,        // [n]
                                  const T* __restrict__ a,  // [n]
                                  const T* __restrict__ b,  // [n]
                                  int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = a[i] * sigmoid_dev(a[i]) * b[i];
}

template <class T>
__global__ void swiglu_bwd_kernel(T* __restrict__ da,       // [n] overwritten
                                  T* __restrict__ db,       // [n] overwritten
                                  const T* __restrict__ a,  // [n]
                                  const T* __restrict__ b,  // [n]
                                  const T* __restrict__ dy, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const T s = sigmoid_dev(a[i]);
    da[i] = dy[i] * b[i] * s * (T(1) + a[i] * (T(1) - s));
    db[i] = dy[i] * a[i] * s;
  }
}

}  // namespace

// ---- launchers

Tensor swiglu(const Tensor& a_in, const Tensor& b_in) {
  require_cuda(a_in, "swiglu", "a");
  require_cuda(b_in, "swiglu", "b");
  check_shape(b_in, a_in.shape(), "swiglu", "b");
  check_same_dtype(a_in, b_in, "swiglu");
  const Tensor a = contiguous(a_in), b = contiguous(b_in);
  return visit_cuda_float(a.dtype(), "swiglu", [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    Tensor y = cuda_empty(a.shape(), a.dtype());
    const int64_t n = a.numel();
    if (n == 0) return y;
    swiglu_fwd_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(y.data<T>(), a.data<T>(),
                                                                  b.data<T>(), n);
    CUDA_CHECK(cudaGetLastError());
    return y;
  });
}

void swiglu_backward(const Tensor& a_in, const Tensor& b_in, const Tensor& dy_in, Tensor* da,
                     Tensor* db) {
  require_cuda(a_in, "swiglu_backward", "a");
  require_cuda(b_in, "swiglu_backward", "b");
  require_cuda(dy_in, "swiglu_backward", "dy");
  check_shape(b_in, a_in.shape(), "swiglu_backward", "b");
  check_shape(dy_in, a_in.shape(), "swiglu_backward", "dy");
  check_same_dtype(a_in, b_in, "swiglu_backward");
  check_same_dtype(a_in, dy_in, "swiglu_backward");
  const Tensor a = contiguous(a_in), b = contiguous(b_in), dy = contiguous(dy_in);
  visit_cuda_float(a.dtype(), "swiglu_backward", [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    Tensor dat = cuda_empty(a.shape(), a.dtype()), dbt = cuda_empty(a.shape(), a.dtype());
    const int64_t n = a.numel();
    if (n > 0) {
      swiglu_bwd_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(
          dat.data<T>(), dbt.data<T>(), a.data<T>(), b.data<T>(), dy.data<T>(), n);
      CUDA_CHECK(cudaGetLastError());
    }
    if (da) *da = dat;
    if (db) *db = dbt;
  });
}

}  // namespace hla::cuda
