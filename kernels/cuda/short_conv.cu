// Causal depthwise short convolution over time on CUDA (spec/recurrences.md 0.4).
//   x [B,T,D], w [D,W], cache [B,D,W-1] (the W-1 inputs before t=0, oldest first) or none (zeros)
//   pre[b,t,c] = sum_j w[c,j] x[b, t-(W-1)+j, c]   (w[c,W-1] multiplies the current token)
//   y = silu(pre) or pre
// Backward (dpre = dy silu'(pre) when silu; pre is recomputed, not saved):
//   dx[b,s,c] = sum_j w[c,j] dpre[b, s+(W-1)-j, c]   (s < 0 lands in dcache)
//   dw[c,j]   = sum_{b,t} dpre[b,t,c] x[b, t-(W-1)+j, c]   (per tile, then the tiles in a fixed order)
// All outputs are fresh (overwritten). dtypes: f32, f64, bf16. For bf16 x (cache, dy alike) the
// weight w is bf16 or f32 (fp32 master weights read in place); sums run in float (the W taps,
// dw within a tile of 64 steps; the tiles are added in double), dpre is kept in float (in shared
// memory only), y / dx / dcache are bf16 and dw takes w's dtype.
// Two kernel families: W <= 4 (fla's conv_size and below) runs as register walks over time
// (short_conv_window.cuh) when D is a multiple of 8 bytes' elements and the tensors are 16-byte
// aligned; otherwise the tiled kernels below (any W, any D).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/short_conv.cuh"
#include "kernels/cuda/short_conv_window.cuh"

namespace hla::cuda {

namespace {

using conv::ConvDims;
using conv::input_at;

// ---- the tiled kernels
// A block takes a tile of kTileT time steps x kTileC channels of one sequence, its input rows
// (and, backward, dy and dpre rows) staged in shared memory in the compute type with the W - 1
// rows before it (the rows of the previous tile, the cache, or zeros), so that every global
// element is read once, and the taps w[c, 0..W-1] of its channels. A thread takes a group of
// kVec<S> consecutive channels of a row (16 bytes of S): with D a multiple of kVec and 16-byte
// aligned tensors (`packed`) each group moves in one load or store, otherwise an element at a
// time. 256 threads; grid: ceil(D / kTileC) x ceil(T / kTileT) x B, flattened.
constexpr int kTileT = 64;
constexpr int kTileC = 64;
template <class S>
constexpr int kVec = Pack<S>::kSize;
template <class S>
constexpr int kGroups = kTileC / kVec<S>;  // channel groups a tile row
constexpr int kBatch = 4;                  // groups a thread loads before it stores them

// Staged rows are stored group-interleaved, channel c = g kVec + e at e kGroups + g, so that the
// lanes of a warp (consecutive groups g, then rows) touch consecutive words for each e; rows are
// kRow apart, kGroups mod 32 words, so that the 32 / kGroups rows a warp spans fall in disjoint
// banks. Every access to a staged row is conflict-free; a group's 16 bytes kept contiguous would
// put its lanes 16 or 32 bytes apart, 2 to 8 to a bank.
template <class S>
constexpr int kRow = kTileC + kGroups<S> % 32;
template <class S>
__device__ constexpr int slot(int r, int c) {
  return r * kRow<S> + (c % kVec<S>) * kGroups<S> + c / kVec<S>;
}

struct Tile {
  int64_t b, t0, c0;
  int rows, cols;  // time steps and channels of the tile (partial at the ends)
};

__device__ inline Tile tile_of(const ConvDims& d) {
  const int64_t nc = (d.D + kTileC - 1) / kTileC, nt = (d.T + kTileT - 1) / kTileT;
  const int64_t i = blockIdx.x;
  Tile tl;
  tl.c0 = (i % nc) * kTileC;
  tl.t0 = (i / nc % nt) * kTileT;
  tl.b = i / (nc * nt);
  tl.rows = static_cast<int>(min(int64_t(kTileT), d.T - tl.t0));
  tl.cols = static_cast<int>(min(int64_t(kTileC), d.D - tl.c0));
  return tl;
}

// dst[r][c] = the source at time t_first + r, channel c0 + c, for r < n (negative times: the
// cache, or zero without one; the cache is channel-major, so those rows go an element at a time).
template <class S, class C>
__device__ void stage_rows(C* dst, int n, int64_t t_first, const S* src, const S* cache,
                           const ConvDims& d, const Tile& tl, bool packed) {
  constexpr int V = kVec<S>, G = kGroups<S>;
  const int items = n * G, nt = blockDim.x;
  for (int i0 = threadIdx.x; i0 < items; i0 += nt * kBatch) {
    Pack<S> v[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {  // every load of the round in flight before a store
      const int i = i0 + nt * u, r = i / G, c = (i - r * G) * V;
      const int64_t t = t_first + r;
      if (packed && i < items && c < tl.cols && t >= 0)
        v[u] = *reinterpret_cast<const Pack<S>*>(src + (tl.b * d.T + t) * d.D + tl.c0 + c);
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = i0 + nt * u, r = i / G, c = (i - r * G) * V;
      const int64_t t = t_first + r;
      if (i >= items) continue;
#pragma unroll
      for (int e = 0; e < V; ++e)
        if (c + e < tl.cols)
          dst[slot<S>(r, c + e)] =
              packed && t >= 0 ? value_cast<C>(v[u].v[e])
                               : value_cast<C>(input_at(src, cache, d, tl.b, t, tl.c0 + c + e));
    }
  }
}

// ws[j][c] = w[c0 + c, j], the taps of the tile's channels (a staged row a tap).
template <class S, class C, class W>
__device__ void stage_taps(C* ws, const W* w, const ConvDims& d, const Tile& tl) {
  for (int i = threadIdx.x; i < tl.cols * d.W; i += blockDim.x) {
    const int c = i / static_cast<int>(d.W), j = i - c * static_cast<int>(d.W);
    ws[slot<S>(j, c)] = value_cast<C>(w[(tl.c0 + c) * d.W + j]);
  }
}

// The pre-activations of channels c .. c + kVec - 1 at the time of staged row r + W - 1:
// pre[e] = sum_j ws[j][c + e] xs[r + j][c + e].
template <class S, class C, int V = kVec<S>>
__device__ inline void taps(C (&pre)[V], const C* xs, const C* ws, int W, int r, int c) {
#pragma unroll
  for (int e = 0; e < V; ++e) pre[e] = C(0);
  for (int j = 0; j < W; ++j)
#pragma unroll
    for (int e = 0; e < V; ++e) pre[e] += ws[slot<S>(j, c + e)] * xs[slot<S>(r + j, c + e)];
}

// out at time t, channels c0 + c .. (a group): one 16-byte store when packed, else the
// channels below cols an element at a time.
template <class S, class C, int V>
__device__ inline void store_group(S* out, const C (&val)[V], const ConvDims& d, const Tile& tl,
                                   int64_t t, int c, bool packed) {
  S* at = out + (tl.b * d.T + t) * d.D + tl.c0 + c;
  if (packed) {
    Pack<S> p;
#pragma unroll
    for (int e = 0; e < V; ++e) p.v[e] = value_cast<S>(val[e]);
    *reinterpret_cast<Pack<S>*>(at) = p;
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e)
      if (c + e < tl.cols) at[e] = value_cast<S>(val[e]);
  }
}

template <class S, class W>
__global__ void short_conv_fwd_kernel(S* __restrict__ y,            // [B,T,D]
                                      const S* __restrict__ x,      // [B,T,D]
                                      const W* __restrict__ w,      // [D,W]
                                      const S* __restrict__ cache,  // [B,D,W-1] or null
                                      ConvDims d, bool silu, bool packed) {
  using C = compute_t<S>;
  constexpr int V = kVec<S>, G = kGroups<S>;
  extern __shared__ __align__(16) unsigned char shm_raw[];
  const Tile tl = tile_of(d);
  const int halo = static_cast<int>(d.W) - 1;
  C* xs = reinterpret_cast<C*>(shm_raw);     // [kTileT + W - 1][kRow]
  C* ws = xs + (kTileT + halo) * kRow<S>;  // [W][kRow]
  stage_rows(xs, tl.rows + halo, tl.t0 - halo, x, cache, d, tl, packed);
  stage_taps<S>(ws, w, d, tl);
  __syncthreads();
  for (int i = threadIdx.x; i < tl.rows * G; i += blockDim.x) {
    const int r = i / G, c = (i - r * G) * V;
    if (c >= tl.cols) continue;
    C pre[V];
    taps<S>(pre, xs, ws, halo + 1, r, c);
    if (silu)
#pragma unroll
      for (int e = 0; e < V; ++e) pre[e] *= sigmoid_dev(pre[e]);
    store_group(y, pre, d, tl, tl.t0 + r, c, packed);
  }
}

// The whole backward of a tile: dpre at times t0 .. t0 + rows + W - 2 (the later rows feed this
// tile's dx), then dx (and dcache in the first tile), and the tile's share of dw, summed over its
// rows in the compute type into part[tile][c][j] (double; the tiles are added in a fixed order by
// short_conv_dw_kernel).
template <class S, class W>
__global__ void short_conv_bwd_kernel(S* __restrict__ dx,               // [B,T,D]
                                      S* __restrict__ dcache,           // [B,D,W-1] or null
                                      double* __restrict__ part,        // [tiles, D, W]
                                      const S* __restrict__ dy,         // [B,T,D]
                                      const S* __restrict__ x,          // [B,T,D]
                                      const W* __restrict__ w,          // [D,W]
                                      const S* __restrict__ cache,      // [B,D,W-1] or null
                                      ConvDims d, bool silu, bool packed) {
  using C = compute_t<S>;
  constexpr int V = kVec<S>, G = kGroups<S>;
  extern __shared__ __align__(16) unsigned char shm_raw[];
  const Tile tl = tile_of(d);
  const int halo = static_cast<int>(d.W) - 1;
  const int nd = static_cast<int>(min(int64_t(kTileT + halo), d.T - tl.t0));  // dpre rows
  C* xs = reinterpret_cast<C*>(shm_raw);       // [kTileT + 2(W-1)][kRow]
  C* dp = xs + (kTileT + 2 * halo) * kRow<S>;  // [kTileT + W - 1][kRow]
  C* ws = dp + (kTileT + halo) * kRow<S>;      // [W][kRow]
  stage_rows(xs, nd + halo, tl.t0 - halo, x, cache, d, tl, packed);
  stage_rows(dp, nd, tl.t0, dy, static_cast<const S*>(nullptr), d, tl, packed);
  stage_taps<S>(ws, w, d, tl);
  __syncthreads();
  if (silu) {  // dpre = dy silu'(pre), pre recomputed
    for (int i = threadIdx.x; i < nd * G; i += blockDim.x) {
      const int r = i / G, c = (i - r * G) * V;
      if (c >= tl.cols) continue;
      C pre[V];
      taps<S>(pre, xs, ws, halo + 1, r, c);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const C s = sigmoid_dev(pre[e]);
        if (c + e < tl.cols) dp[slot<S>(r, c + e)] *= s * (C(1) + pre[e] * (C(1) - s));
      }
    }
    __syncthreads();
  }
  // dx at time t0 + r; in the first tile r from -(W-1), the cache's gradient.
  const int r0 = tl.t0 == 0 && dcache ? -halo : 0;
  for (int i = threadIdx.x; i < (tl.rows - r0) * G; i += blockDim.x) {
    const int rr = i / G, c = (i - rr * G) * V, r = r0 + rr;
    if (c >= tl.cols) continue;
    C acc[V];
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] = C(0);
    for (int j = 0; j <= halo; ++j) {
      const int q = r + halo - j;  // dpre row of tap j
      if (q >= 0 && q < nd)
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] += ws[slot<S>(j, c + e)] * dp[slot<S>(q, c + e)];
    }
    if (r >= 0) {
      store_group(dx, acc, d, tl, tl.t0 + r, c, packed);
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e)
        if (c + e < tl.cols)
          dcache[(tl.b * d.D + tl.c0 + c + e) * halo + halo + r] = value_cast<S>(acc[e]);
    }
  }
  // dw: thread pairs (channel, tap) sum the tile's rows, dpre[t] x[t - (W-1) + j], a warp's lanes
  // on consecutive groups (consecutive staged words).
  double* out = part + blockIdx.x / ((d.D + kTileC - 1) / kTileC) * d.D * d.W;
  for (int p = threadIdx.x; p < kTileC * d.W; p += blockDim.x) {
    const int j = p / kTileC, q = p % kTileC, cl = (q % G) * V + q / G;
    if (cl >= tl.cols) continue;
    C acc = C(0);
    for (int r = 0; r < tl.rows; ++r) acc += dp[slot<S>(r, cl)] * xs[slot<S>(r + j, cl)];
    out[(tl.c0 + cl) * d.W + j] = static_cast<double>(acc);
  }
}

// dw[c,j] = the tiles' partial sums in a fixed order (deterministic): a block takes 32 entries i,
// its warp s the tiles k = s mod kSlices in order, then warp 0 adds the slices in order.
constexpr int kSlices = kThreads / 32;
template <class W>
__global__ void short_conv_dw_kernel(W* __restrict__ dw,  // [D,W] overwritten
                                     const double* __restrict__ part,  // [tiles, D*W]
                                     int64_t tiles, int64_t n) {
  __shared__ double sums[kSlices][32];
  const int lane = threadIdx.x % 32, s = threadIdx.x / 32;
  const int64_t i = blockIdx.x * int64_t(32) + lane;
  double acc = 0;
  if (i < n)
    for (int64_t k = s; k < tiles; k += kSlices) acc += part[k * n + i];
  sums[s][lane] = acc;
  __syncthreads();
  if (s == 0 && i < n) {
    for (int u = 1; u < kSlices; ++u) acc += sums[u][lane];
    dw[i] = value_cast<W>(acc);
  }
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

// Blocks of the tiled kernels, and their shared memory: `rows` staged rows of kTileC entries.
int64_t tile_count(const ConvDims& d) {
  return ((d.D + kTileC - 1) / kTileC) * ((d.T + kTileT - 1) / kTileT) * d.B;
}
template <class S>
size_t tile_bytes(int64_t rows) {
  return static_cast<size_t>(rows) * kRow<S> * sizeof(compute_t<S>);
}

Tensor short_conv(const Tensor& x_in, const Tensor& w_in, bool silu, const Tensor& cache_in) {
  const ConvDims d = check_conv(x_in, w_in, cache_in, "short_conv");
  const Tensor x = contiguous(x_in), w = contiguous(w_in);
  const Tensor cache = cache_in.defined() ? contiguous(cache_in) : Tensor();
  return visit_cuda_storage_param(x.dtype(), w.dtype(), "short_conv", [&](auto stag_,
                                                                          auto wtag_) {
    using S = typename decltype(stag_)::type;
    using W = typename decltype(wtag_)::type;
    Tensor y = cuda_empty(x.shape(), x.dtype());
    if (x.numel() == 0) return y;
    const S* cache_ptr = cache.defined() ? cache.data<S>() : nullptr;
    if (conv::window_fits<S>(d, {&x, &y})) {
      conv::short_conv_fwd_window_kernel<S, W>
          <<<static_cast<unsigned>(conv::window_blocks<S>(d)), kThreads, 0, stream()>>>(
              y.data<S>(), x.data<S>(), w.data<W>(), cache_ptr, d, silu);
      CUDA_CHECK(cudaGetLastError());
      return y;
    }
    const size_t bytes = tile_bytes<S>(kTileT + 2 * d.W - 1);  // xs, ws
    const bool packed = d.D % kVec<S> == 0 && packable({&x, &y});
    allow_shared_memory(short_conv_fwd_kernel<S, W>, bytes, "short_conv");
    short_conv_fwd_kernel<S, W><<<static_cast<unsigned>(tile_count(d)), kThreads, bytes,
                                  stream()>>>(y.data<S>(), x.data<S>(), w.data<W>(), cache_ptr,
                                              d, silu, packed);
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
    Tensor dxt = cuda_empty(x.shape(), x.dtype());
    // dcache is zero when there are no time steps (T = 0), otherwise the first tiles write it.
    Tensor dct = !cache.defined() ? Tensor()
                 : x.numel() == 0 ? cuda_zeros(cache.shape(), x.dtype())
                                  : cuda_empty(cache.shape(), x.dtype());
    Tensor dwt = cuda_empty(w.shape(), w.dtype());
    // Per-tile dw sums, [B * step tiles, D, W] in double (a tile: 128 steps for the window
    // kernels, 64 for the tiled ones); no tiles (T = 0) leaves dw zero.
    const bool window = conv::window_fits<S>(d, {&x, &dy, &dxt});
    const int64_t step_tiles = window ? conv::window_step_blocks(d) : (d.T + kTileT - 1) / kTileT;
    const int64_t tiles = x.numel() == 0 ? 0 : d.B * step_tiles;
    Tensor part = cuda_empty({std::max<int64_t>(tiles, 1), d.D, d.W}, DType::f64);
    S* dcache_ptr = cache.defined() ? dct.data<S>() : nullptr;
    const S* cache_ptr = cache.defined() ? cache.data<S>() : nullptr;
    if (tiles > 0 && window) {
      conv::short_conv_bwd_window_kernel<S, W>
          <<<static_cast<unsigned>(conv::window_blocks<S>(d)), kThreads, 0, stream()>>>(
              dxt.data<S>(), dcache_ptr, part.data<double>(), dy.data<S>(), x.data<S>(),
              w.data<W>(), cache_ptr, d, silu);
      CUDA_CHECK(cudaGetLastError());
    } else if (tiles > 0) {
      const size_t bytes = tile_bytes<S>(2 * kTileT + 3 * (d.W - 1) + d.W);  // xs, dp, ws
      const bool packed = d.D % kVec<S> == 0 && packable({&x, &dy, &dxt});
      allow_shared_memory(short_conv_bwd_kernel<S, W>, bytes, "short_conv_backward");
      short_conv_bwd_kernel<S, W><<<static_cast<unsigned>(tile_count(d)), kThreads, bytes,
                                    stream()>>>(
          dxt.data<S>(), dcache_ptr, part.data<double>(), dy.data<S>(), x.data<S>(), w.data<W>(),
          cache_ptr, d, silu, packed);
      CUDA_CHECK(cudaGetLastError());
    }
    if (d.D * d.W > 0) {
      short_conv_dw_kernel<W><<<static_cast<unsigned>((d.D * d.W + 31) / 32), kThreads, 0,
                                 stream()>>>(
          dwt.data<W>(), part.data<double>(), tiles, d.D * d.W);
      CUDA_CHECK(cudaGetLastError());
    }
    if (dx) *dx = dxt;
    if (dw) *dw = dwt;
    if (dcache) *dcache = dct;
  });
}

}  // namespace hla::cuda
