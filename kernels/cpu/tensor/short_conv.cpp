// Causal depthwise short convolution over time on CPU (spec/recurrences.md 0.4).
//   x [B,T,D], w [D,W], cache [B,D,W-1] (the W-1 inputs before t=0, oldest first) or none (zeros)
//   pre[b,t,c] = sum_j w[c,j] * x[b, t-(W-1)+j, c]      (w[c,W-1] multiplies the current token)
//   y = silu(pre) or pre
// Backward (dpre = dy * silu'(pre) when silu):
//   dx[b,s,c] = sum_j w[c,j] dpre[b, s+(W-1)-j, c],  dw[c,j] = sum_{b,t} dpre[b,t,c] x[b,t-(W-1)+j,c]
#include <cmath>

#include "kernels/cpu/tensor/stable_math.h"
#include "kernels/ops.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif
#include "tensor/dtype_dispatch.h"

namespace hla::ops {

namespace {

struct ConvDims {
  int64_t B, T, D, W;
};

ConvDims check_conv(const Tensor& x, const Tensor& w, const Tensor& cache, const char* op) {
  require_cpu(x, op);
  require_cpu(w, op);
  check_rank(x, 3, op, "x", "[B,T,D]");
  check_rank(w, 2, op, "weight", "[D,W]");
  check_same_dtype(x, w, op);
  const ConvDims d{x.size(0), x.size(1), x.size(2), w.size(1)};
  check_shape(w, {d.D, d.W}, op, "weight", "[D,W]");
  if (cache.defined()) check_shape(cache, {d.B, d.D, d.W - 1}, op, "conv cache", "[B,D,W-1]");
  return d;
}

// Input at time t (may be negative: read from the cache or zero).
template <class T>
inline T input_at(const T* x, const T* cache, const ConvDims& d, int64_t b, int64_t t, int64_t c) {
  if (t >= 0) return x[(b * d.T + t) * d.D + c];
  if (!cache) return T(0);
  return cache[(b * d.D + c) * (d.W - 1) + (d.W - 1) + t];
}

template <class T>
void conv_pre(const T* x, const T* w, const T* cache, const ConvDims& d, T* pre) {
#pragma omp parallel for collapse(2) if (d.B * d.T * d.D > (1 << 15))
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t t = 0; t < d.T; ++t)
      for (int64_t c = 0; c < d.D; ++c) {
        T acc = 0;
        for (int64_t j = 0; j < d.W; ++j)
          acc += w[c * d.W + j] * input_at(x, cache, d, b, t - (d.W - 1) + j, c);
        pre[(b * d.T + t) * d.D + c] = acc;
      }
}

}  // namespace

Tensor short_conv(const Tensor& x_in, const Tensor& w_in, bool silu, const Tensor& cache_in) {
#ifdef HLA_WITH_CUDA
  if (x_in.device() == Device::CUDA) return cuda::short_conv(x_in, w_in, silu, cache_in);
#endif
  const ConvDims d = check_conv(x_in, w_in, cache_in, "short_conv");
  const Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const Tensor cache = cache_in.defined() ? cache_in.contiguous() : Tensor();
  return visit_floating(x.dtype(), "short_conv", [&]<class T>() {
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    T* py = y.data<T>();
    conv_pre(x.data<T>(), w.data<T>(), cache.defined() ? cache.data<T>() : nullptr, d, py);
    if (silu)
      for (int64_t i = 0, n = y.numel(); i < n; ++i) py[i] *= stable_sigmoid(py[i]);
    return y;
  });
}

void short_conv_backward(const Tensor& x_in, const Tensor& w_in, bool silu,
                         const Tensor& cache_in, const Tensor& dy_in, Tensor* dx, Tensor* dw,
                         Tensor* dcache) {
#ifdef HLA_WITH_CUDA
  if (x_in.device() == Device::CUDA) {
    cuda::short_conv_backward(x_in, w_in, silu, cache_in, dy_in, dx, dw, dcache);
    return;
  }
#endif
  const ConvDims d = check_conv(x_in, w_in, cache_in, "short_conv_backward");
  check_shape(dy_in, x_in.shape(), "short_conv_backward", "dy");
  const Tensor x = x_in.contiguous(), w = w_in.contiguous(), dy = dy_in.contiguous();
  const Tensor cache = cache_in.defined() ? cache_in.contiguous() : Tensor();
  visit_floating(x.dtype(), "short_conv_backward", [&]<class T>() {
    const T* px = x.data<T>();
    const T* pw = w.data<T>();
    const T* pc = cache.defined() ? cache.data<T>() : nullptr;
    // dpre = dy * silu'(pre)
    Tensor dpre_t = dy.clone();
    T* dpre = dpre_t.data<T>();
    if (silu) {
      Tensor pre_t = Tensor::empty(x.shape(), x.dtype());
      T* pre = pre_t.data<T>();
      conv_pre(px, pw, pc, d, pre);
      for (int64_t i = 0, n = x.numel(); i < n; ++i) {
        const T s = stable_sigmoid(pre[i]);
        dpre[i] *= s * (T(1) + pre[i] * (T(1) - s));
      }
    }
    Tensor dxt = Tensor::zeros(x.shape(), x.dtype());
    Tensor dwt = Tensor::zeros(w.shape(), x.dtype());
    Tensor dct = cache.defined() ? Tensor::zeros(cache.shape(), x.dtype()) : Tensor();
    T* pdx = dxt.data<T>();
    T* pdw = dwt.data<T>();
    T* pdc = cache.defined() ? dct.data<T>() : nullptr;
    // Channels are independent: parallel over c keeps every write private to one thread.
#pragma omp parallel for if (d.B * d.T * d.D > (1 << 15))
    for (int64_t c = 0; c < d.D; ++c)
      for (int64_t b = 0; b < d.B; ++b)
        for (int64_t t = 0; t < d.T; ++t) {
          const T g = dpre[(b * d.T + t) * d.D + c];
          for (int64_t j = 0; j < d.W; ++j) {
            const int64_t s = t - (d.W - 1) + j;
            pdw[c * d.W + j] += g * input_at(px, pc, d, b, s, c);
            if (s >= 0) pdx[(b * d.T + s) * d.D + c] += g * pw[c * d.W + j];
            else if (pdc) pdc[(b * d.D + c) * (d.W - 1) + (d.W - 1) + s] += g * pw[c * d.W + j];
          }
        }
    if (dx) *dx = dxt;
    if (dw) *dw = dwt;
    if (dcache) *dcache = dct;
  });
}

}  // namespace hla::ops
