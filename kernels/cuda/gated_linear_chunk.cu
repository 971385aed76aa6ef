// The chunked tier of the gated linear family on CUDA: GLA / HGRN2 (PerKey), simple GLA
// (ScalarPerHead), RetNet (FixedPerHead), linear attention (None). The same function and the same
// chunk equations as kernels/cpu/recurrence/gated_linear_chunk.cpp (its header derives them), in
// chunks of n = kernels::kChunk = 64 rows (the last chunk of a head may be shorter). Every decay
// factor is the exp of a difference of chunk-local cumulative log decays that is <= 0, so strong
// decay neither overflows nor needs fla's secondary chunking.
//
// Layouts (row-major, contiguous device pointers, kernels/recurrence.h):
//   q, k [B,T,H,K]   v, o [B,T,H,V]   g [B,T,H] or [B,T,H,K]   h0, hT [B,H,K,V]
// Scratch (stream-ordered, released after the launches), NT = ceil(T / 64) chunks per head:
//   G        [B*H, T, Kg] f64   chunk-local cumulative log decay G_r = g_0 + ... + g_r, with
//                               Kg = K for PerKey, else 1 (one value per row). f64 as on the CPU:
//                               a difference of two f32 cumulative sums would carry eps * |G|
//   states   [B*H, NT, K, V]    the state entering each chunk
//   dstates  [B*H, NT, K, V]    C = dL/dS at the end of each chunk (backward only)
//
// Forward, per chunk with incoming state S (s = scale):
//   A_rj  = s sum_i q_ri k_ji e^{G_ri - G_ji}              for j <= r, else 0
//   o_r   = s (q_r * e^{G_r})^T S + sum_{j<=r} A_rj v_j
//   S_out = diag(e^{G_last}) S + sum_r (k_r * e^{G_last - G_r}) v_r^T
// Backward, per chunk with C = dL/dS_out (dhT after the last chunk) and dA_rj = do_r . v_j:
//   dq_r = s e^{G_r} * (S do_r)       + s sum_{j<=r} dA_rj k_j * e^{G_r - G_j}
//   dk_j = e^{G_last - G_j} * (C v_j) + s sum_{r>=j} dA_rj q_r * e^{G_r - G_j}
//   dv_j = C^T (k_j * e^{G_last - G_j}) + sum_{r>=j} A_rj do_r
//   C_in = diag(e^{G_last}) C + s (Q * e^G)^T dO           (dh0 = C_in of the first chunk)
//   dg_r = sum_{u>=r} (q_u * dq_u^off - k_u * dk_u^intra)                    reverse cumsum
//        + e^{G_last} * sum_v (S * C) + sum_{j<r} k_j * dk_j^inter          prefix sum
//   per key (summed over keys for ScalarPerHead), where dq^off is dq_r without its j = r term,
//   dk^intra the r > j part of dk's chunk sum and dk^inter its C part: the CPU tier's split, which
//   keeps f32 accurate under strong decay. Head-wide gates (every key decays alike) take the
//   pair factor e^{G_r - G_j} out of the key sums: one exp per pair instead of one per key.
//
// Kernels, kBlock = 256 threads each. K and V are walked in tiles of 32 keys / columns, so any K
// and V run with the same shared memory; the only size limit is the grid (B*H*NT < 2^31 blocks).
//   cumulative_decay  one thread per (b*h, chunk, column of G): the chunk-local cumsum into G
//   state_pass        one block per (b*h, 32-key tile, 32-column tile) walking the chunks in
//                     order (forward: states, hT) or in reverse (backward: dstates, dh0); exact
//                     per tile since the decay is diagonal; 4 state entries per thread, in
//                     registers. Shared: 2 [64,33] tiles + 32 = 16.6 KiB (f32), 33.2 KiB (f64)
//   chunk_output      one block per (b*h, chunk): A [64,64] in shared, then o by 32-column tiles
//                     (each summing S_in over 32-key tiles). Shared: 53.1 KiB (f32), 89.8 KiB (f64)
//   chunk_gradients   one block per (b*h, chunk): dA and A [64,64] in shared, then dq, dk, dg by
//                     32-key tiles (the dg scans one column per thread) and dv by 32-column
//                     tiles. Shared: 89.9 KiB (f32), 163.3 KiB (f64)
// Every block above 48 KiB of dynamic shared memory is opted in with cudaFuncSetAttribute.
// dtypes: f32 and f64. Gradients are overwritten, never accumulated.
#include <cstddef>
#include <string>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gated_linear_geometry.cuh"
#include "kernels/cuda/recurrence_cuda.h"

namespace hla::cuda {

using kernels::GatedLinearArgs;
using kernels::GatedLinearGrad;
using kernels::GatedLinearOut;
using kernels::GateKind;
using kernels::RecDims;

namespace {

constexpr int kN = static_cast<int>(kernels::kChunk);  // rows per chunk
constexpr int kTile = 32;                              // keys or value columns per tile
constexpr int kPad = kTile + 1;  // row stride of the [rows, kTile] shared tiles: no bank conflicts
constexpr int kBlock = 256;      // threads per block of every chunk kernel
// Thread tid owns the entries (row0 + m * (kBlock / cols), tid % cols), row0 = tid / cols, of a
// [rows, cols] block, m < rows * cols / kBlock: A [64,64], a [64,32] tile, a [32,32] state tile.
constexpr int kPairsPerThread = kN * kN / kBlock;
constexpr int kTileRowsPerThread = kN * kTile / kBlock;
constexpr int kStateRowsPerThread = kTile * kTile / kBlock;
static_assert(kBlock % kN == 0 && kBlock % kTile == 0 && kN % kTile == 0,
              "the fixed ownership needs whole rows per pass");

// Entries of the tile starting at `first` of a dimension of size `total` (at most kTile).
__host__ __device__ inline int tile_width(int64_t total, int64_t first) {
  return static_cast<int>(total - first < kTile ? total - first : kTile);
}

struct Chunk {
  int64_t bh, c, t0;
  int n;  // rows: kN, or fewer in the last chunk
};

__device__ inline Chunk chunk_at(const Geometry& g, int64_t bh, int64_t c) {
  const int64_t t0 = c * kN;
  return {bh, c, t0, static_cast<int>(g.T - t0 < kN ? g.T - t0 : kN)};
}
// The chunk of a block of the per-chunk kernels: blockIdx.x = bh * NT + c.
__device__ inline Chunk chunk_of_block(const Geometry& g) {
  const int64_t x = blockIdx.x;
  return chunk_at(g, x / g.NT, x % g.NT);
}

// G of row r of the chunk at key column i (every column alike for head-wide gates).
__device__ inline double G_at(const double* G, const Geometry& g, const Chunk& ch, int r,
                              int64_t i) {
  return G[g.g_row(ch.bh, ch.t0 + r) + (g.Kg == 1 ? 0 : i)];
}

// e^x for an exponent x <= 0 formed in double: rounded to S, evaluated in S (as on the CPU).
template <class S>
__device__ inline S exp_of(double x) {
  return exp(static_cast<S>(x));
}

// tile[r * kPad + c] = value(r, c) for r < rows_valid and c < cols_valid, 0 elsewhere in the
// [rows, kTile] tile. value is only called in range.
template <class T, class F>
__device__ inline void fill_tile(T* tile, int rows, int rows_valid, int cols_valid, F value) {
  for (int e = threadIdx.x; e < rows * kTile; e += kBlock) {
    const int r = e / kTile, c = e % kTile;
    tile[r * kPad + c] = r < rows_valid && c < cols_valid ? static_cast<T>(value(r, c)) : T(0);
  }
}

// ---- kernels

template <class S>
__global__ void cumulative_decay_kernel(const S* __restrict__ gate,  // g as in the args, or null
                                        GateKind kind, Geometry g,
                                        double* __restrict__ G) {  // [B*H, T, Kg]
  const int64_t work = g.B * g.H * g.NT * g.Kg;
  for (int64_t x = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; x < work;
       x += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = x % g.Kg, rest = x / g.Kg;
    const Chunk ch = chunk_at(g, rest / g.NT, rest % g.NT);
    const int64_t h = ch.bh % g.H;
    // RetNet: log gamma_h = log(1 - 2^(-5-h)), kernels::retention_log_gamma
    const double fixed =
        kind == GateKind::FixedPerHead ? log1p(-exp2(-5.0 - static_cast<double>(h))) : 0.0;
    double sum = 0.0;
    for (int r = 0; r < ch.n; ++r) {
      const int64_t t = ch.t0 + r;
      if (kind == GateKind::PerKey)
        sum += static_cast<double>(gate[g.qk(ch.bh, t) + i]);
      else if (kind == GateKind::ScalarPerHead)
        sum += static_cast<double>(gate[g.head_gate(ch.bh, t)]);
      else
        sum += fixed;
      G[g.g_row(ch.bh, t) + i] = sum;
    }
  }
}

// The chunk-to-chunk recurrence of one (b*h, 32-key tile, 32-column tile) of the state:
//   forward:  X <- diag(e^{G_last}) X + sum_r (k_r * e^{G_last - G_r}) cols_r^T   from init = h0
//   reverse:  X <- diag(e^{G_last}) X + s sum_r (q_r * e^{G_r}) cols_r^T          from init = dhT
// with cols = v (forward) or do (reverse), chunks in order or in reverse. per_chunk[c] receives
// X as it enters chunk c's update; the X after the last update goes to final_state (if wanted).
template <class S>
__global__ void __launch_bounds__(kBlock)
    state_pass_kernel(GatedLinearArgs<S> a, Geometry g, const double* __restrict__ G,
                      const S* __restrict__ cols,   // [B,T,H,V]
                      const S* __restrict__ init,   // [B,H,K,V] or null (zeros)
                      S* __restrict__ per_chunk,    // [B*H, NT, K, V]
                      S* __restrict__ final_state,  // [B,H,K,V] or null
                      bool reverse) {
  extern __shared__ __align__(16) unsigned char chunk_smem[];
  S* key_t = reinterpret_cast<S*>(chunk_smem);  // [kN, kPad] scaled k (forward) or q (reverse)
  S* col_t = key_t + kN * kPad;                 // [kN, kPad] v or do
  S* decay_t = col_t + kN * kPad;               // [kTile] e^{G_last}
  const int64_t bh = blockIdx.x, i0 = static_cast<int64_t>(blockIdx.y) * kTile,
                v0 = static_cast<int64_t>(blockIdx.z) * kTile;
  const int kw = tile_width(g.K, i0), vw = tile_width(g.V, v0);
  const int col = threadIdx.x % kTile, row0 = threadIdx.x / kTile;
  constexpr int kStep = kBlock / kTile;
  const S s = static_cast<S>(a.scale);

  S X[kStateRowsPerThread];
#pragma unroll
  for (int m = 0; m < kStateRowsPerThread; ++m) {
    const int i = row0 + kStep * m;
    X[m] = init && i < kw && col < vw ? init[g.state(bh) + (i0 + i) * g.V + v0 + col] : S(0);
  }
  for (int64_t step = 0; step < g.NT; ++step) {
    const Chunk ch = chunk_at(g, bh, reverse ? g.NT - 1 - step : step);
#pragma unroll
    for (int m = 0; m < kStateRowsPerThread; ++m) {
      const int i = row0 + kStep * m;
      if (i < kw && col < vw) per_chunk[g.chunk_state(bh, ch.c) + (i0 + i) * g.V + v0 + col] = X[m];
    }
    fill_tile(key_t, kN, ch.n, kw, [&](int r, int c) {
      const double G_r = G_at(G, g, ch, r, i0 + c);
      if (reverse) return s * a.q[g.qk(bh, ch.t0 + r) + i0 + c] * exp_of<S>(G_r);
      return a.k[g.qk(bh, ch.t0 + r) + i0 + c] * exp_of<S>(G_at(G, g, ch, ch.n - 1, i0 + c) - G_r);
    });
    fill_tile(col_t, kN, ch.n, vw,
              [&](int r, int c) { return cols[g.vrow(bh, ch.t0 + r) + v0 + c]; });
    for (int c = threadIdx.x; c < kTile; c += kBlock)
      decay_t[c] = c < kw ? exp_of<S>(G_at(G, g, ch, ch.n - 1, i0 + c)) : S(0);
    __syncthreads();  // tiles written
#pragma unroll
    for (int m = 0; m < kStateRowsPerThread; ++m) {
      const int i = row0 + kStep * m;
      S sum = S(0);
      for (int r = 0; r < ch.n; ++r) sum += key_t[r * kPad + i] * col_t[r * kPad + col];
      X[m] = decay_t[i] * X[m] + sum;
    }
    __syncthreads();  // tiles read before the next chunk rewrites them
  }
  if (final_state) {
#pragma unroll
    for (int m = 0; m < kStateRowsPerThread; ++m) {
      const int i = row0 + kStep * m;
      if (i < kw && col < vw) final_state[g.state(bh) + (i0 + i) * g.V + v0 + col] = X[m];
    }
  }
}

// A [kN, kN] of the block's chunk into shared memory: A_rj = s sum_i q_ri k_ji e^{G_ri - G_ji}
// for j <= r < n, 0 elsewhere. Stages keys through q_t, k_t and (per-key gates) G_t, all
// [kN, kPad]. Starts and ends with the block in step (a __syncthreads() after the last write).
template <class S>
__device__ void chunk_scores(const GatedLinearArgs<S>& a, const Geometry& g, const double* G,
                             const Chunk& ch, S* A, S* q_t, S* k_t, double* G_t) {
  const bool per_key = a.gate == GateKind::PerKey;
  const int j = threadIdx.x % kN, row0 = threadIdx.x / kN;
  constexpr int kStep = kBlock / kN;
  S acc[kPairsPerThread];
#pragma unroll
  for (int m = 0; m < kPairsPerThread; ++m) acc[m] = S(0);
  for (int64_t i0 = 0; i0 < g.K; i0 += kTile) {
    const int kw = tile_width(g.K, i0);
    fill_tile(q_t, kN, ch.n, kw,
              [&](int r, int c) { return a.q[g.qk(ch.bh, ch.t0 + r) + i0 + c]; });
    fill_tile(k_t, kN, ch.n, kw,
              [&](int r, int c) { return a.k[g.qk(ch.bh, ch.t0 + r) + i0 + c]; });
    if (per_key)
      fill_tile(G_t, kN, ch.n, kw, [&](int r, int c) { return G_at(G, g, ch, r, i0 + c); });
    __syncthreads();  // tiles written
#pragma unroll
    for (int m = 0; m < kPairsPerThread; ++m) {
      const int r = row0 + kStep * m;
      if (r >= ch.n || j > r) continue;
      const S* q_r = q_t + r * kPad;
      const S* k_j = k_t + j * kPad;
      S sum = S(0);
      if (per_key) {
        const double* G_r = G_t + r * kPad;
        const double* G_j = G_t + j * kPad;
        for (int c = 0; c < kw; ++c) sum += q_r[c] * k_j[c] * exp_of<S>(G_r[c] - G_j[c]);
      } else {
        for (int c = 0; c < kw; ++c) sum += q_r[c] * k_j[c];
      }
      acc[m] += sum;
    }
    __syncthreads();  // tiles read before the next key tile rewrites them
  }
  const S s = static_cast<S>(a.scale);
#pragma unroll
  for (int m = 0; m < kPairsPerThread; ++m) {
    const int r = row0 + kStep * m;
    S value = S(0);
    if (r < ch.n && j <= r)
      value = per_key ? s * acc[m]
                      : s * acc[m] * exp_of<S>(G_at(G, g, ch, r, 0) - G_at(G, g, ch, j, 0));
    A[r * kN + j] = value;
  }
  __syncthreads();  // A complete
}

template <class S>
constexpr size_t output_smem_bytes() {
  return sizeof(double) * kN * kPad + sizeof(S) * (kN * kN + 2 * kN * kPad + kTile * kPad);
}

template <class S>
__global__ void __launch_bounds__(kBlock)
    chunk_output_kernel(GatedLinearArgs<S> a, Geometry g, const double* __restrict__ G,
                        const S* __restrict__ states,  // [B*H, NT, K, V] entering each chunk
                        S* __restrict__ o) {           // [B,T,H,V] overwritten
  extern __shared__ __align__(16) unsigned char chunk_smem[];
  double* G_t = reinterpret_cast<double*>(chunk_smem);  // [kN, kPad]
  S* A = reinterpret_cast<S*>(G_t + kN * kPad);         // [kN, kN]
  S* q_t = A + kN * kN;                                 // [kN, kPad] q, then s q e^G
  S* k_t = q_t + kN * kPad;                             // [kN, kPad] k, then v
  S* st_t = k_t + kN * kPad;                            // [kTile, kPad] tile of S_in
  const Chunk ch = chunk_of_block(g);
  chunk_scores(a, g, G, ch, A, q_t, k_t, G_t);

  const S s = static_cast<S>(a.scale);
  const S* S_in = states + g.chunk_state(ch.bh, ch.c);
  const int col = threadIdx.x % kTile, row0 = threadIdx.x / kTile;
  constexpr int kStep = kBlock / kTile;
  for (int64_t v0 = 0; v0 < g.V; v0 += kTile) {
    const int vw = tile_width(g.V, v0);
    S acc[kTileRowsPerThread];
#pragma unroll
    for (int m = 0; m < kTileRowsPerThread; ++m) acc[m] = S(0);
    // s (q_r * e^{G_r})^T S_in, over key tiles
    for (int64_t i0 = 0; i0 < g.K; i0 += kTile) {
      const int kw = tile_width(g.K, i0);
      fill_tile(q_t, kN, ch.n, kw, [&](int r, int c) {
        return s * a.q[g.qk(ch.bh, ch.t0 + r) + i0 + c] * exp_of<S>(G_at(G, g, ch, r, i0 + c));
      });
      fill_tile(st_t, kTile, kw, vw, [&](int i, int c) { return S_in[(i0 + i) * g.V + v0 + c]; });
      __syncthreads();  // tiles written
#pragma unroll
      for (int m = 0; m < kTileRowsPerThread; ++m) {
        const int r = row0 + kStep * m;
        if (r >= ch.n) continue;
        S sum = S(0);
        for (int i = 0; i < kw; ++i) sum += q_t[r * kPad + i] * st_t[i * kPad + col];
        acc[m] += sum;
      }
      __syncthreads();  // tiles read before they are rewritten
    }
    // + sum_{j<=r} A_rj v_j
    fill_tile(k_t, kN, ch.n, vw,
              [&](int r, int c) { return a.v[g.vrow(ch.bh, ch.t0 + r) + v0 + c]; });
    __syncthreads();  // v tile written
#pragma unroll
    for (int m = 0; m < kTileRowsPerThread; ++m) {
      const int r = row0 + kStep * m;
      if (r >= ch.n || col >= vw) continue;
      S sum = S(0);
      for (int j = 0; j <= r; ++j) sum += A[r * kN + j] * k_t[j * kPad + col];
      o[g.vrow(ch.bh, ch.t0 + r) + v0 + col] = acc[m] + sum;
    }
    __syncthreads();  // v tile read before the next column tile rewrites the staging tiles
  }
}

template <class S>
constexpr size_t gradients_smem_bytes() {
  return sizeof(double) * kN * kPad +
         sizeof(S) * (2 * kN * kN + 4 * kN * kPad + 2 * kTile * kPad + kTile);
}

template <class S>
__global__ void __launch_bounds__(kBlock)
    chunk_gradients_kernel(GatedLinearArgs<S> a, GatedLinearGrad<S> gr, Geometry g,
                           const double* __restrict__ G,
                           const S* __restrict__ states,     // [B*H, NT, K, V] S entering chunk c
                           const S* __restrict__ dstates) {  // [B*H, NT, K, V] C leaving chunk c
  extern __shared__ __align__(16) unsigned char chunk_smem[];
  double* G_t = reinterpret_cast<double*>(chunk_smem);  // [kN, kPad]
  S* A = reinterpret_cast<S*>(G_t + kN * kPad);         // [kN, kN]
  S* dA = A + kN * kN;                                  // [kN, kN]
  S* q_t = dA + kN * kN;                                // [kN, kPad] q
  S* k_t = q_t + kN * kPad;                             // [kN, kPad] k, or k e^{G_last - G}
  S* x_t = k_t + kN * kPad;                             // [kN, kPad] do, then the dg terms
  S* y_t = x_t + kN * kPad;                             // [kN, kPad] v, then k * dk^inter
  S* st_t = y_t + kN * kPad;                            // [kTile, kPad] tile of S_in
  S* ct_t = st_t + kTile * kPad;                        // [kTile, kPad] tile of C
  S* sc_t = ct_t + kTile * kPad;                        // [kTile] sum_v S * C per key
  const Chunk ch = chunk_of_block(g);
  const bool per_key = a.gate == GateKind::PerKey;
  const bool head_gate = a.gate == GateKind::ScalarPerHead;
  const S s = static_cast<S>(a.scale);
  const S* S_in = states + g.chunk_state(ch.bh, ch.c);
  const S* C = dstates + g.chunk_state(ch.bh, ch.c);
  const int tid = threadIdx.x;

  // dA_rj = do_r . v_j for j <= r; head-wide gates fold their pair factor e^{G_r - G_j} into it
  // (the diagonal factor is 1), as the CPU tier's P = s dA * M.
  {
    const int j = tid % kN, row0 = tid / kN;
    constexpr int kStep = kBlock / kN;
    S acc[kPairsPerThread];
#pragma unroll
    for (int m = 0; m < kPairsPerThread; ++m) acc[m] = S(0);
    for (int64_t v0 = 0; v0 < g.V; v0 += kTile) {
      const int vw = tile_width(g.V, v0);
      fill_tile(x_t, kN, ch.n, vw,
                [&](int r, int c) { return gr.dout[g.vrow(ch.bh, ch.t0 + r) + v0 + c]; });
      fill_tile(y_t, kN, ch.n, vw,
                [&](int r, int c) { return a.v[g.vrow(ch.bh, ch.t0 + r) + v0 + c]; });
      __syncthreads();  // tiles written
#pragma unroll
      for (int m = 0; m < kPairsPerThread; ++m) {
        const int r = row0 + kStep * m;
        if (r >= ch.n || j > r) continue;
        S sum = S(0);
        for (int c = 0; c < vw; ++c) sum += x_t[r * kPad + c] * y_t[j * kPad + c];
        acc[m] += sum;
      }
      __syncthreads();  // tiles read before they are rewritten
    }
#pragma unroll
    for (int m = 0; m < kPairsPerThread; ++m) {
      const int r = row0 + kStep * m;
      S value = S(0);
      if (r < ch.n && j <= r)
        value = per_key ? acc[m] : acc[m] * exp_of<S>(G_at(G, g, ch, r, 0) - G_at(G, g, ch, j, 0));
      dA[r * kN + j] = value;
    }
  }
  chunk_scores(a, g, G, ch, A, q_t, k_t, G_t);  // ends with a barrier: dA is visible too

  const int col = tid % kTile, row0 = tid / kTile;
  constexpr int kStep = kBlock / kTile;
  // dq, dk and dg by key tiles; the key of thread tid's entries is i0 + col
  S dg_of_row = S(0);  // ScalarPerHead: dg of row tid, summed over the key tiles
  for (int64_t i0 = 0; i0 < g.K; i0 += kTile) {
    const int kw = tile_width(g.K, i0);
    fill_tile(q_t, kN, ch.n, kw,
              [&](int r, int c) { return a.q[g.qk(ch.bh, ch.t0 + r) + i0 + c]; });
    fill_tile(k_t, kN, ch.n, kw,
              [&](int r, int c) { return a.k[g.qk(ch.bh, ch.t0 + r) + i0 + c]; });
    fill_tile(G_t, kN, ch.n, kw, [&](int r, int c) { return G_at(G, g, ch, r, i0 + c); });
    __syncthreads();  // tiles written

    // the strictly-earlier / strictly-later pair sums: s sum_{j<r} dA_rj k_j e^{G_r - G_j} and
    // s sum_{u>r} dA_ur q_u e^{G_u - G_r}
    S intra_q[kTileRowsPerThread], intra_k[kTileRowsPerThread];
    S inter_q[kTileRowsPerThread], inter_k[kTileRowsPerThread];
#pragma unroll
    for (int m = 0; m < kTileRowsPerThread; ++m) {
      const int r = row0 + kStep * m;
      intra_q[m] = intra_k[m] = inter_q[m] = inter_k[m] = S(0);
      if (r >= ch.n || col >= kw) continue;
      const double G_r = G_t[r * kPad + col];
      S sq = S(0), sk = S(0);
      if (per_key) {
        for (int j = 0; j < r; ++j)
          sq += dA[r * kN + j] * k_t[j * kPad + col] * exp_of<S>(G_r - G_t[j * kPad + col]);
        for (int u = r + 1; u < ch.n; ++u)
          sk += dA[u * kN + r] * q_t[u * kPad + col] * exp_of<S>(G_t[u * kPad + col] - G_r);
      } else {
        for (int j = 0; j < r; ++j) sq += dA[r * kN + j] * k_t[j * kPad + col];
        for (int u = r + 1; u < ch.n; ++u) sk += dA[u * kN + r] * q_t[u * kPad + col];
      }
      intra_q[m] = s * sq;
      intra_k[m] = s * sk;
    }
    // the state parts S do_r and C v_r, and sum_v S * C, over column tiles
    S sc = S(0);
    for (int64_t v0 = 0; v0 < g.V; v0 += kTile) {
      const int vw = tile_width(g.V, v0);
      fill_tile(x_t, kN, ch.n, vw,
                [&](int r, int c) { return gr.dout[g.vrow(ch.bh, ch.t0 + r) + v0 + c]; });
      fill_tile(y_t, kN, ch.n, vw,
                [&](int r, int c) { return a.v[g.vrow(ch.bh, ch.t0 + r) + v0 + c]; });
      fill_tile(st_t, kTile, kw, vw, [&](int i, int c) { return S_in[(i0 + i) * g.V + v0 + c]; });
      fill_tile(ct_t, kTile, kw, vw, [&](int i, int c) { return C[(i0 + i) * g.V + v0 + c]; });
      __syncthreads();  // tiles written
#pragma unroll
      for (int m = 0; m < kTileRowsPerThread; ++m) {
        const int r = row0 + kStep * m;
        if (r >= ch.n || col >= kw) continue;
        S sq = S(0), sk = S(0);
        for (int c = 0; c < vw; ++c) {
          sq += x_t[r * kPad + c] * st_t[col * kPad + c];
          sk += y_t[r * kPad + c] * ct_t[col * kPad + c];
        }
        inter_q[m] += sq;
        inter_k[m] += sk;
      }
      if (tid < kw)
        for (int c = 0; c < vw; ++c) sc += st_t[tid * kPad + c] * ct_t[tid * kPad + c];
      __syncthreads();  // tiles read before they are rewritten
    }
    // dq, dk, and the dg terms of each row: x_t = q dq^off - k dk^intra, y_t = k dk^inter
    if (tid < kTile) sc_t[tid] = sc;
#pragma unroll
    for (int m = 0; m < kTileRowsPerThread; ++m) {
      const int r = row0 + kStep * m;
      if (r >= ch.n || col >= kw) continue;
      const double G_r = G_t[r * kPad + col], G_last = G_t[(ch.n - 1) * kPad + col];
      const S dq_off = s * exp_of<S>(G_r) * inter_q[m] + intra_q[m];
      const S dk_inter = exp_of<S>(G_last - G_r) * inter_k[m];
      const S diag = s * dA[r * kN + r];  // the j = r terms: s (do_r . v_r) k_r and q_r
      const S q_ri = q_t[r * kPad + col], k_ri = k_t[r * kPad + col];
      gr.dq[g.qk(ch.bh, ch.t0 + r) + i0 + col] = dq_off + diag * k_ri;
      gr.dk[g.qk(ch.bh, ch.t0 + r) + i0 + col] = dk_inter + intra_k[m] + diag * q_ri;
      x_t[r * kPad + col] = q_ri * dq_off - k_ri * intra_k[m];
      y_t[r * kPad + col] = k_ri * dk_inter;
    }
    __syncthreads();  // dg terms and sc_t written
    if (per_key || head_gate) {
      if (tid < kw) {  // one key column per thread, rows in order as on the CPU
        S sum = S(0);
        for (int r = ch.n - 1; r >= 0; --r) {
          sum += x_t[r * kPad + tid];
          x_t[r * kPad + tid] = sum;
        }
        S before = exp_of<S>(G_t[(ch.n - 1) * kPad + tid]) * sc_t[tid];
        for (int r = 0; r < ch.n; ++r) {
          x_t[r * kPad + tid] += before;
          before += y_t[r * kPad + tid];
        }
      }
      __syncthreads();  // dg of the tile complete
      if (per_key) {
#pragma unroll
        for (int m = 0; m < kTileRowsPerThread; ++m) {
          const int r = row0 + kStep * m;
          if (r < ch.n && col < kw) gr.dg[g.qk(ch.bh, ch.t0 + r) + i0 + col] = x_t[r * kPad + col];
        }
      } else if (tid < ch.n) {
        for (int c = 0; c < kw; ++c) dg_of_row += x_t[tid * kPad + c];
      }
    }
    __syncthreads();  // every tile read before the next key tile rewrites them
  }
  if (head_gate && tid < ch.n) gr.dg[g.head_gate(ch.bh, ch.t0 + tid)] = dg_of_row;

  // dv_j = (k_j * e^{G_last - G_j})^T C + sum_{r>=j} A_rj do_r, by column tiles; the column of
  // thread tid's entries is v0 + col
  for (int64_t v0 = 0; v0 < g.V; v0 += kTile) {
    const int vw = tile_width(g.V, v0);
    S acc[kTileRowsPerThread];
#pragma unroll
    for (int m = 0; m < kTileRowsPerThread; ++m) acc[m] = S(0);
    for (int64_t i0 = 0; i0 < g.K; i0 += kTile) {
      const int kw = tile_width(g.K, i0);
      fill_tile(k_t, kN, ch.n, kw, [&](int r, int c) {
        return a.k[g.qk(ch.bh, ch.t0 + r) + i0 + c] *
               exp_of<S>(G_at(G, g, ch, ch.n - 1, i0 + c) - G_at(G, g, ch, r, i0 + c));
      });
      fill_tile(ct_t, kTile, kw, vw, [&](int i, int c) { return C[(i0 + i) * g.V + v0 + c]; });
      __syncthreads();  // tiles written
#pragma unroll
      for (int m = 0; m < kTileRowsPerThread; ++m) {
        const int j = row0 + kStep * m;
        if (j >= ch.n || col >= vw) continue;
        S sum = S(0);
        for (int i = 0; i < kw; ++i) sum += k_t[j * kPad + i] * ct_t[i * kPad + col];
        acc[m] += sum;
      }
      __syncthreads();  // tiles read before they are rewritten
    }
    fill_tile(x_t, kN, ch.n, vw,
              [&](int r, int c) { return gr.dout[g.vrow(ch.bh, ch.t0 + r) + v0 + c]; });
    __syncthreads();  // do tile written
#pragma unroll
    for (int m = 0; m < kTileRowsPerThread; ++m) {
      const int j = row0 + kStep * m;
      if (j >= ch.n || col >= vw) continue;
      S sum = S(0);
      for (int r = j; r < ch.n; ++r) sum += A[r * kN + j] * x_t[r * kPad + col];
      gr.dv[g.vrow(ch.bh, ch.t0 + j) + v0 + col] = sum + acc[m];
    }
    __syncthreads();  // do tile read before the next column tile rewrites it
  }
}

// ---- launchers

template <class S>
constexpr size_t state_pass_smem_bytes() {
  return sizeof(S) * (2 * kN * kPad + kTile);
}

template <class S>
Geometry geometry_of(const GatedLinearArgs<S>& a, const char* op) {
  kernels::check_rec_args(a, op);
  const RecDims& d = a.d;
  const int64_t NT = (d.T + kN - 1) / kN;
  if (d.B * d.H * NT >= (int64_t(1) << 31))
    throw Error(op, "B*H*ceil(T/64) < 2^31 chunks (one thread block each)",
                std::to_string(d.B * d.H * NT), "split the batch or the sequence");
  HLA_CHECK((d.K + kTile - 1) / kTile <= 65535 && (d.V + kTile - 1) / kTile <= 65535,
            op << ": K=" << d.K << ", V=" << d.V << " exceed the grid");
  return {d.B, d.T, d.H, d.K, d.V, NT, a.gate == GateKind::PerKey ? d.K : 1};
}

template <class S>
Tensor buffer_of(int64_t n) {
  return Tensor::empty({n}, std::is_same_v<S, double> ? DType::f64 : DType::f32, Device::CUDA);
}

// G [B*H, T, Kg] of the arguments.
template <class S>
Tensor cumulative_decay(const GatedLinearArgs<S>& a, const Geometry& g) {
  Tensor G = Tensor::empty({g.B * g.H * g.T * g.Kg}, DType::f64, Device::CUDA);
  cumulative_decay_kernel<S><<<grid_for(g.B * g.H * g.NT * g.Kg), kThreads, 0, stream()>>>(
      a.g, a.gate, g, G.data<double>());
  CUDA_CHECK(cudaGetLastError());
  return G;
}

template <class S>
void state_pass(const GatedLinearArgs<S>& a, const Geometry& g, const Tensor& G, const S* cols,
                const S* init, Tensor& per_chunk, S* final_state, bool reverse) {
  const dim3 grid(static_cast<unsigned>(g.B * g.H),
                  static_cast<unsigned>((g.K + kTile - 1) / kTile),
                  static_cast<unsigned>((g.V + kTile - 1) / kTile));
  constexpr size_t smem = state_pass_smem_bytes<S>();
  allow_shared_memory(state_pass_kernel<S>, smem, "gated_linear_chunk (cuda)");
  state_pass_kernel<S><<<grid, kBlock, smem, stream()>>>(a, g, G.data<double>(), cols, init,
                                                         per_chunk.data<S>(), final_state, reverse);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

template <class S>
void gated_linear_chunk_forward(const GatedLinearArgs<S>& a, const GatedLinearOut<S>& out) {
  const Geometry g = geometry_of(a, "gated_linear_chunk_forward (cuda)");
  HLA_CHECK(out.o, "o is required");
  const Tensor G = cumulative_decay(a, g);
  Tensor states = buffer_of<S>(g.B * g.H * g.NT * g.K * g.V);
  state_pass<S>(a, g, G, a.v, a.h0, states, out.hT, false);

  constexpr size_t smem = output_smem_bytes<S>();
  allow_shared_memory(chunk_output_kernel<S>, smem, "gated_linear_chunk (cuda)");
  chunk_output_kernel<S><<<static_cast<unsigned>(g.B * g.H * g.NT), kBlock, smem, stream()>>>(
      a, g, G.data<double>(), states.data<S>(), out.o);
  CUDA_CHECK(cudaGetLastError());
}

template <class S>
void gated_linear_chunk_backward(const GatedLinearArgs<S>& a, const GatedLinearGrad<S>& grad) {
  const Geometry g = geometry_of(a, "gated_linear_chunk_backward (cuda)");
  HLA_CHECK(grad.dout && grad.dq && grad.dk && grad.dv, "dout, dq, dk and dv are required");
  const bool want_dg = a.gate == GateKind::ScalarPerHead || a.gate == GateKind::PerKey;
  HLA_CHECK(!want_dg || grad.dg, "dg is required for a gate tensor");
  const Tensor G = cumulative_decay(a, g);
  Tensor states = buffer_of<S>(g.B * g.H * g.NT * g.K * g.V);
  Tensor dstates = buffer_of<S>(g.B * g.H * g.NT * g.K * g.V);
  state_pass<S>(a, g, G, a.v, a.h0, states, nullptr, false);
  state_pass<S>(a, g, G, grad.dout, grad.dhT, dstates, grad.dh0, true);

  constexpr size_t smem = gradients_smem_bytes<S>();
  allow_shared_memory(chunk_gradients_kernel<S>, smem, "gated_linear_chunk (cuda)");
  chunk_gradients_kernel<S><<<static_cast<unsigned>(g.B * g.H * g.NT), kBlock, smem, stream()>>>(
      a, grad, g, G.data<double>(), states.data<S>(), dstates.data<S>());
  CUDA_CHECK(cudaGetLastError());
}

template void gated_linear_chunk_forward<float>(const GatedLinearArgs<float>&,
                                                const GatedLinearOut<float>&);
template void gated_linear_chunk_forward<double>(const GatedLinearArgs<double>&,
                                                 const GatedLinearOut<double>&);
template void gated_linear_chunk_backward<float>(const GatedLinearArgs<float>&,
                                                 const GatedLinearGrad<float>&);
template void gated_linear_chunk_backward<double>(const GatedLinearArgs<double>&,
                                                  const GatedLinearGrad<double>&);

}  // namespace hla::cuda
