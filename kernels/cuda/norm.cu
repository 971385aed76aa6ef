// RMSNorm and gated RMSNorm over the last dimension D on CUDA (spec/recurrences.md 0.2, 0.3).
//   rstd = 1 / sqrt(mean(x^2) + eps),  xhat = x rstd,  y = xhat w  [* silu(g) when gated]
// Backward, d = dy [* silu(g)], u = d w:
//   dx = rstd (u - xhat mean(u xhat)),  dg = dy xhat w silu'(g),  dw = sum_rows(d xhat)
// and, when asked, y again: every kernel forms it as x (rstd w) [* g sigmoid(g)], so the
// backward's y is the forward's bit for bit (a node recomputing the normed rows for a product's
// gradient then reads x and g once).
// Layout: x, g, dy [..., D] made contiguous as [rows, D]; w [D]; rstd [rows].
// Rows of at most 4 x 32 16-byte packs (D <= 1024 in bf16, 512 in f32, 256 in f64; D a whole
// number of packs) take one warp a row, a lane holding its packs of the row in registers, no
// block barrier (two rows in flight a warp when a lane holds one pack); the backward's warps
// each accumulate their rows' dw terms in registers and write one partial row [warps, D].
// Other rows take one block a row, dw as per-row partials [rows, D]. Either way the partials
// are summed by the column reduction of reduce.cu, in a fixed order for given shapes
// (deterministic).
// All outputs are fresh (overwritten). dtypes: f32, f64, bf16. For bf16 x (g, dy alike) the
// weight w is bf16 or f32 (fp32 master weights read in place); everything is computed in float,
// sums of squares and dot products in double; y, dx, dg are bf16, rstd is f32 (compute_t: the
// backward reads it back unrounded), the dw partials are f32 and dw takes w's dtype.
#include <initializer_list>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

// ---- kernels

// The forward's y entry by entry, which every kernel forms so (the backwards' y too, bit for
// bit): y = x (rstd w), times silu(g) = g sigmoid(g) when gated.
template <class S>
__device__ inline compute_t<S> normed(compute_t<S> x, compute_t<S> rs, compute_t<S> w) {
  return x * (rs * w);
}
template <class S>
__device__ inline compute_t<S> silu_gate(compute_t<S> g) {
  return g * sigmoid_of<S>(g);
}

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
    C v = normed<S>(value_cast<C>(x[off + i]), rs, value_cast<C>(w[i]));
    if (g) v *= silu_gate<S>(value_cast<C>(g[off + i]));
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
                                    S* __restrict__ y,  // [rows, D] overwritten, or null
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
      const C gi = value_cast<C>(g[off + i]), s = sigmoid_of<S>(gi);
      dg[off + i] = value_cast<S>(d * xhat * wi * s * (C(1) + gi * (C(1) - s)));
      d *= gi * s;
    }
    dw_rows[off + i] = d * xhat;
    dot += static_cast<double>(d * wi) * xhat;
  }
  dot = block_reduce(dot, SumOp{}, 0.0, shm_d);
  const C mean_dot = static_cast<C>(dot / static_cast<double>(D));
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const C xi = value_cast<C>(x[off + i]), xhat = xi * rs, wi = value_cast<C>(w[i]);
    C d = value_cast<C>(dy[off + i]), yi = normed<S>(xi, rs, wi);
    if (g) {
      const C silu = silu_gate<S>(value_cast<C>(g[off + i]));
      d *= silu;
      yi *= silu;
    }
    dx[off + i] = value_cast<S>(rs * (d * wi - xhat * mean_dot));
    if (y) y[off + i] = value_cast<S>(yi);
  }
}

// ---- one warp a row: lane l holds packs l, l + 32, ... (NV of them) of its row

constexpr int kRowWarps = 8;  // warps (rows in flight) per block

template <class S>
constexpr int pack_of() {
  return Pack<S>::kSize;
}

// The NV packs of a row's lane (zeros past D) as compute_t<S>.
template <class S, int NV>
__device__ inline void load_row(compute_t<S> (&out)[NV][pack_of<S>()], const S* row, int64_t D,
                                int lane) {
#pragma unroll
  for (int v = 0; v < NV; ++v) {
    const int64_t col = (v * int64_t(32) + lane) * pack_of<S>();
    Pack<S> p{};
    if (col < D) p = *reinterpret_cast<const Pack<S>*>(row + col);
#pragma unroll
    for (int e = 0; e < pack_of<S>(); ++e) out[v][e] = value_cast<compute_t<S>>(p.v[e]);
  }
}
// Writes a lane's packs of one row, entry (v, e) being value(v, e) in compute_t<S>.
template <class S, int NV, class Value>
__device__ inline void store_row_of(S* row, int64_t D, int lane, Value&& value) {
#pragma unroll
  for (int v = 0; v < NV; ++v) {
    const int64_t col = (v * int64_t(32) + lane) * pack_of<S>();
    if (col >= D) continue;
    Pack<S> p;
#pragma unroll
    for (int e = 0; e < pack_of<S>(); ++e) p.v[e] = value_cast<S>(value(v, e));
    *reinterpret_cast<Pack<S>*>(row + col) = p;
  }
}
template <class S, int NV>
__device__ inline void store_row(S* row, const compute_t<S> (&in)[NV][pack_of<S>()], int64_t D,
                                 int lane) {
  store_row_of<S, NV>(row, D, lane, [&](int v, int e) { return in[v][e]; });
}
// The weight at the lane's columns (any W: read element by element, L1-resident across rows).
template <class S, class W, int NV>
__device__ inline void load_weight(compute_t<S> (&out)[NV][pack_of<S>()], const W* w, int64_t D,
                                   int lane) {
#pragma unroll
  for (int v = 0; v < NV; ++v) {
    const int64_t col = (v * int64_t(32) + lane) * pack_of<S>();
#pragma unroll
    for (int e = 0; e < pack_of<S>(); ++e)
      out[v][e] = col < D ? value_cast<compute_t<S>>(w[col + e]) : compute_t<S>(0);
  }
}

// The forward's y (normed, silu_gate when kGated) of a lane's packs of one row.
template <class S, int NV, bool kGated>
__device__ inline void store_y(S* row, const compute_t<S> (&x)[NV][pack_of<S>()],
                               const compute_t<S> (&g)[NV][pack_of<S>()], compute_t<S> rs,
                               const compute_t<S> (&w)[NV][pack_of<S>()], int64_t D, int lane) {
  store_row_of<S, NV>(row, D, lane, [&](int v, int e) {
    compute_t<S> y = normed<S>(x[v][e], rs, w[v][e]);
    if (kGated) y *= silu_gate<S>(g[v][e]);
    return y;
  });
}

// Rows a warp has in flight: two when a lane holds one pack of a row (D <= 256 in bf16), whose
// loads alone are too few to hide their latency; one otherwise (registers).
template <int NV>
constexpr int rows_in_flight() {
  return NV == 1 ? 2 : 1;
}

// Warp w walks rows w, w + stride, ...: R at a time (rows_in_flight), their loads (x and g) all
// issued before the first sum.
template <class S, class W, int NV>
__global__ void __launch_bounds__(32 * kRowWarps)
    rms_norm_rows_fwd_kernel(S* __restrict__ y, compute_t<S>* __restrict__ rstd,
                             const S* __restrict__ x, const S* __restrict__ g,
                             const W* __restrict__ w, int64_t rows, int64_t D, double eps) {
  using C = compute_t<S>;
  constexpr int P = pack_of<S>(), R = rows_in_flight<NV>();
  const int lane = threadIdx.x & 31;
  const int64_t first = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int64_t stride = (int64_t(gridDim.x) * blockDim.x) >> 5;
  C wv[NV][P];
  load_weight<S, W, NV>(wv, w, D, lane);
  for (int64_t row0 = first; row0 < rows; row0 += R * stride) {
    C xv[R][NV][P], gv[R][NV][P];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t row = row0 + r * stride;
      if (row >= rows) continue;
      load_row<S, NV>(xv[r], x + row * D, D, lane);
      if (g) load_row<S, NV>(gv[r], g + row * D, D, lane);
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t row = row0 + r * stride;
      if (row >= rows) continue;
      double ss = 0;
#pragma unroll
      for (int v = 0; v < NV; ++v)
#pragma unroll
        for (int e = 0; e < P; ++e) ss += static_cast<double>(xv[r][v][e]) * xv[r][v][e];
      ss = warp_reduce(ss, SumOp{});
      const C rs = static_cast<C>(1.0 / sqrt(ss / static_cast<double>(D) + eps));
      if (lane == 0) rstd[row] = rs;
#pragma unroll
      for (int v = 0; v < NV; ++v)
#pragma unroll
        for (int e = 0; e < P; ++e) {
          xv[r][v][e] = normed<S>(xv[r][v][e], rs, wv[v][e]);
          if (g) xv[r][v][e] *= silu_gate<S>(gv[r][v][e]);
        }
      store_row<S, NV>(y + row * D, xv[r], D, lane);
    }
  }
}

// dw_part [total warps, D]: warp k's sum of d xhat over its rows, in row order. Rows R at a time
// as in the forward.
template <class S, class W, int NV>
__global__ void __launch_bounds__(32 * kRowWarps)
    rms_norm_rows_bwd_kernel(S* __restrict__ dx, S* __restrict__ dg,
                             compute_t<S>* __restrict__ dw_part, const S* __restrict__ x,
                             const S* __restrict__ g, const W* __restrict__ w,
                             const compute_t<S>* __restrict__ rstd, const S* __restrict__ dy,
                             S* __restrict__ y, int64_t rows, int64_t D) {
  using C = compute_t<S>;
  constexpr int P = pack_of<S>(), R = rows_in_flight<NV>();
  const int lane = threadIdx.x & 31;
  const int64_t first = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int64_t stride = (int64_t(gridDim.x) * blockDim.x) >> 5;
  C wv[NV][P], dw[NV][P];
  load_weight<S, W, NV>(wv, w, D, lane);
#pragma unroll
  for (int v = 0; v < NV; ++v)
#pragma unroll
    for (int e = 0; e < P; ++e) dw[v][e] = C(0);
  for (int64_t row0 = first; row0 < rows; row0 += R * stride) {
    C xh[R][NV][P], d[R][NV][P], gv[R][NV][P];  // xhat, then d = dy [* silu(g)]; g, then dg
    C rs[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t row = row0 + r * stride;
      if (row >= rows) continue;
      rs[r] = rstd[row];
      load_row<S, NV>(xh[r], x + row * D, D, lane);
      load_row<S, NV>(d[r], dy + row * D, D, lane);
      if (g) load_row<S, NV>(gv[r], g + row * D, D, lane);
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t row = row0 + r * stride;
      if (row >= rows) continue;
      if (y && g) store_y<S, NV, true>(y + row * D, xh[r], gv[r], rs[r], wv, D, lane);
      if (y && !g) store_y<S, NV, false>(y + row * D, xh[r], gv[r], rs[r], wv, D, lane);
      if (g) {
#pragma unroll
        for (int v = 0; v < NV; ++v)
#pragma unroll
          for (int e = 0; e < P; ++e) {
            const C gi = gv[r][v][e], s = sigmoid_of<S>(gi);
            gv[r][v][e] = d[r][v][e] * xh[r][v][e] * rs[r] * wv[v][e] * s *
                          (C(1) + gi * (C(1) - s));  // dg
            d[r][v][e] *= gi * s;
          }
        store_row<S, NV>(dg + row * D, gv[r], D, lane);
      }
      double dot = 0;
#pragma unroll
      for (int v = 0; v < NV; ++v)
#pragma unroll
        for (int e = 0; e < P; ++e) {
          xh[r][v][e] *= rs[r];
          dw[v][e] += d[r][v][e] * xh[r][v][e];
          dot += static_cast<double>(d[r][v][e] * wv[v][e]) * xh[r][v][e];
        }
      dot = warp_reduce(dot, SumOp{});
      const C mean_dot = static_cast<C>(dot / static_cast<double>(D));
#pragma unroll
      for (int v = 0; v < NV; ++v)
#pragma unroll
        for (int e = 0; e < P; ++e)
          d[r][v][e] = rs[r] * (d[r][v][e] * wv[v][e] - xh[r][v][e] * mean_dot);
      store_row<S, NV>(dx + row * D, d[r], D, lane);
    }
  }
#pragma unroll
  for (int v = 0; v < NV; ++v) {
    const int64_t col = (v * int64_t(32) + lane) * P;
    if (col < D)
#pragma unroll
      for (int e = 0; e < P; ++e) dw_part[first * D + col + e] = dw[v][e];
  }
}

// Packs per lane of a row (1, 2 or 4), or 0 when the row takes the block-per-row kernels.
template <class S>
int row_packs(int64_t D, std::initializer_list<const Tensor*> ts) {
  constexpr int P = Pack<S>::kSize;
  if (D % P != 0 || !packable(ts)) return 0;
  const int64_t lane_packs = (D / P + 31) / 32;
  return lane_packs <= 1 ? 1 : lane_packs <= 2 ? 2 : lane_packs <= 4 ? 4 : 0;
}

// Calls f(std::integral_constant<int, NV>{}) for NV in {1, 2, 4}.
template <class F>
void with_row_packs(int nv, F&& f) {
  if (nv == 1) return f(std::integral_constant<int, 1>{});
  if (nv == 2) return f(std::integral_constant<int, 2>{});
  return f(std::integral_constant<int, 4>{});
}

// Blocks of the warp-per-row kernel `Kernel`: a warp per row, as many blocks as the
// multiprocessors hold at once (its occupancy, asked once), which then walk the rows. A row's
// loads are all a warp has in flight, so the resident warps are what hides their latency: at
// 2 blocks (16 warps) a multiprocessor, the gated norm of 256-wide rows ran at 4.5x its bytes'
// time.
template <auto Kernel>
unsigned row_blocks(int64_t rows) {
  static const int64_t resident = [] {
    int per_sm = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Kernel, 32 * kRowWarps, 0));
    return int64_t(per_sm > 1 ? per_sm : 1) * multiprocessor_count();
  }();
  const int64_t blocks = (rows + kRowWarps - 1) / kRowWarps;
  return static_cast<unsigned>(blocks < resident ? blocks : resident);
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
    const int nv = row_packs<S>(D, {&x, &y, &g});
    if (rows > 0 && nv > 0) {
      with_row_packs(nv, [&](auto nv_) {
        constexpr auto kernel = rms_norm_rows_fwd_kernel<S, W, decltype(nv_)::value>;
        kernel<<<row_blocks<kernel>(rows), 32 * kRowWarps, 0, stream()>>>(
            y.data<S>(), rstd.data<C>(), x.data<S>(), g.defined() ? g.data<S>() : nullptr,
            w.data<W>(), rows, D, eps);
      });
      CUDA_CHECK(cudaGetLastError());
    } else if (rows > 0) {
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
                       Tensor* dw, Tensor* y) {
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
    Tensor yt = y ? cuda_empty(x.shape(), x.dtype()) : Tensor();
    S* y_data = y ? yt.data<S>() : nullptr;
    const int nv = row_packs<S>(D, {&x, &dy, &dxt, &g, &dgt, &yt});
    if (rows > 0 && nv > 0) {
      Tensor dw_part;  // [blocks * kRowWarps, D]: each warp's sum over its rows
      with_row_packs(nv, [&](auto nv_) {
        constexpr auto kernel = rms_norm_rows_bwd_kernel<S, W, decltype(nv_)::value>;
        const unsigned blocks = row_blocks<kernel>(rows);
        dw_part = cuda_empty({int64_t(blocks) * kRowWarps, D}, dtype_of<C>());
        kernel<<<blocks, 32 * kRowWarps, 0, stream()>>>(
            dxt.data<S>(), g.defined() ? dgt.data<S>() : nullptr, dw_part.data<C>(), x.data<S>(),
            g.defined() ? g.data<S>() : nullptr, w.data<W>(), rstd.data<C>(), dy.data<S>(), y_data,
            rows, D);
      });
      CUDA_CHECK(cudaGetLastError());
      if (dx) *dx = dxt;
      if (dg) *dg = dgt;
      if (y) *y = yt;
      if (dw) *dw = sum(dw_part, {0}, false).to(w.dtype());
      return;
    }
    Tensor dw_rows = cuda_empty({rows, D}, dtype_of<C>());
    if (rows > 0) {
      rms_norm_bwd_kernel<S, W><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
          dxt.data<S>(), g.defined() ? dgt.data<S>() : nullptr, dw_rows.data<C>(), x.data<S>(),
          g.defined() ? g.data<S>() : nullptr, w.data<W>(), rstd.data<C>(), dy.data<S>(), y_data,
          D);
      CUDA_CHECK(cudaGetLastError());
    }
    if (dx) *dx = dxt;
    if (dg) *dg = dgt;
    if (y) *y = yt;
    if (dw) *dw = sum(dw_rows, {0}, false).to(w.dtype());  // a no-op unless w is bf16
  });
}

}  // namespace hla::cuda
