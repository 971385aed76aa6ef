// Causal depthwise short convolution over time on CUDA (spec/recurrences.md 0.4).
//   x [B,T,D], w [D,W], cache [B,D,W-1] (the W-1 inputs before t=0, oldest first) or none (zeros)
//   pre[b,t,c] = sum_j w[c,j] x[b, t-(W-1)+j, c]   (w[c,W-1] multiplies the current token)
//   y = silu(pre) or pre
// Backward (dpre = dy silu'(pre) when silu; pre is recomputed, not saved):
//   dx[b,s,c] = sum_j w[c,j] dpre[b, s+(W-1)-j, c]   (s < 0 lands in dcache)
//   dw[c,j]   = sum_{b,t} dpre[b,t,c] x[b, t-(W-1)+j, c]   (one block per (c,j), fixed order)
// All outputs are fresh (overwritten). dtypes: f32, f64, bf16. For bf16 x (cache, dy alike) the
// weight w is bf16 or f32 (fp32 master weights read in place); sums run in float (the W taps)
// or double (dw), dpre is kept in float, y / dx / dcache are bf16 and dw takes w's dtype.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

struct ConvDims {
  int64_t B, T, D, W;
};

// Input at time t (negative t: from the cache, or zero without one).
template <class S>
__device__ inline S input_at(const S* x, const S* cache, const ConvDims& d, int64_t b, int64_t t,
                             int64_t c) {
  if (t >= 0) return x[(b * d.T + t) * d.D + c];
  if (!cache) return value_cast<S>(0.0f);
  return cache[(b * d.D + c) * (d.W - 1) + (d.W - 1) + t];
}

template <class S, class W>
__device__ inline compute_t<S> conv_pre(const S* x, const W* w, const S* cache, const ConvDims& d,
                                        int64_t b, int64_t t, int64_t c) {
  using C = compute_t<S>;
  C acc = C(0);
  for (int64_t j = 0; j < d.W; ++j)
    acc += value_cast<C>(w[c * d.W + j]) *
           value_cast<C>(input_at(x, cache, d, b, t - (d.W - 1) + j, c));
  return acc;
}

// ---- kernels

template <class S, class W>
__global__ void short_conv_fwd_kernel(S* __restrict__ y,            // [B,T,D]
                                      const S* __restrict__ x,      // [B,T,D]
                                      const W* __restrict__ w,      // [D,W]
                                      const S* __restrict__ cache,  // [B,D,W-1] or null
                                      ConvDims d, bool silu) {
  using C = compute_t<S>;
  const int64_t n = d.B * d.T * d.D;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < n;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = p % d.D, bt = p / d.D, t = bt % d.T, b = bt / d.T;
    const C pre = conv_pre(x, w, cache, d, b, t, c);
    y[p] = value_cast<S>(silu ? pre * sigmoid_dev(pre) : pre);
  }
}

template <class S, class W>
__global__ void short_conv_dpre_kernel(compute_t<S>* __restrict__ dpre,  // [B,T,D] overwritten
                                       const S* __restrict__ dy,         // [B,T,D]
                                       const S* __restrict__ x,          // [B,T,D]
                                       const W* __restrict__ w,          // [D,W]
                                       const S* __restrict__ cache,      // [B,D,W-1] or null
                                       ConvDims d) {
  using C = compute_t<S>;
  const int64_t n = d.B * d.T * d.D;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < n;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = p % d.D, bt = p / d.D, t = bt % d.T, b = bt / d.T;
    const C pre = conv_pre(x, w, cache, d, b, t, c), s = sigmoid_dev(pre);
    dpre[p] = value_cast<C>(dy[p]) * s * (C(1) + pre * (C(1) - s));
  }
}

// One thread per (b, s, c), s in [-(W-1), T): s >= 0 writes dx, s < 0 writes dcache.
template <class S, class W>
__global__ void short_conv_dx_kernel(S* __restrict__ dx,      // [B,T,D] overwritten
                                     S* __restrict__ dcache,  // [B,D,W-1] overwritten, or null
                                     const compute_t<S>* __restrict__ dpre,  // [B,T,D]
                                     const W* __restrict__ w,                // [D,W]
                                     ConvDims d) {
  using C = compute_t<S>;
  const int64_t S_len = d.T + d.W - 1, n = d.B * S_len * d.D;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < n;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = p % d.D, bs = p / d.D, s = bs % S_len - (d.W - 1), b = bs / S_len;
    if (s < 0 && !dcache) continue;
    C acc = C(0);
    for (int64_t j = 0; j < d.W; ++j) {
      const int64_t t = s + (d.W - 1) - j;
      if (t >= 0 && t < d.T) acc += value_cast<C>(w[c * d.W + j]) * dpre[(b * d.T + t) * d.D + c];
    }
    if (s >= 0) dx[(b * d.T + s) * d.D + c] = value_cast<S>(acc);
    else dcache[(b * d.D + c) * (d.W - 1) + (d.W - 1) + s] = value_cast<S>(acc);
  }
}

template <class S, class W>
__global__ void short_conv_dw_kernel(W* __restrict__ dw,                     // [D,W] overwritten
                                     const compute_t<S>* __restrict__ dpre,  // [B,T,D]
                                     const S* __restrict__ x,                // [B,T,D]
                                     const S* __restrict__ cache,            // [B,D,W-1] or null
                                     ConvDims d) {
  __shared__ double shm_d[32];
  const int64_t c = blockIdx.x / d.W, j = blockIdx.x % d.W;
  double acc = 0;
  for (int64_t bt = threadIdx.x; bt < d.B * d.T; bt += blockDim.x) {
    const int64_t b = bt / d.T, t = bt % d.T;
    acc += static_cast<double>(dpre[bt * d.D + c]) *
           value_cast<double>(input_at(x, cache, d, b, t - (d.W - 1) + j, c));
  }
  acc = block_reduce(acc, SumOp{}, 0.0, shm_d);
  if (threadIdx.x == 0) dw[c * d.W + j] = value_cast<W>(acc);
}

// ---- launchers

ConvDims check_conv(const Tensor& x, const Tensor& w, const Tensor& cache, const char* op) {
  require_cuda(x, op, "x");
  require_cuda(w, op, "weight");
  check_rank(x, 3, op, "x", "[B,T,D]");
  check_rank(w, 2, op, "weight", "[D,W]");
  check_param_dtype(x, w, op, "weight");
  const ConvDims d{x.size(0), x.size(1), x.size(2), w.size(1)};
  check_shape(w, {d.D, d.W}, op, "weight", "[D,W]");
  if (d.W < 1) throw Error(op, "a kernel width W >= 1", "W = 0");
  if (cache.defined()) {
    require_cuda(cache, op, "conv cache");
    check_shape(cache, {d.B, d.D, d.W - 1}, op, "conv cache", "[B,D,W-1]");
    check_same_dtype(x, cache, op);
  }
  if (d.D * d.W > INT32_MAX) throw Error(op, "D*W below 2^31", std::to_string(d.D * d.W));
  return d;
}

}  // namespace

Tensor short_conv(const Tensor& x_in, const Tensor& w_in, bool silu, const Tensor& cache_in) {
  const ConvDims d = check_conv(x_in, w_in, cache_in, "short_conv");
  const Tensor x = contiguous(x_in), w = contiguous(w_in);
  const Tensor cache = cache_in.defined() ? contiguous(cache_in) : Tensor();
  return visit_cuda_storage_param(x.dtype(), w.dtype(), "short_conv", [&](auto stag_,
                                                                          auto wtag_) {
    using S = typename decltype(stag_)::type;
    using W = typename decltype(wtag_)::type;
    Tensor y = cuda_empty(x.shape(), x.dtype());
    const int64_t n = x.numel();
    if (n == 0) return y;
    short_conv_fwd_kernel<S, W><<<grid_for(n), kThreads, 0, stream()>>>(
        y.data<S>(), x.data<S>(), w.data<W>(), cache.defined() ? cache.data<S>() : nullptr, d,
        silu);
    CUDA_CHECK(cudaGetLastError());
    return y;
  });
}

void short_conv_backward(const Tensor& x_in, const Tensor& w_in, bool silu,
                         const Tensor& cache_in, const Tensor& dy_in, Tensor* dx, Tensor* dw,
                         Tensor* dcache) {
  const ConvDims d = check_conv(x_in, w_in, cache_in, "short_conv_backward");
  require_cuda(dy_in, "short_conv_backward", "dy");
  check_shape(dy_in, x_in.shape(), "short_conv_backward", "dy");
  check_same_dtype(x_in, dy_in, "short_conv_backward");
  const Tensor x = contiguous(x_in), w = contiguous(w_in), dy = contiguous(dy_in);
  const Tensor cache = cache_in.defined() ? contiguous(cache_in) : Tensor();
  visit_cuda_storage_param(x.dtype(), w.dtype(), "short_conv_backward", [&](auto stag_,
                                                                          auto wtag_) {
    using S = typename decltype(stag_)::type;
    using W = typename decltype(wtag_)::type;
    using C = compute_t<S>;
    const S* pc = cache.defined() ? cache.data<S>() : nullptr;
    // dpre in the compute type: bf16 dy is widened once (a no-op for f32 / f64).
    Tensor dpre = dy.to(dtype_of<C>());
    const int64_t n = x.numel();
    if (silu && n > 0) {
      dpre = cuda_empty(x.shape(), dtype_of<C>());
      short_conv_dpre_kernel<S, W><<<grid_for(n), kThreads, 0, stream()>>>(
          dpre.data<C>(), dy.data<S>(), x.data<S>(), w.data<W>(), pc, d);
      CUDA_CHECK(cudaGetLastError());
    }
    Tensor dxt = cuda_empty(x.shape(), x.dtype());
    Tensor dct = cache.defined() ? cuda_empty(cache.shape(), x.dtype()) : Tensor();
    Tensor dwt = cuda_empty(w.shape(), w.dtype());
    const int64_t n_dx = d.B * (d.T + d.W - 1) * d.D;
    if (n_dx > 0) {
      short_conv_dx_kernel<S, W><<<grid_for(n_dx), kThreads, 0, stream()>>>(
          dxt.data<S>(), cache.defined() ? dct.data<S>() : nullptr, dpre.data<C>(), w.data<W>(),
          d);
      CUDA_CHECK(cudaGetLastError());
    }
    if (d.D * d.W > 0) {
      short_conv_dw_kernel<S, W><<<static_cast<unsigned>(d.D * d.W), kThreads, 0, stream()>>>(
          dwt.data<W>(), dpre.data<C>(), x.data<S>(), pc, d);
      CUDA_CHECK(cudaGetLastError());
    }
    if (dx) *dx = dxt;
    if (dw) *dw = dwt;
    if (dcache) *dcache = dct;
  });
}

}  // namespace hla::cuda
