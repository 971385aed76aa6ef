// SwiGLU on CUDA: y = silu(a) * b;  da = dy * b * silu'(a),  db = dy * silu(a),
//   silu(a) = a s,  silu'(a) = s (1 + a (1 - s)),  s = sigmoid(a).
// Layout: a, b, dy of one shape (made contiguous); outputs fresh contiguous. dtypes: f32, f64,
// bf16 (computed in float, each output rounded to bf16 once).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

// ---- kernels

template <class S>
__global__ void swiglu_fwd_kernel(S* __restrict__ y,        // [n]
                                  const S* __restrict__ a,  // [n]
                                  const S* __restrict__ b,  // [n]
                                  int64_t n) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const C ai = value_cast<C>(a[i]);
    y[i] = value_cast<S>(ai * sigmoid_dev(ai) * value_cast<C>(b[i]));
  }
}

template <class S>
__global__ void swiglu_bwd_kernel(S* __restrict__ da,       // [n] overwritten
                                  S* __restrict__ db,       // [n] overwritten
                                  const S* __restrict__ a,  // [n]
                                  const S* __restrict__ b,  // [n]
                                  const S* __restrict__ dy, int64_t n) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const C ai = value_cast<C>(a[i]), bi = value_cast<C>(b[i]), dyi = value_cast<C>(dy[i]);
    const C s = sigmoid_dev(ai);
    da[i] = value_cast<S>(dyi * bi * s * (C(1) + ai * (C(1) - s)));
    db[i] = value_cast<S>(dyi * ai * s);
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
  return visit_cuda_storage(a.dtype(), "swiglu", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    Tensor y = cuda_empty(a.shape(), a.dtype());
    const int64_t n = a.numel();
    if (n == 0) return y;
    swiglu_fwd_kernel<S><<<grid_for(n), kThreads, 0, stream()>>>(y.data<S>(), a.data<S>(),
                                                                  b.data<S>(), n);
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
  visit_cuda_storage(a.dtype(), "swiglu_backward", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    Tensor dat = cuda_empty(a.shape(), a.dtype()), dbt = cuda_empty(a.shape(), a.dtype());
    const int64_t n = a.numel();
    if (n > 0) {
      swiglu_bwd_kernel<S><<<grid_for(n), kThreads, 0, stream()>>>(
          dat.data<S>(), dbt.data<S>(), a.data<S>(), b.data<S>(), dy.data<S>(), n);
      CUDA_CHECK(cudaGetLastError());
    }
    if (da) *da = dat;
    if (db) *db = dbt;
  });
}

}  // namespace hla::cuda
