// RMSNorm and gated RMSNorm over the last dimension D on CUDA (spec/recurrences.md 0.2, 0.3).
//   rstd = 1 / sqrt(mean(x^2) + eps),  xhat = x rstd,  y = xhat w  [* silu(g) when gated]
// Backward, d = dy [* silu(g)], u = d w:
//   dx = rstd (u - xhat mean(u xhat)),  dg = dy xhat w silu'(g),  dw = sum_rows(d xhat)
// Layout: x, g, dy [..., D] made contiguous as [rows, D]; w [D]; rstd [rows]. One block per row.
// dw: per-row partials [rows, D] summed by the column reduction of reduce.cu (deterministic).
// All outputs are fresh (overwritten). dtypes: f32, f64.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

// ---- kernels

template <class T>
__global__ void rms_norm_fwd_kernel(T* __restrict__ y,         // [rows, D]
                                    T* __restrict__ rstd,      // [rows]
                                    const T* __restrict__ x,   // [rows, D]
                                    const T* __restrict__ g,   // [rows, D] or null (ungated)
                                    const T* __restrict__ w,   // [D]
                                    int64_t D, double eps) {
  __shared__ double shm_d[32];
  const int64_t off = blockIdx.x * D;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const double v = x[off + i];
    ss += v * v;
  }
  ss = block_reduce(ss, SumOp{}, 0.0, shm_d);
  const T rs = static_cast<T>(1.0 / sqrt(ss / static_cast<double>(D) + eps));
  if (threadIdx.x == 0) rstd[blockIdx.x] = rs;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    T v = x[off + i] * rs * w[i];
    if (g) v *= g[off + i] * sigmoid_dev(g[off + i]);
    y[off + i] = v;
  }
}

template <class T>
__global__ void rms_norm_bwd_kernel(T* __restrict__ dx,          // [rows, D] overwritten
                                    T* __restrict__ dg,          // [rows, D] overwritten, or null
                                    T* __restrict__ dw_rows,     // [rows, D] overwritten
                                    const T* __restrict__ x,     // [rows, D]
                                    const T* __restrict__ g,     // [rows, D] or null
                                    const T* __restrict__ w,     // [D]
                                    const T* __restrict__ rstd,  // [rows]
                                    const T* __restrict__ dy,    // [rows, D]
                                    int64_t D) {
  __shared__ double shm_d[32];
  const int64_t off = blockIdx.x * D;
  const T rs = rstd[blockIdx.x];
  double dot = 0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const T xhat = x[off + i] * rs;
    T d = dy[off + i];
    if (g) {
      const T gi = g[off + i], s = sigmoid_dev(gi);
      dg[off + i] = d * xhat * w[i] * s * (T(1) + gi * (T(1) - s));
      d *= gi * s;
    }
    dw_rows[off + i] = d * xhat;
    dot += static_cast<double>(d * w[i]) * xhat;
  }
  dot = block_reduce(dot, SumOp{}, 0.0, shm_d);
  const T mean_dot = static_cast<T>(dot / static_cast<double>(D));
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const T xhat = x[off + i] * rs;
    T d = dy[off + i];
    if (g) d *= g[off + i] * sigmoid_dev(g[off + i]);
    dx[off + i] = rs * (d * w[i] - xhat * mean_dot);
  }
}

// ---- launchers

int64_t check_norm(const Tensor& x, const Tensor& g, const Tensor& w, const char* op) {
  require_cuda(x, op, "x");
  require_cuda(w, op, "weight");
  if (x.dim() < 1) throw Error(op, "x of rank >= 1 ([..., D])", "a scalar");
  check_shape(w, {x.size(-1)}, op, "weight", "[D]");
  check_same_dtype(x, w, op);
  if (g.defined()) {
    require_cuda(g, op, "gate g");
    check_shape(g, x.shape(), op, "gate g");
    check_same_dtype(x, g, op);
  }
  const int64_t D = x.size(-1), rows = D ? x.numel() / D : 0;
  if (rows > INT32_MAX) throw Error(op, "fewer than 2^31 rows", std::to_string(rows));
  return rows;
}

}  // namespace

Tensor rms_norm(const Tensor& x_in, const Tensor& g_in, const Tensor& w_in, double eps,
                Tensor* rstd_out) {
  const char* op = g_in.defined() ? "gated_rms_norm" : "rms_norm";
  const int64_t rows = check_norm(x_in, g_in, w_in, op);
  const Tensor x = contiguous(x_in), w = contiguous(w_in);
  const Tensor g = g_in.defined() ? contiguous(g_in) : Tensor();
  const int64_t D = x.size(-1);
  return visit_cuda_float(x.dtype(), op, [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    Tensor y = cuda_empty(x.shape(), x.dtype());
    Tensor rstd = cuda_empty({rows}, x.dtype());
    if (rows > 0) {
      rms_norm_fwd_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
          y.data<T>(), rstd.data<T>(), x.data<T>(), g.defined() ? g.data<T>() : nullptr,
          w.data<T>(), D, eps);
      CUDA_CHECK(cudaGetLastError());
    }
    if (rstd_out) *rstd_out = rstd;
    return y;
  });
}

void rms_norm_backward(const Tensor& x_in, const Tensor& g_in, const Tensor& w_in,
                       const Tensor& rstd_in, const Tensor& dy_in, Tensor* dx, Tensor* dg,
                       Tensor* dw) {
  const char* op = g_in.defined() ? "gated_rms_norm_backward" : "rms_norm_backward";
  const int64_t rows = check_norm(x_in, g_in, w_in, op);
  require_cuda(dy_in, op, "dy");
  require_cuda(rstd_in, op, "rstd");
  check_shape(dy_in, x_in.shape(), op, "dy");
  check_shape(rstd_in, {rows}, op, "rstd", "[rows]");
  check_same_dtype(x_in, dy_in, op);
  check_same_dtype(x_in, rstd_in, op);
  const Tensor x = contiguous(x_in), w = contiguous(w_in), dy = contiguous(dy_in);
  const Tensor rstd = contiguous(rstd_in);
  const Tensor g = g_in.defined() ? contiguous(g_in) : Tensor();
  const int64_t D = x.size(-1);
  visit_cuda_float(x.dtype(), op, [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    Tensor dxt = cuda_empty(x.shape(), x.dtype());
    Tensor dgt = g.defined() ? cuda_empty(x.shape(), x.dtype()) : Tensor();
    Tensor dw_rows = cuda_empty({rows, D}, x.dtype());
    if (rows > 0) {
      rms_norm_bwd_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
          dxt.data<T>(), g.defined() ? dgt.data<T>() : nullptr, dw_rows.data<T>(), x.data<T>(),
          g.defined() ? g.data<T>() : nullptr, w.data<T>(), rstd.data<T>(), dy.data<T>(), D);
      CUDA_CHECK(cudaGetLastError());
    }
    if (dx) *dx = dxt;
    if (dg) *dg = dgt;
    if (dw) *dw = sum(dw_rows, {0}, false);
  });
}

}  // namespace hla::cuda
