// The short convolution for kernel widths W <= kTaps = 4 (fla's conv_size; narrower kernels run
// with leading zero taps) as register walks over time. The equations are short_conv.cu's:
//   pre[t] = sum_{k<4} wt[k] x[t-3+k],  wt[k] = w[c, k-(4-W)] (0 for k < 4-W)
//   dx[s]  = sum_{k<4} wt[k] dpre[s+3-k]      dw[c, k-(4-W)] = sum_t dpre[t] x[t-3+k]
// A thread takes kWin channels (8 bytes of S: 4 bf16, 2 f32, 1 f64) of one sequence and kRun
// consecutive steps. Its taps, its last three inputs and (backward) its last three dpre values
// live in registers. So each element of x and dy is read once from global memory (the three steps
// before a run once more, from L2), and every tap is one register FMA. (The tiled kernels stage
// rows in shared memory: any W, but about ten instructions a tap go to shared addressing.)
// A block is 32 lanes on consecutive channel groups (a warp reads 256 contiguous bytes of a
// row) x kWarps warps on consecutive runs: 32 kWin channels x kBlockSteps steps. Grid:
// ceil(D / (32 kWin)) x ceil(T / kBlockSteps) x B, flattened. 16-byte aligned, contiguous
// tensors with D a multiple of kWin only (window_fits).
#pragma once

#include "kernels/cuda/short_conv.cuh"

namespace hla::cuda::conv {

constexpr int kTaps = 4;
constexpr int kRun = 16;
constexpr int kWarps = kThreads / 32;       // runs a block
constexpr int kBlockSteps = kRun * kWarps;  // steps a block
// Steps a thread loads before it uses them: the backward holds four register windows (taps,
// inputs, dpre, dw), and at 4 it took 153 registers (one block an SM) in bf16; at 2, 127 (two).
constexpr int kAheadFwd = 4, kAheadBwd = 2;
template <class S>
constexpr int kWin = 8 / static_cast<int>(sizeof(S));

template <class S>
struct alignas(8) Group {
  S v[kWin<S>];
};

template <class S>
bool window_fits(const ConvDims& d, std::initializer_list<const Tensor*> ts) {
  return d.W <= kTaps && d.D % kWin<S> == 0 && packable(ts);
}
__host__ __device__ inline int64_t window_step_blocks(const ConvDims& d) {
  return (d.T + kBlockSteps - 1) / kBlockSteps;
}
// Blocks of a launch; the backward's dw partials are one row a (sequence, step block).
template <class S>
int64_t window_blocks(const ConvDims& d) {
  return (d.D / kWin<S> + 31) / 32 * window_step_blocks(d) * d.B;
}

// A thread's run: sequence b, steps t0 .. t0 + rows - 1 (rows 0: an idle thread), channels
// c .. c + kWin - 1; tile: the block's (sequence, step block), c_block its first channel.
struct Walk {
  int64_t b, t0, c, c_block, tile;
  int rows;
};

template <class S>
__device__ inline Walk walk_of(const ConvDims& d) {
  const int64_t groups = d.D / kWin<S>, ncb = (groups + 31) / 32, nsb = window_step_blocks(d);
  const int64_t i = blockIdx.x, cb = i % ncb, sb = i / ncb % nsb;
  const int64_t g = cb * 32 + threadIdx.x % 32;
  Walk wk;
  wk.b = i / (ncb * nsb);
  wk.tile = wk.b * nsb + sb;
  wk.t0 = sb * kBlockSteps + threadIdx.x / 32 * kRun;
  wk.c = g * kWin<S>;
  wk.c_block = cb * 32 * kWin<S>;
  wk.rows = g < groups && wk.t0 < d.T ? static_cast<int>(min(int64_t(kRun), d.T - wk.t0)) : 0;
  return wk;
}

template <class S, class W, class C>
__device__ inline void load_taps(C (&wt)[kTaps][kWin<S>], const W* w, const ConvDims& d,
                                 int64_t c) {
  const int pad = kTaps - static_cast<int>(d.W);
#pragma unroll
  for (int k = 0; k < kTaps; ++k)
#pragma unroll
    for (int e = 0; e < kWin<S>; ++e)
      wt[k][e] = k >= pad ? value_cast<C>(w[(c + e) * d.W + k - pad]) : C(0);
}

// v = src at step t, channels c .. (the three steps before a run): one 8-byte load for
// 0 <= t < T; before t = 0 the cache's entries (zero without one, and before -(W-1)).
template <class S, class C>
__device__ inline void load_step(C (&v)[kWin<S>], const S* src, const S* cache, const ConvDims& d,
                                 int64_t b, int64_t t, int64_t c) {
  if (t >= 0 && t < d.T) {
    const Group<S> p = *reinterpret_cast<const Group<S>*>(src + (b * d.T + t) * d.D + c);
#pragma unroll
    for (int e = 0; e < kWin<S>; ++e) v[e] = value_cast<C>(p.v[e]);
  } else {
#pragma unroll
    for (int e = 0; e < kWin<S>; ++e)
      v[e] = t < 0 && t >= 1 - d.W ? value_cast<C>(input_at(src, cache, d, b, t, c + e)) : C(0);
  }
}

// The group at `row` (inside the sequence) or zeros (past its end), kept in S until used: a run's
// rows from t0 on, loaded kAheadFwd / kAheadBwd at a time.
template <class S>
__device__ inline Group<S> load_group(const S* row, bool inside) {
  return inside ? *reinterpret_cast<const Group<S>*>(row) : Group<S>{};
}
template <class S, class C>
__device__ inline void widen(C (&v)[kWin<S>], const Group<S>& p) {
#pragma unroll
  for (int e = 0; e < kWin<S>; ++e) v[e] = value_cast<C>(p.v[e]);
}

template <class S, class C>
__device__ inline void store_step(S* dst, const C (&v)[kWin<S>], const ConvDims& d, int64_t b,
                                  int64_t t, int64_t c) {
  Group<S> p;
#pragma unroll
  for (int e = 0; e < kWin<S>; ++e) p.v[e] = value_cast<S>(v[e]);
  *reinterpret_cast<Group<S>*>(dst + (b * d.T + t) * d.D + c) = p;
}

// sum_k wt[k] a[k] over the window a = (h[0], h[1], h[2], now), channel e.
template <class S, class C>
__device__ inline C tap_sum(const C (&wt)[kTaps][kWin<S>], const C (&h)[kTaps - 1][kWin<S>],
                            const C (&now)[kWin<S>], int e) {
  C acc = wt[0][e] * h[0][e];
#pragma unroll
  for (int k = 1; k < kTaps - 1; ++k) acc += wt[k][e] * h[k][e];
  return acc + wt[kTaps - 1][e] * now[e];
}

template <class S, class C>
__device__ inline void shift_in(C (&h)[kTaps - 1][kWin<S>], const C (&now)[kWin<S>]) {
#pragma unroll
  for (int e = 0; e < kWin<S>; ++e) {
#pragma unroll
    for (int k = 0; k < kTaps - 2; ++k) h[k][e] = h[k + 1][e];
    h[kTaps - 2][e] = now[e];
  }
}

template <class S, class W>
__global__ void __launch_bounds__(kThreads)
    short_conv_fwd_window_kernel(S* __restrict__ y,            // [B,T,D]
                                 const S* __restrict__ x,      // [B,T,D]
                                 const W* __restrict__ w,      // [D,W]
                                 const S* __restrict__ cache,  // [B,D,W-1] or null
                                 ConvDims d, bool silu) {
  using C = compute_t<S>;
  constexpr int V = kWin<S>;
  const Walk wk = walk_of<S>(d);
  if (wk.rows == 0) return;
  C wt[kTaps][V], h[kTaps - 1][V];  // h[k]: the input 3 - k steps back
  load_taps<S>(wt, w, d, wk.c);
#pragma unroll
  for (int k = 0; k < kTaps - 1; ++k)
    load_step<S>(h[k], x, cache, d, wk.b, wk.t0 - (kTaps - 1) + k, wk.c);
  const S* xrow = x + (wk.b * d.T + wk.t0) * d.D + wk.c;  // step t0
  for (int r0 = 0; r0 < wk.rows; r0 += kAheadFwd) {
    Group<S> xg[kAheadFwd];
#pragma unroll
    for (int u = 0; u < kAheadFwd; ++u)
      xg[u] = load_group<S>(xrow + (r0 + u) * d.D, r0 + u < wk.rows);
#pragma unroll
    for (int u = 0; u < kAheadFwd; ++u) {
      if (r0 + u >= wk.rows) break;
      C now[V], pre[V];
      widen<S>(now, xg[u]);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        pre[e] = tap_sum<S>(wt, h, now, e);
        if (silu) pre[e] *= sigmoid_dev(pre[e]);
      }
      store_step<S>(y, pre, d, wk.b, wk.t0 + r0 + u, wk.c);
      shift_in<S>(h, now);
    }
  }
}

// The backward of a run: dpre at steps t0 .. t0 + rows + 2 (the later three feed the run's dx;
// zero from T on), dx at s = t - 3 once dpre[s .. s+3] are known (in the first run from
// s = -(W-1), the cache's gradient), and the run's share of dw; the block's 8 runs are added in
// order in shared memory into part[tile][c][j] (double; short_conv_dw_kernel adds the tiles).
template <class S, class W>
__global__ void __launch_bounds__(kThreads)
    short_conv_bwd_window_kernel(S* __restrict__ dx,           // [B,T,D]
                                 S* __restrict__ dcache,       // [B,D,W-1] or null
                                 double* __restrict__ part,    // [tiles, D, W]
                                 const S* __restrict__ dy,     // [B,T,D]
                                 const S* __restrict__ x,      // [B,T,D]
                                 const W* __restrict__ w,      // [D,W]
                                 const S* __restrict__ cache,  // [B,D,W-1] or null
                                 ConvDims d, bool silu) {
  using C = compute_t<S>;
  constexpr int V = kWin<S>, kEntries = kTaps * V;
  __shared__ C sums[kWarps][32][kEntries + 1];  // +1: the lanes' rows on distinct banks
  const Walk wk = walk_of<S>(d);
  C dw[kTaps][V];
#pragma unroll
  for (int k = 0; k < kTaps; ++k)
#pragma unroll
    for (int e = 0; e < V; ++e) dw[k][e] = C(0);
  if (wk.rows > 0) {
    C wt[kTaps][V], h[kTaps - 1][V], q[kTaps - 1][V];  // inputs, dpre: 3 - k steps back
    load_taps<S>(wt, w, d, wk.c);
#pragma unroll
    for (int k = 0; k < kTaps - 1; ++k) {
      load_step<S>(h[k], x, cache, d, wk.b, wk.t0 - (kTaps - 1) + k, wk.c);
#pragma unroll
      for (int e = 0; e < V; ++e) q[k][e] = C(0);
    }
    const int steps = wk.rows + kTaps - 1;
    const int64_t s_first = dcache && wk.t0 == 0 ? 1 - d.W : wk.t0;  // first dx (or dcache) step
    const int64_t offset = (wk.b * d.T + wk.t0) * d.D + wk.c;        // step t0
    const int inside = static_cast<int>(min(int64_t(steps), d.T - wk.t0));  // steps before T
    for (int r0 = 0; r0 < steps; r0 += kAheadBwd) {
      Group<S> xg[kAheadBwd], gg[kAheadBwd];
#pragma unroll
      for (int u = 0; u < kAheadBwd; ++u) {
        const int64_t at = offset + (r0 + u) * d.D;
        xg[u] = load_group<S>(x + at, r0 + u < inside);
        gg[u] = load_group<S>(dy + at, r0 + u < inside);
      }
#pragma unroll
      for (int u = 0; u < kAheadBwd; ++u) {
        if (r0 + u >= steps) break;
        C now[V], dp[V];
        widen<S>(now, xg[u]);
        widen<S>(dp, gg[u]);
        if (silu)
#pragma unroll
          for (int e = 0; e < V; ++e) {
            const C pre = tap_sum<S>(wt, h, now, e), sg = sigmoid_dev(pre);
            dp[e] *= sg * (C(1) + pre * (C(1) - sg));
          }
        if (r0 + u < wk.rows)
#pragma unroll
          for (int e = 0; e < V; ++e) {
#pragma unroll
            for (int k = 0; k < kTaps - 1; ++k) dw[k][e] += dp[e] * h[k][e];
            dw[kTaps - 1][e] += dp[e] * now[e];
          }
        const int64_t s = wk.t0 + r0 + u - (kTaps - 1);
        if (s >= s_first) {
          C g[V];
#pragma unroll
          for (int e = 0; e < V; ++e) {
            g[e] = wt[0][e] * dp[e];
#pragma unroll
            for (int k = 1; k < kTaps; ++k) g[e] += wt[k][e] * q[kTaps - 1 - k][e];
          }
          if (s >= 0) {
            store_step<S>(dx, g, d, wk.b, s, wk.c);
          } else {
#pragma unroll
            for (int e = 0; e < V; ++e)
              dcache[(wk.b * d.D + wk.c + e) * (d.W - 1) + (d.W - 1) + s] = value_cast<S>(g[e]);
          }
        }
        shift_in<S>(h, now);
        shift_in<S>(q, dp);
      }
    }
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int k = 0; k < kTaps; ++k)
#pragma unroll
    for (int e = 0; e < V; ++e) sums[warp][lane][k * V + e] = dw[k][e];
  __syncthreads();
  const int pad = kTaps - static_cast<int>(d.W);
  double* out = part + wk.tile * d.D * d.W;
  for (int p = threadIdx.x; p < 32 * kEntries; p += blockDim.x) {
    const int l = p / kEntries, i = p % kEntries, k = i / V;
    const int64_t c = wk.c_block + l * V + i % V;
    if (k < pad || c >= d.D) continue;
    C acc = C(0);
    for (int r = 0; r < kWarps; ++r) acc += sums[r][l][i];
    out[c * d.W + k - pad] = static_cast<double>(acc);
  }
}

}  // namespace hla::cuda::conv
