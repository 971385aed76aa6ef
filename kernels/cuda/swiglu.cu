// SwiGLU on CUDA: y = silu(a) * b;  da = dy * b * silu'(a),  db = dy * silu(a),
//   silu(a) = a s,  silu'(a) = s (1 + a (1 - s)),  s = sigmoid(a).
// The backward optionally writes y again (swiglu_y: the forward's operations in its order, so
// bit for bit its y) from the a, b it reads anyway: a node that recomputes y for a product's
// gradient then reads a and b once.
// Layout: a, b, dy of one shape (made contiguous); outputs fresh contiguous. dtypes: f32, f64,
// bf16 (computed in float, each output rounded to bf16 once; bf16's sigmoid is common.cuh's
// sigmoid_of). 16-byte aligned operands take 16 bytes a load and store
// (Pack<S>), the scalar kernels the tail past the last whole pack.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

// ---- kernels

// One element, s = sigmoid_of<S>(a): y = silu(a) b as both directions compute it, and the
// gradients (the scalar and pack kernels compute through these, bit for bit alike).
template <class S>
__device__ inline compute_t<S> swiglu_y(compute_t<S> a, compute_t<S> s, compute_t<S> b) {
  return a * s * b;
}
template <class S>
__device__ inline compute_t<S> swiglu_da(compute_t<S> a, compute_t<S> s, compute_t<S> b,
                                         compute_t<S> dy) {
  return dy * b * s * (compute_t<S>(1) + a * (compute_t<S>(1) - s));
}
template <class S>
__device__ inline compute_t<S> swiglu_db(compute_t<S> a, compute_t<S> s, compute_t<S> dy) {
  return dy * a * s;
}

template <class S>
__global__ void swiglu_fwd_kernel(S* __restrict__ y,        // [n]
                                  const S* __restrict__ a,  // [n]
                                  const S* __restrict__ b,  // [n]
                                  int64_t n) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const C ai = value_cast<C>(a[i]);
    y[i] = value_cast<S>(swiglu_y<S>(ai, sigmoid_of<S>(ai), value_cast<C>(b[i])));
  }
}

template <class S>
__global__ void swiglu_bwd_kernel(S* __restrict__ da,       // [n] overwritten
                                  S* __restrict__ db,       // [n] overwritten
                                  const S* __restrict__ a,  // [n]
                                  const S* __restrict__ b,  // [n]
                                  const S* __restrict__ dy,
                                  S* __restrict__ y,  // [n] overwritten, or null
                                  int64_t n) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const C ai = value_cast<C>(a[i]), bi = value_cast<C>(b[i]), dyi = value_cast<C>(dy[i]);
    const C s = sigmoid_of<S>(ai);
    da[i] = value_cast<S>(swiglu_da<S>(ai, s, bi, dyi));
    db[i] = value_cast<S>(swiglu_db<S>(ai, s, dyi));
    if (y) y[i] = value_cast<S>(swiglu_y<S>(ai, s, bi));
  }
}

template <class S>
__global__ void swiglu_fwd_pack_kernel(Pack<S>* __restrict__ y, const Pack<S>* __restrict__ a,
                                       const Pack<S>* __restrict__ b, int64_t n_packs) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n_packs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Pack<S> pa = a[i], pb = b[i];
    Pack<S> py;
#pragma unroll
    for (int k = 0; k < Pack<S>::kSize; ++k) {
      const C ak = value_cast<C>(pa.v[k]);
      py.v[k] = value_cast<S>(swiglu_y<S>(ak, sigmoid_of<S>(ak), value_cast<C>(pb.v[k])));
    }
    y[i] = py;
  }
}

template <class S>
__global__ void swiglu_bwd_pack_kernel(Pack<S>* __restrict__ da, Pack<S>* __restrict__ db,
                                       const Pack<S>* __restrict__ a,
                                       const Pack<S>* __restrict__ b,
                                       const Pack<S>* __restrict__ dy,
                                       Pack<S>* __restrict__ y,  // or null
                                       int64_t n_packs) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n_packs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Pack<S> pa = a[i], pb = b[i], pd = dy[i];
    Pack<S> pda, pdb, py;
#pragma unroll
    for (int k = 0; k < Pack<S>::kSize; ++k) {
      const C ak = value_cast<C>(pa.v[k]), bk = value_cast<C>(pb.v[k]);
      const C dyk = value_cast<C>(pd.v[k]), s = sigmoid_of<S>(ak);
      pda.v[k] = value_cast<S>(swiglu_da<S>(ak, s, bk, dyk));
      pdb.v[k] = value_cast<S>(swiglu_db<S>(ak, s, dyk));
      py.v[k] = value_cast<S>(swiglu_y<S>(ak, s, bk));
    }
    da[i] = pda;
    db[i] = pdb;
    if (y) y[i] = py;
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
    const int64_t n = a.numel(), done = packed_elements<S>(n, {&a, &b, &y});
    if (done > 0) {
      const int64_t n_packs = done / Pack<S>::kSize;
      swiglu_fwd_pack_kernel<S><<<grid_for(n_packs), kThreads, 0, stream()>>>(
          packs<S>(y), packs<S>(a), packs<S>(b), n_packs);
    }
    if (done < n)
      swiglu_fwd_kernel<S><<<grid_for(n - done), kThreads, 0, stream()>>>(
          y.data<S>() + done, a.data<S>() + done, b.data<S>() + done, n - done);
    CUDA_CHECK(cudaGetLastError());
    return y;
  });
}

void swiglu_backward(const Tensor& a_in, const Tensor& b_in, const Tensor& dy_in, Tensor* da,
                     Tensor* db, Tensor* y) {
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
    Tensor yt = y ? cuda_empty(a.shape(), a.dtype()) : Tensor();
    const int64_t n = a.numel(), done = packed_elements<S>(n, {&a, &b, &dy, &dat, &dbt, &yt});
    if (done > 0) {
      const int64_t n_packs = done / Pack<S>::kSize;
      swiglu_bwd_pack_kernel<S><<<grid_for(n_packs), kThreads, 0, stream()>>>(
          packs<S>(dat), packs<S>(dbt), packs<S>(a), packs<S>(b), packs<S>(dy),
          y ? packs<S>(yt) : nullptr, n_packs);
    }
    if (done < n)
      swiglu_bwd_kernel<S><<<grid_for(n - done), kThreads, 0, stream()>>>(
          dat.data<S>() + done, dbt.data<S>() + done, a.data<S>() + done, b.data<S>() + done,
          dy.data<S>() + done, y ? yt.data<S>() + done : nullptr, n - done);
    CUDA_CHECK(cudaGetLastError());
    if (da) *da = dat;
    if (db) *db = dbt;
    if (y) *y = yt;
  });
}

}  // namespace hla::cuda
