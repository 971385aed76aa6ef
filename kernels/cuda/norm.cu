// RMSNorm and gated RMSNorm over the last dimension D on CUDA (spec/recurrences.md 0.2, 0.3).
//   rstd = 1 / sqrt(mean(x^2) + eps),  xhat = x rstd,  y = xhat w  [* silu(g) when gated]
// Backward, d = dy [* silu(g)], u = d w:
//   dx = rstd (u - xhat mean(u xhat)),  dg = dy xhat w silu'(g),  dw = sum_rows(d xhat)
// Layout: x, g, dy [..., D] made contiguous as [rows, D]; w [D]; rstd [rows]. One block per row.
// dw: per-row partials [rows, D] summed by the column reduction of reduce.cu (deterministic).
// All outputs are fresh (overwritten). dtypes: f32, f64, bf16. For bf16 x (g, dy alike) the
// weight w is bf16 or f32 (fp32 master weights read in place); everything is computed in float,
// sums of squares and dot products in double; y, dx, dg are bf16, rstd is f32 (compute_t: the
// backward reads it back unrounded), the dw partials are f32 and dw takes w's dtype.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

// ---- kernels

template <class S, class W>
__global__ void rms_norm_fwd_kernel(S* __restrict__ y,                // [rows, D]
                                    compute_t<S>* __restrict__ rstd,  // [rows]
                                    const S* __restrict__ x,          // [rows, D]
                                    const S* __restrict__ g,          // [rows, D] or null (ungated)
                                    const W* __restrict__ w,          // [D]
                                    int64_t D, double eps) {
  using C = compute_t<S>;
  __shared__ double shm_d[32];
  const int64_t off = blockIdx.x * D;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const double v = value_cast<double>(x[off + i]);
    ss += v * v;
  }
  ss = block_reduce(ss, SumOp{}, 0.0, shm_d);
  const C rs = static_cast<C>(1.0 / sqrt(ss / static_cast<double>(D) + eps));
  if (threadIdx.x == 0) rstd[blockIdx.x] = rs;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    C v = value_cast<C>(x[off + i]) * rs * value_cast<C>(w[i]);
    if (g) {
      const C gi = value_cast<C>(g[off + i]);
      v *= gi * sigmoid_dev(gi);
    }
    y[off + i] = value_cast<S>(v);
  }
}

template <class S, class W>
__global__ void rms_norm_bwd_kernel(S* __restrict__ dx,  // [rows, D] overwritten
                                    S* __restrict__ dg,  // [rows, D] overwritten, or null
                                    compute_t<S>* __restrict__ dw_rows,     // [rows, D] overwritten
                                    const S* __restrict__ x,                // [rows, D]
                                    const S* __restrict__ g,                // [rows, D] or null
                                    const W* __restrict__ w,                // [D]
                                    const compute_t<S>* __restrict__ rstd,  // [rows]
                                    const S* __restrict__ dy,               // [rows, D]
                                    int64_t D) {
  using C = compute_t<S>;
  __shared__ double shm_d[32];
  const int64_t off = blockIdx.x * D;
  const C rs = rstd[blockIdx.x];
  double dot = 0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const C xhat = value_cast<C>(x[off + i]) * rs, wi = value_cast<C>(w[i]);
    C d = value_cast<C>(dy[off + i]);
    if (g) {
      const C gi = value_cast<C>(g[off + i]), s = sigmoid_dev(gi);
      dg[off + i] = value_cast<S>(d * xhat * wi * s * (C(1) + gi * (C(1) - s)));
      d *= gi * s;
    }
    dw_rows[off + i] = d * xhat;
    dot += static_cast<double>(d * wi) * xhat;
  }
  dot = block_reduce(dot, SumOp{}, 0.0, shm_d);
  const C mean_dot = static_cast<C>(dot / static_cast<double>(D));
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const C xhat = value_cast<C>(x[off + i]) * rs;
    C d = value_cast<C>(dy[off + i]);
    if (g) {
      const C gi = value_cast<C>(g[off + i]);
      d *= gi * sigmoid_dev(gi);
    }
    dx[off + i] = value_cast<S>(rs * (d * value_cast<C>(w[i]) - xhat * mean_dot));
  }
}

// ---- launchers

int64_t check_norm(const Tensor& x, const Tensor& g, const Tensor& w, const char* op) {
  require_cuda(x, op, "x");
  require_cuda(w, op, "weight");
  if (x.dim() < 1) throw Error(op, "x of rank >= 1 ([..., D])", "a scalar");
  check_shape(w, {x.size(-1)}, op, "weight", "[D]");
  check_param_dtype(x, w, op, "weight");
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
  return visit_cuda_storage_param(x.dtype(), w.dtype(), op, [&](auto stag_, auto wtag_) {
    using S = typename decltype(stag_)::type;
    using W = typename decltype(wtag_)::type;
    using C = compute_t<S>;
    Tensor y = cuda_empty(x.shape(), x.dtype());
    Tensor rstd = cuda_empty({rows}, dtype_of<C>());
    if (rows > 0) {
      rms_norm_fwd_kernel<S, W><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
          y.data<S>(), rstd.data<C>(), x.data<S>(), g.defined() ? g.data<S>() : nullptr,
          w.data<W>(), D, eps);
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
  const Tensor x = contiguous(x_in), w = contiguous(w_in), dy = contiguous(dy_in);
  const Tensor rstd = contiguous(rstd_in);
  const Tensor g = g_in.defined() ? contiguous(g_in) : Tensor();
  const int64_t D = x.size(-1);
  visit_cuda_storage_param(x.dtype(), w.dtype(), op, [&](auto stag_, auto wtag_) {
    using S = typename decltype(stag_)::type;
    using W = typename decltype(wtag_)::type;
    using C = compute_t<S>;
    check_dtype(rstd, dtype_of<C>(), op, "rstd (from the forward)");
    Tensor dxt = cuda_empty(x.shape(), x.dtype());
    Tensor dgt = g.defined() ? cuda_empty(x.shape(), x.dtype()) : Tensor();
    Tensor dw_rows = cuda_empty({rows, D}, dtype_of<C>());
    if (rows > 0) {
      rms_norm_bwd_kernel<S, W><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
          dxt.data<S>(), g.defined() ? dgt.data<S>() : nullptr, dw_rows.data<C>(), x.data<S>(),
          g.defined() ? g.data<S>() : nullptr, w.data<W>(), rstd.data<C>(), dy.data<S>(), D);
      CUDA_CHECK(cudaGetLastError());
    }
    if (dx) *dx = dxt;
    if (dg) *dg = dgt;
    if (dw) *dw = sum(dw_rows, {0}, false).to(w.dtype());  // a no-op unless w is bf16
  });
}

}  // namespace hla::cuda
