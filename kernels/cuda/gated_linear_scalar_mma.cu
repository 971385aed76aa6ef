// The chunk kernels of the gated linear family on tensor cores for a decay shared by a head's keys:
// simple GLA (ScalarPerHead), RetNet (FixedPerHead), linear attention (None). bf16 q, k, v, do and
// the chunk states in, bf16 o, dq, dk, dv and f32 dg out; products on mma.sync.m16n8k16 with fp32
// accumulators (mma_fragments.cuh). The state passes are gated_linear_mma.cu's.
//
// With one decay per row the pair factor e^{G_r - G_j} does not depend on the key, so a chunk's
// scores are one product scaled entry by entry, with no secondary chunking (the per-key kernels'
// reference rows). For the rows r, j < n of a chunk, G_r the chunk-local cumulative log decay
// (0 for None), s the scale, S the state entering the chunk and C = dL/dS leaving it:
//   D_rj = s e^{G_r - G_j} [j <= r]          (<= s: G falls with r)
//   A  = (Q K^T) o D                          dA = (dO V^T) o D
//   o  = A V + s diag(e^G) Q S
//   dq = dA K + s diag(e^G) dO S^T
//   dk = dA^T Q + diag(e^{G_last - G}) V C^T          (dk^intra + dk^inter)
//   dv = A^T dO + diag(e^{G_last - G}) K C
//   dg_r = sum_{u >= r} x_u + e^{G_last} <S, C> + sum_{j < r} y_j      (ScalarPerHead)
//     x_u = q_u . dq_u - k_u . dk_u^intra      y_j = k_j . dk_j^inter
// (gated_linear_chunk.cu's per-key dg summed over the keys; the j = r terms of dq and dk^intra
// cancel in x). What is rounded to bf16 is an operand: the inputs, the chunk states and A, dA.
// The per-row factors multiply the fp32 accumulators.
//
// Kernels, one block of 4 warps per (b*h, chunk); warp w owns rows R0 = 16 w .. R0 + 15:
//   scalar_output     (and a 128-column slice of V, V = 256 taking two blocks): q, k, v and S
//                     staged; A's rows as 8 C tiles (key blocks b <= w), then o = A V + ...
//   scalar_gradients  q, k, v, do and C staged, S read from global memory (L1/L2); A and dA into
//                     shared memory (bf16), then dv by 64-column tiles, then dq and dk by 64-key
//                     tiles with the row sums of x and y, then dg one row a thread.
// Shared memory (K = V = 64 / 128): output 37 / 85 KiB, gradients 64 / 121 KiB (K = 128,
// V = 256: 185 KiB). Registers (ptxas, sm_90, no spills): output 102-137, gradients 136-200.
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gated_linear_geometry.cuh"
#include "kernels/cuda/gated_linear_mma.cuh"
#include "kernels/cuda/mma_fragments.cuh"

namespace hla::cuda::gla_mma {

namespace {

constexpr int kScoreLd = kN + 8;  // row stride (bf16) of A and dA in shared memory
constexpr int kTile = 64;         // columns of a dv pass, keys of a dq / dk pass

template <int V>
constexpr int output_columns() {
  return V > 128 ? 128 : V;
}

// G of the chunk's rows into shared memory (0 past n).
__device__ inline void stage_decay(float* G_s, const Operands& op, const Geometry& g, int64_t bh,
                                   int64_t t0, int n) {
  for (int r = threadIdx.x; r < kN; r += kBlock) G_s[r] = r < n ? op.G[g.g_row(bh, t0 + r)] : 0.f;
}

// One score matrix's rows R0..R0+15 as C tiles (tile nt = columns 8nt..8nt+7, key blocks
// b <= w only, the rest 0): P = (X Y^T) o D for X, Y row-major [kN][D] tiles in shared memory.
template <int D>
__device__ inline void scores(float (&P)[kN / 8][4], const bf16_dev* X, const bf16_dev* Y, int ld,
                              const float* G_s, float s, int n, int w, const Lane& L, int lane) {
  const int R0 = kSub * w;
  zero(P);
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    uint32_t a[4];
    a_rows(a, X, ld, R0, 16 * ks, lane);
#pragma unroll
    for (int b = 0; b < kWarps; ++b) {
      if (b > w) continue;
      uint32_t y[4];  // keys 16b..16b+15 as two n-tiles: B[k][n] = Y[16b + n][16 ks + k]
      ldmatrix_x4(y, Y + (16 * b + lane % 8 + 8 * (lane / 16)) * ld + 16 * ks + 8 * (lane / 8 % 2));
      const uint32_t b0[2] = {y[0], y[1]}, b1[2] = {y[2], y[3]};
      mma_bf16(P[2 * b], a, b0);
      mma_bf16(P[2 * b + 1], a, b1);
    }
  }
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = R0 + acc_row(L, e), j = 8 * nt + acc_col(L, e);
      P[nt][e] = j <= r && r < n ? s * fast_exp(G_s[r] - G_s[j]) * P[nt][e] : 0.f;
    }
}

// Multiplies the accumulator rows R0 + g and R0 + g + 8 by f_lo and f_hi.
template <int NT>
__device__ inline void scale_rows(float (&acc)[NT][4], float f_lo, float f_hi) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    acc[nt][0] *= f_lo, acc[nt][1] *= f_lo;
    acc[nt][2] *= f_hi, acc[nt][3] *= f_hi;
  }
}

// The score rows R0..R0+15 (C tiles) into a shared [kN][kScoreLd] bf16 tile.
__device__ inline void store_score_rows(bf16_dev* dst, const float (&P)[kN / 8][4], int R0,
                                        const Lane& L) {
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      *reinterpret_cast<uint32_t*>(dst + (R0 + L.g + 8 * h) * kScoreLd + 8 * nt + 2 * L.t) =
          pack_bf16(P[nt][2 * h], P[nt][2 * h + 1]);
}

// Shared memory of the output kernel: q_s, k_s [kN][K + 8], v_s [kN][VT + 8], S_s [K][VT + 8]
// (bf16), G_s [kN] (f32).
template <int K, int V>
constexpr size_t output_smem_bytes() {
  constexpr int VT = output_columns<V>();
  return sizeof(bf16_dev) * (2 * kN * (K + 8) + (kN + K) * (VT + 8)) + sizeof(float) * kN;
}

// o_r = sum_{j<=r} A_rj v_j + s e^{G_r} q_r S for the rows of warp w, columns v0 .. v0 + VT - 1.
template <int K, int V>
__global__ void __launch_bounds__(kBlock)
    scalar_output_kernel(Operands op, Geometry g, const bf16_dev* __restrict__ states,
                         bf16_dev* __restrict__ o) {
  constexpr int VT = output_columns<V>(), kQK = K + 8, kLd = VT + 8;
  extern __shared__ __align__(16) unsigned char scalar_smem[];
  bf16_dev* q_s = reinterpret_cast<bf16_dev*>(scalar_smem);
  bf16_dev* k_s = q_s + kN * kQK;
  bf16_dev* v_s = k_s + kN * kQK;
  bf16_dev* S_s = v_s + kN * kLd;
  float* G_s = reinterpret_cast<float*>(S_s + K * kLd);
  const int64_t bh = blockIdx.x / g.NT, c = blockIdx.x % g.NT, t0 = c * kN;
  const int v0 = VT * blockIdx.y, n = rows_in_chunk(g, c);
  stage(q_s, kQK, op.q + g.qk(bh, t0), g.H * K, n, K, kN);
  stage(k_s, kQK, op.k + g.qk(bh, t0), g.H * K, n, K, kN);
  stage(v_s, kLd, op.v + g.vrow(bh, t0) + v0, g.H * V, n, VT, kN);
  stage(S_s, kLd, states + g.chunk_state(bh, c) + v0, V, K, VT, K);
  stage_decay(G_s, op, g, bh, t0, n);
  __syncthreads();
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32, R0 = kSub * w;
  if (R0 >= n) return;  // no barrier follows
  const Lane L = lane_of();

  float O[VT / 8][4];  // s e^{G_r} q_r S first, the row factor applied before A V is added
  zero(O);
#pragma unroll
  for (int ks = 0; ks < K / 16; ++ks) {
    uint32_t a[4];
    a_rows(a, q_s, kQK, R0, 16 * ks, lane);
    mma_rows_trans(O, a, S_s, kLd, 16 * ks, lane);
  }
  scale_rows(O, op.scale * fast_exp(G_s[R0 + L.g]), op.scale * fast_exp(G_s[R0 + L.g + 8]));
  float P[kN / 8][4];
  scores<K>(P, q_s, k_s, kQK, G_s, op.scale, n, w, L, lane);
  mma_causal_rows(O, P, v_s, kLd, w, lane);
  store_rows(O, o + g.vrow(bh, t0) + v0, g.H * V, R0, n, L);
}

// Shared memory of the gradients kernel: q_s, k_s [kN][K + 8], v_s, do_s [kN][V + 8],
// C_s [K][V + 8], A_s, dA_s [kN][kN + 8] (bf16), then G_s, x_s, y_s [kN] and <S, C> per warp
// (f32).
template <int K, int V>
constexpr size_t gradients_smem_bytes() {
  return sizeof(bf16_dev) * (2 * kN * (K + 8) + (2 * kN + K) * (V + 8) + 2 * kN * kScoreLd) +
         sizeof(float) * (3 * kN + kWarps);
}

template <int K, int V>
__global__ void __launch_bounds__(kBlock)
    scalar_gradients_kernel(Operands op, GradPointers gp, Geometry g,
                            const bf16_dev* __restrict__ states,     // [B*H, NT, K, V] entering
                            const bf16_dev* __restrict__ dstates) {  // [B*H, NT, K, V] leaving
  constexpr int kQK = K + 8, kV = V + 8;
  extern __shared__ __align__(16) unsigned char scalar_smem[];
  bf16_dev* q_s = reinterpret_cast<bf16_dev*>(scalar_smem);
  bf16_dev* k_s = q_s + kN * kQK;
  bf16_dev* v_s = k_s + kN * kQK;
  bf16_dev* do_s = v_s + kN * kV;
  bf16_dev* C_s = do_s + kN * kV;
  bf16_dev* A_s = C_s + K * kV;
  bf16_dev* dA_s = A_s + kN * kScoreLd;
  float* G_s = reinterpret_cast<float*>(dA_s + kN * kScoreLd);
  float* x_s = G_s + kN;
  float* y_s = x_s + kN;
  float* sc_s = y_s + kN;  // [kWarps]
  const int64_t bh = blockIdx.x / g.NT, c = blockIdx.x % g.NT, t0 = c * kN;
  const int n = rows_in_chunk(g, c);
  const bf16_dev* S = states + g.chunk_state(bh, c);
  stage(q_s, kQK, op.q + g.qk(bh, t0), g.H * K, n, K, kN);
  stage(k_s, kQK, op.k + g.qk(bh, t0), g.H * K, n, K, kN);
  stage(v_s, kV, op.v + g.vrow(bh, t0), g.H * V, n, V, kN);
  stage(do_s, kV, op.dout + g.vrow(bh, t0), g.H * V, n, V, kN);
  stage(C_s, kV, dstates + g.chunk_state(bh, c), V, K, V, K);
  stage_decay(G_s, op, g, bh, t0, n);
  __syncthreads();
  const int tid = threadIdx.x, w = tid / 32, lane = tid % 32, R0 = kSub * w;
  const bool active = R0 < n;  // inactive warps still meet every barrier
  const Lane L = lane_of();
  const float s = op.scale;
  const int r_lo = R0 + L.g, r_hi = R0 + L.g + 8;  // the lane's accumulator rows

  // A and dA rows of this warp into shared memory (bf16; zero where masked)
  if (active) {
    float P[kN / 8][4];
    scores<K>(P, q_s, k_s, kQK, G_s, s, n, w, L, lane);
    store_score_rows(A_s, P, R0, L);
    scores<V>(P, do_s, v_s, kV, G_s, s, n, w, L, lane);
    store_score_rows(dA_s, P, R0, L);
  }
  __syncthreads();  // A and dA complete (rows of other warps are read transposed)
  const bool want_dg = gp.dg != nullptr;  // RetNet and linear attention have no gate to train
  float x_lo = 0.f, x_hi = 0.f, y_lo = 0.f, y_hi = 0.f;  // partial row sums of x and y
  if (active) {
    const float G_last = G_s[n - 1];
    const float inter_lo = fast_exp(G_last - G_s[r_lo]), inter_hi = fast_exp(G_last - G_s[r_hi]);
    // dv = diag(e^{G_last - G}) K C + A^T dO, by 64-column tiles
    for (int v0 = 0; v0 < V; v0 += kTile) {
      float D[kTile / 8][4];
      zero(D);
#pragma unroll
      for (int ks = 0; ks < K / 16; ++ks) {
        uint32_t a[4];
        a_rows(a, k_s, kQK, R0, 16 * ks, lane);
        mma_rows_trans(D, a, C_s + v0, kV, 16 * ks, lane);
      }
      scale_rows(D, inter_lo, inter_hi);
      mma_anticausal_rows<kWarps>(D, A_s, kScoreLd, R0, do_s + v0, kV, w, n, lane);  // A^T do
      store_rows(D, gp.dv + g.vrow(bh, t0) + v0, g.H * V, R0, n, L);
    }
    // dq and dk by 64-key tiles, with the lane's terms of x and y
    for (int i0 = 0; i0 < K; i0 += kTile) {
      float Q[kTile / 8][4], Kd[kTile / 8][4];
      zero(Q);
      zero(Kd);
#pragma unroll
      for (int vs = 0; vs < V / 16; ++vs) {
        uint32_t a_do[4], a_v[4];
        a_rows(a_do, do_s, kV, R0, 16 * vs, lane);
        a_rows(a_v, v_s, kV, R0, 16 * vs, lane);
#pragma unroll
        for (int nt = 0; nt < kTile / 8; ++nt) {
          uint32_t b[2];  // S^T: B[col][i] = S[i][col], the pair (col, col + 1) one word
          const bf16_dev* row = S + (i0 + 8 * nt + L.g) * V + 16 * vs + 2 * L.t;
          b[0] = *reinterpret_cast<const uint32_t*>(row);
          b[1] = *reinterpret_cast<const uint32_t*>(row + 8);
          mma_bf16(Q[nt], a_do, b);
        }
        mma_rows(Kd, a_v, C_s + i0 * kV, kV, 16 * vs, lane);  // C^T: B[col][i] = C[i0 + i][col]
      }
      scale_rows(Q, s * fast_exp(G_s[r_lo]), s * fast_exp(G_s[r_hi]));
      scale_rows(Kd, inter_lo, inter_hi);
#pragma unroll
      for (int nt = 0; nt < kTile / 8; ++nt) {  // y = k . dk^inter, before dk^intra is added
        if (!want_dg) break;
        const int i = i0 + 8 * nt + 2 * L.t;
        const float2 k_lo = pair_of(k_s + r_lo * kQK + i), k_hi = pair_of(k_s + r_hi * kQK + i);
        y_lo += k_lo.x * Kd[nt][0] + k_lo.y * Kd[nt][1];
        y_hi += k_hi.x * Kd[nt][2] + k_hi.y * Kd[nt][3];
      }
#pragma unroll
      for (int b = 0; b < kWarps; ++b) {
        if (b > w) continue;
        uint32_t a[4];  // dA rows of this warp, keys of block b
        a_rows(a, dA_s, kScoreLd, R0, 16 * b, lane);
        mma_rows_trans(Q, a, k_s + i0, kQK, 16 * b, lane);
      }
      mma_anticausal_rows<kWarps>(Kd, dA_s, kScoreLd, R0, q_s + i0, kQK, w, n, lane);  // dA^T q
#pragma unroll
      for (int nt = 0; nt < kTile / 8; ++nt) {  // x = q . dq - k . dk^intra = q . dq - k . dk + y
        if (!want_dg) break;
        const int i = i0 + 8 * nt + 2 * L.t;
        const float2 q_lo = pair_of(q_s + r_lo * kQK + i), q_hi = pair_of(q_s + r_hi * kQK + i);
        const float2 k_lo = pair_of(k_s + r_lo * kQK + i), k_hi = pair_of(k_s + r_hi * kQK + i);
        x_lo += q_lo.x * Q[nt][0] + q_lo.y * Q[nt][1] - k_lo.x * Kd[nt][0] - k_lo.y * Kd[nt][1];
        x_hi += q_hi.x * Q[nt][2] + q_hi.y * Q[nt][3] - k_hi.x * Kd[nt][2] - k_hi.y * Kd[nt][3];
      }
      store_rows(Q, gp.dq + g.qk(bh, t0) + i0, g.H * K, R0, n, L);
      store_rows(Kd, gp.dk + g.qk(bh, t0) + i0, g.H * K, R0, n, L);
    }
  }
  if (!want_dg) return;  // uniform over the block: no barrier is skipped by some threads only

  // dg: the row sums over the 4 lanes of a row, <S, C> over the block, then one row a thread
  x_lo += y_lo, x_hi += y_hi;
  for (int m = 1; m < 4; m <<= 1) {
    x_lo += __shfl_xor_sync(0xffffffffu, x_lo, m), x_hi += __shfl_xor_sync(0xffffffffu, x_hi, m);
    y_lo += __shfl_xor_sync(0xffffffffu, y_lo, m), y_hi += __shfl_xor_sync(0xffffffffu, y_hi, m);
  }
  if (active && L.t == 0) {
    x_s[r_lo] = x_lo, x_s[r_hi] = x_hi;
    y_s[r_lo] = y_lo, y_s[r_hi] = y_hi;
  }
  float sc = 0.f;
  for (int e = 2 * tid; e < K * V; e += 2 * kBlock) {
    const float2 sv = pair_of(S + e), cv = pair_of(C_s + e / V * kV + e % V);
    sc += sv.x * cv.x + sv.y * cv.y;
  }
  sc = warp_reduce(sc, SumOp{});
  if (lane == 0) sc_s[w] = sc;
  __syncthreads();  // x, y and the per-warp <S, C> complete
  if (tid >= n) return;
  float dg = 0.f;
  for (int u = tid; u < n; ++u) dg += x_s[u];
  for (int j = 0; j < tid; ++j) dg += y_s[j];
  float sum_sc = 0.f;
  for (int x = 0; x < kWarps; ++x) sum_sc += sc_s[x];
  gp.dg[g.head_gate(bh, t0 + tid)] = dg + fast_exp(G_s[n - 1]) * sum_sc;
}

}  // namespace

void scalar_decay_output(const Operands& op, const Geometry& g, const bf16_dev* states,
                         bf16_dev* o) {
  const char* name = "scalar_decay_output (cuda)";
  with_head_sizes(g.K, g.V, name, [&](auto sizes) {
    constexpr int K = decltype(sizes)::K, V = decltype(sizes)::V;
    constexpr size_t smem = output_smem_bytes<K, V>();
    allow_shared_memory(scalar_output_kernel<K, V>, smem, name);
    const dim3 grid(static_cast<unsigned>(g.B * g.H * g.NT), V / output_columns<V>());
    scalar_output_kernel<K, V><<<grid, kBlock, smem, stream()>>>(op, g, states, o);
    CUDA_CHECK(cudaGetLastError());
  });
}

void scalar_decay_gradients(const Operands& op, const GradPointers& gp, const Geometry& g,
                            const bf16_dev* states, const bf16_dev* dstates) {
  const char* name = "scalar_decay_gradients (cuda)";
  with_head_sizes(g.K, g.V, name, [&](auto sizes) {
    constexpr int K = decltype(sizes)::K, V = decltype(sizes)::V;
    constexpr size_t smem = gradients_smem_bytes<K, V>();
    allow_shared_memory(scalar_gradients_kernel<K, V>, smem, name);
    scalar_gradients_kernel<K, V><<<static_cast<unsigned>(g.B * g.H * g.NT), kBlock, smem,
                                     stream()>>>(op, gp, g, states, dstates);
    CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace hla::cuda::gla_mma
