// The chunk-to-chunk recurrence of the gated linear family's state on tensor cores: the state
// entering every chunk (bf16, an mma operand of the output and gradient kernels) and the state
// after the last one (f32), walking the chunks of a head in order, or in reverse for C = dL/dS:
//   forward:  X <- diag(e^{G_last}) X + sum_r (k_r e^{G_last - G_r}) v_r^T      X_0 = h0 (or 0)
//   reverse:  X <- diag(e^{G_last}) X + s sum_r (q_r e^{G_r}) do_r^T             X_0 = dhT (or 0)
// per_chunk[c] = X as it enters chunk c's update (rounded to bf16); final_state = X after the
// last update (f32); decayed (optional) = the forward's rows k_r e^{G_last - G_r} as staged
// (bf16). G is the chunk-local cumulative log decay [B*H, T, Kg] (per key for Kg = K, one per
// row for Kg = 1), G_last its last row in the chunk.
//
// One block of 8 warps per (b*h, 64-key tile, 64-column tile) holds its tile of X in registers
// (warp w: keys 16 (w % 4) .. + 15, columns 32 (w / 4) .. + 31 as 4 C tiles of mma.sync
// m16n8k16; 8 warps rather than 4 keep more loads in flight when there are few heads) through
// all the chunks: per
// chunk it stores X, stages the chunk's decayed rows and column rows as bf16 [64 rows x 64] in
// shared memory, decays X and adds the chunk's update as a product over the chunk's rows (both
// operands through ldmatrix.trans). The next chunk's rows are loaded into registers while this
// chunk's product runs. Each state entry takes the f32 sum in the chunks' order, so the result
// is deterministic; per_chunk and final_state are overwritten.
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gated_linear_geometry.cuh"
#include "kernels/cuda/gated_linear_mma.cuh"
#include "kernels/cuda/mma_fragments.cuh"

namespace hla::cuda::gla_mma {

namespace {

constexpr int kTile = 64;                             // keys and columns of a block's state tile
constexpr int kLd = kTile + 8;                        // shared row stride (bf16)
constexpr int kWalkThreads = 256;                     // 8 warps: 4 key groups x 2 column halves
constexpr int kCols = kTile / 2;                      // columns of a warp
constexpr int kItems = kN * (kTile / 8) / kWalkThreads;  // 8-element row pieces a thread stages
static_assert(kItems * kWalkThreads == kN * kTile / 8, "whole row pieces per thread");

// One chunk's rows as this thread stages them: item x = threadIdx.x + kWalkThreads * j is row
// x / 8, elements 8 (x % 8) .. + 7 of the block's key tile (rows) and column tile (cols).
struct ChunkRows {
  uint4 rows[kItems], cols[kItems];
  float G[kItems][8];  // G_r of those keys (forward: then G_last - G_r)
};

// G[at .. at + 7] (per key: two 16-byte loads), or G[at] repeated.
__device__ inline void decays8(float (&out)[8], const float* G, int64_t at, bool per_key) {
  if (per_key) {
    load8(G + at, out);
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) out[e] = G[at];
  }
}

// Issues the global loads of chunk c (rows past its end zero).
__device__ inline void load_chunk(ChunkRows& cr, const Operands& op, const Geometry& g,
                                  const bf16_dev* cols, bool reverse, int64_t bh, int64_t c,
                                  int i0, int v0) {
  const int64_t t0 = c * kN;
  const int n = rows_in_chunk(g, c);
  const bf16_dev* rows = (reverse ? op.q : op.k) + g.qk(bh, t0) + i0;
  const bf16_dev* col_rows = cols + g.vrow(bh, t0) + v0;
  const float* G = op.G + g.g_row(bh, t0);
  const bool per_key = g.Kg != 1;
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const int x = threadIdx.x + kWalkThreads * j, r = x / 8, i = x % 8 * 8;
    cr.rows[j] = cr.cols[j] = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int e = 0; e < 8; ++e) cr.G[j][e] = 0.f;
    if (r < n) {
      cr.rows[j] = *reinterpret_cast<const uint4*>(rows + r * g.H * g.K + i);
      cr.cols[j] = *reinterpret_cast<const uint4*>(col_rows + r * g.H * g.V + i);
      decays8(cr.G[j], G, per_key ? r * g.K + i0 + i : r, per_key);
    }
  }
}

// The decay factors of the lane's two key rows of X for chunk c: e^{G_last}.
__device__ inline float2 chunk_decay(const Operands& op, const Geometry& g, int64_t bh, int64_t c,
                                     int key_lo) {
  const int64_t last = (c + 1) * kN < g.T ? (c + 1) * kN - 1 : g.T - 1;
  const float* G = op.G + g.g_row(bh, last);
  if (g.Kg == 1) {
    const float d = fast_exp(G[0]);
    return make_float2(d, d);
  }
  return make_float2(fast_exp(G[key_lo]), fast_exp(G[key_lo + 8]));
}

__global__ void __launch_bounds__(kWalkThreads)
    state_walk_kernel(Operands op, Geometry g, const bf16_dev* __restrict__ cols, bool reverse,
                      const float* __restrict__ init,    // [B,H,K,V] or null
                      bf16_dev* __restrict__ per_chunk,  // [B*H, NT, K, V]
                      float* __restrict__ final_state,   // [B,H,K,V] or null
                      bf16_dev* __restrict__ decayed) {  // [B*H, T, K] or null
  __shared__ __align__(16) bf16_dev walk_smem[2 * kN * kLd];
  bf16_dev* a_s = walk_smem;             // decayed rows [row][key]
  bf16_dev* c_s = walk_smem + kN * kLd;  // column rows [row][column]
  const int64_t bh = blockIdx.x;
  const int i0 = blockIdx.y * kTile, v0 = blockIdx.z * kTile;
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int keys = 16 * (w % 4), c0 = v0 + kCols * (w / 4);  // the warp's keys and columns
  const Lane L = lane_of();
  const int key_lo = i0 + keys + L.g;  // the lane's key rows: key_lo, key_lo + 8
  const bool per_key = g.Kg != 1;

  float X[kCols / 8][4];  // X[key_lo + 8h][c0 + 8nt + 2t + e]: entry 2h + e of tile nt
#pragma unroll
  for (int nt = 0; nt < kCols / 8; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float2 x = make_float2(0.f, 0.f);
      if (init)
        x = *reinterpret_cast<const float2*>(init + g.state(bh) + (key_lo + 8 * h) * g.V + c0 +
                                             8 * nt + 2 * L.t);
      X[nt][2 * h] = x.x, X[nt][2 * h + 1] = x.y;
    }

  ChunkRows next;
  load_chunk(next, op, g, cols, reverse, bh, reverse ? g.NT - 1 : 0, i0, v0);
  for (int64_t step = 0; step < g.NT; ++step) {
    const int64_t c = reverse ? g.NT - 1 - step : step;
    bf16_dev* out = per_chunk + g.chunk_state(bh, c) + c0 + 2 * L.t;
#pragma unroll
    for (int nt = 0; nt < kCols / 8; ++nt)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        *reinterpret_cast<uint32_t*>(out + (key_lo + 8 * h) * g.V + 8 * nt) =
            pack_bf16(X[nt][2 * h], X[nt][2 * h + 1]);

    // this chunk's operands into shared memory, once every warp is done with the last ones
    const int n = rows_in_chunk(g, c);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int x = threadIdx.x + kWalkThreads * j, r = x / 8, i = x % 8 * 8;
      float row[8], G_last[8];
      unpack8(next.rows[j], row);
      if (!reverse) {  // G_last of the same keys (L1 / L2 hits: one row per chunk)
        decays8(G_last, op.G + g.g_row(bh, c * kN + n - 1), per_key ? i0 + i : 0, per_key);
      }
#pragma unroll
      for (int e = 0; e < 8; ++e)
        row[e] *= r >= n      ? 0.f
                  : reverse ? op.scale * fast_exp(next.G[j][e])
                            : fast_exp(G_last[e] - next.G[j][e]);
      uint4 packed;
      packed.x = pack_bf16(row[0], row[1]);
      packed.y = pack_bf16(row[2], row[3]);
      packed.z = pack_bf16(row[4], row[5]);
      packed.w = pack_bf16(row[6], row[7]);
      *reinterpret_cast<uint4*>(a_s + r * kLd + i) = packed;
      if (decayed && blockIdx.z == 0 && r < n)  // the key tile's first column block writes them
        *reinterpret_cast<uint4*>(decayed + (bh * g.T + c * kN + r) * g.K + i0 + i) = packed;
      *reinterpret_cast<uint4*>(c_s + r * kLd + i) = next.cols[j];
    }
    __syncthreads();
    if (step + 1 < g.NT)  // in flight under this chunk's product
      load_chunk(next, op, g, cols, reverse, bh, reverse ? c - 1 : c + 1, i0, v0);

    const float2 decay = chunk_decay(op, g, bh, c, key_lo);
#pragma unroll
    for (int nt = 0; nt < kCols / 8; ++nt) {
      X[nt][0] *= decay.x, X[nt][1] *= decay.x;
      X[nt][2] *= decay.y, X[nt][3] *= decay.y;
    }
#pragma unroll
    for (int ks = 0; ks < kN / 16; ++ks) {
      uint32_t a[4];  // A [16 keys x 16 rows] = a_s[row][key] transposed
      a_rows_trans(a, a_s, kLd, 16 * ks, keys, lane);
      mma_rows_trans(X, a, c_s + c0 - v0, kLd, 16 * ks, lane);  // B [16 rows x 32 columns]
    }
  }
  if (!final_state) return;
#pragma unroll
  for (int nt = 0; nt < kCols / 8; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      *reinterpret_cast<float2*>(final_state + g.state(bh) + (key_lo + 8 * h) * g.V + c0 +
                                 8 * nt + 2 * L.t) = make_float2(X[nt][2 * h], X[nt][2 * h + 1]);
}

}  // namespace

void chunk_states(const Operands& op, const Geometry& g, const bf16_dev* cols, const float* init,
                  bf16_dev* per_chunk, float* final_state, bool reverse, bf16_dev* decayed) {
  HLA_CHECK(g.K % kTile == 0 && g.V % kTile == 0,
            "chunk_states: K and V multiples of " << kTile << ", got " << g.K << ", " << g.V);
  const dim3 grid(static_cast<unsigned>(g.B * g.H), static_cast<unsigned>(g.K / kTile),
                  static_cast<unsigned>(g.V / kTile));
  state_walk_kernel<<<grid, kWalkThreads, 0, stream()>>>(op, g, cols, reverse, init, per_chunk,
                                                         final_state, reverse ? nullptr : decayed);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace hla::cuda::gla_mma
