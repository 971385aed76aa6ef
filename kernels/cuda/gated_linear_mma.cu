// The chunked tier of the gated linear family on tensor cores: GLA / HGRN2 (PerKey), simple GLA
// (ScalarPerHead), RetNet (FixedPerHead), linear attention (None), for bf16 q, k, v, o and their
// gradients, f32 gates, states and state gradients (kernels/cuda/recurrence_cuda.h). This file
// holds the state passes of every gate kind and the output and gradient kernels of the per-key
// decay; a decay shared by a head's keys (Kg = 1) takes gated_linear_scalar_mma.cu's. The maths is
// gated_linear_chunk.cu's (its header states the chunk equations and the dg split; the CPU tier
// derives them): chunks of n = kernels::kChunk = 64 rows, the last chunk of a head may be shorter.
// Every product runs on mma.sync.m16n8k16 with bf16 operands and fp32 accumulators; what is
// rounded to bf16 is an operand (an input, an exp-scaled input, the fp32 score matrices A / dA,
// or the state entering a chunk), never a sum.
//
// Layouts (row-major, contiguous device pointers): q, k [B,T,H,K]  v, o [B,T,H,V]
// g [B,T,H] or [B,T,H,K]  h0, hT [B,H,K,V]. Head sizes K in {64, 128}, V in {64, 128, 256}
// (template parameters).
// Scratch, NT = ceil(T / 64) chunks per head:
//   G        [B*H, T, Kg] f32   chunk-local cumulative log decay G_r = g_0 + ... + g_r (Kg = K
//                               for PerKey, else 1; zeros for None)
//   states   [B*H, NT, K, V] bf16  the state entering each chunk (an mma operand)
//   dstates  [B*H, NT, K, V] bf16  C = dL/dS at the end of each chunk (backward only)
//   A        [B*H*NT, 64, 64] bf16  the per-key decay's scores (an mma operand of dv): written by
//                               chunk_output when the caller keeps them for the backward
//                               (GatedLinearBf16Out::scores), else by chunk_scores
//   dA       [B*H*NT, 64, 64] f32   dA_rj = do_r . v_j (backward only)
//
// Secondary chunking (fla's; kernels/cpu/recurrence/gated_linear_chunk.cpp): a chunk is 4
// sub-chunks of 16 rows, one per warp. A pair factor e^{G_r - G_j} (per key) between sub-chunks
// a > b is split against a reference row ref of sub-chunk a's side:
//   q_r k_j e^{G_r - G_j} = (q_r e^{G_r - G_ref}) (k_j e^{G_ref - G_j}),  j < ref <= r
// with both exponents <= 0 (G falls with r), so each factor is in (0, 1] and rounds to bf16
// without overflow. ref = the sub-chunk's first row for A and dq, its last valid row for dk
// (r > ref >= j there). The diagonal 16 x 16 blocks of the gradients take the exact
// exp(G_r - G_j) per key in fp32 SIMT, each lane computing the accumulator entries it owns; in
// the scores A only the quarters on either side of the block's middle row m = R0 + 8 do, its
// lower-left quarter (r >= m > j) running on mma through m like the off-diagonal blocks.
//
// The mma.sync m16n8k16 fragments and their helpers: kernels/cuda/mma_fragments.cuh.
//
// Kernels, kBlock = 128 threads (4 warps) each (chunk_output at V = 256: 8 warps):
//   cumulative_decay    one thread per (b*h, chunk, column of G): the chunk-local cumsum into G
//   states, dstates     gated_linear_states.cu: one block per (b*h, 64-key tile, 64-column tile)
//                       walking the chunks with its state tile in registers
//   chunk_output        one block per (b*h, chunk); warp a: rows 16a..16a+15 (at V = 256 warps
//                       a and a + 4, each 128 value columns, split the scores' keys and add
//                       their halves through shared memory). A rows [16 x 64] as 8 C tiles, then
//                       o = A V + s (Q e^G) S_in; v and S_in (by 64-key slices) staged, read
//                       through ldmatrix.trans
//   chunk_scores        one block per (b*h, chunk); warp a: rows 16a..16a+15. A rows (bf16) and
//                       dA rows (f32) into their scratch; chunk_dA the dA rows alone, when the
//                       forward kept A
//   chunk_dv            one block per (b*h, chunk, 64 value columns): the decayed keys, C, A and
//                       do staged as bf16, dv on mma through ldmatrix
//   chunk_dqk           one block per (b*h, chunk, 32 keys), only those keys' q, k, G staged, dA
//                       from the scratch: dq^off, dk^inter, dk^intra as 3 x 4 C tiles and the dg
//                       terms in two [64,33] f32 tiles, scanned a warp a sub-chunk and a lane a
//                       key column, then joined through the sub-chunks' totals
// Output, scores and dqk stage the chunk's q, k (bf16) and G (f32) rows (dqk: its 32 keys) in
// shared memory first (stage_chunk: 16-byte loads, padded rows); the diagonal blocks read 8 keys
// at a time from there; v and do are read from global memory, and dqk stages its keys' rows
// of the chunk states S and C by 64-column slices in the place of its dg tiles. Shared
// memory per block (K = 64 / 128, V = K): output 54 / 103 KiB (136 at V = 256), scores 36 /
// 67 KiB, dv 36 / 54 KiB, dqk 52 KiB. Registers (ptxas, sm_90, no spills): output 67-128,
// scores 80, dv 58, dqk 128 (bounded for 4 blocks an SM: the kernel waits on loads, and 16
// warps hide more).
// Gradients are overwritten, never accumulated.
#include <cstdint>
#include <cstring>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gated_linear_geometry.cuh"
#include "kernels/cuda/gated_linear_mma.cuh"
#include "kernels/cuda/ldmatrix.cuh"
#include "kernels/cuda/mma_fragments.cuh"
#include "kernels/cuda/recurrence_cuda.h"

namespace hla::cuda {

using kernels::GateKind;

namespace {

using namespace gla_mma;

constexpr int kStateTile = 64;  // keys of a slice of the entering state in chunk_output
constexpr int kKeyTile = 32;            // keys of a chunk_dqk block: 4 C tiles of 8
constexpr int kDvTile = 64;             // value columns of a chunk_dv block: 8 C tiles of 8
constexpr int kScorePad = kN + 1;       // row stride of dA in shared memory
constexpr int kTermPad = kKeyTile + 1;  // row stride of the dg term tiles
constexpr int kScoreElems = kN * kN;    // one chunk's A (or dA) in its scratch
static_assert(kN == kWarps * kSub && kN % 16 == 0, "a chunk is whole sub-chunks of 16 rows");
static_assert(kBlock >= kKeyTile, "one thread per key column of a tile in the dg scan");

// One chunk of one head with q, k and G staged in shared memory (stage_chunk) and v, do read from
// global memory: rows r < n, indexed from the chunk's first row. Staged rows past n are zeros.
// K keys from i0 are staged (all of them, or the key tile of chunk_dqk); accessors take the
// head's key index i in [i0, i0 + K).
//   q_s, k_s [kN, K + 8] bf16    G_s [kN, K + 4] f32, per key
// The pads put the 16-byte reads of 8 consecutive rows on distinct banks.
template <int K>
struct StagedChunk {
  static constexpr int kQK = K + 8, kG = K + 4;
  static constexpr size_t kBytes = sizeof(bf16_dev) * 2 * kN * kQK + sizeof(float) * kN * kG;
  const bf16_dev* q;  // shared
  const bf16_dev* k;  // shared
  const float* G;     // shared
  const bf16_dev* v;
  const bf16_dev* dout;
  int64_t v_stride;  // H*V
  int n;
  int i0;  // the first staged key
  __device__ float q_at(int r, int i) const { return __bfloat162float(q[r * kQK + i - i0]); }
  __device__ float k_at(int r, int i) const { return __bfloat162float(k[r * kQK + i - i0]); }
  __device__ float G_at(int r, int i) const { return G[r * kG + i - i0]; }
  // The pairs (i, i + 1), i even.
  __device__ float2 q2(int r, int i) const { return pair_of(q + r * kQK + i - i0); }
  __device__ float2 k2(int r, int i) const { return pair_of(k + r * kQK + i - i0); }
  __device__ float2 G2(int r, int i) const {
    return *reinterpret_cast<const float2*>(G + r * kG + i - i0);
  }
  // v and do pairs (c, c + 1), c even, as the 32 bits of a fragment register.
  __device__ uint32_t v_bits(int r, int c) const { return bits_of(v + r * v_stride + c); }
  __device__ uint32_t do_bits(int r, int c) const { return bits_of(dout + r * v_stride + c); }
};

// Copies keys i0 .. i0 + K - 1 of chunk c of head bh's q, k and G rows into shared memory at
// `smem` (StagedChunk<K>::kBytes, 16-byte aligned) with the whole block of kThreads; the caller
// meets a barrier before reading them.
template <int K, int kThreads = kBlock>
__device__ StagedChunk<K> stage_chunk(const Operands& op, const Geometry& g, int64_t bh, int64_t c,
                                      unsigned char* smem, int i0 = 0) {
  using S = StagedChunk<K>;
  bf16_dev* q_s = reinterpret_cast<bf16_dev*>(smem);
  bf16_dev* k_s = q_s + kN * S::kQK;
  float* G_s = reinterpret_cast<float*>(k_s + kN * S::kQK);
  const int64_t t0 = c * kN;
  const int n = rows_in_chunk(g, c);
  const bf16_dev* q = op.q + g.qk(bh, t0) + i0;
  const bf16_dev* k = op.k + g.qk(bh, t0) + i0;
  const int64_t stride = g.H * g.K;
  constexpr int kVecs = K / 8;  // 16-byte vectors of 8 bf16 per row
  for (int x = threadIdx.x; x < kN * kVecs; x += kThreads) {
    const int r = x / kVecs, col = x % kVecs * 8;
    uint4 qv = make_uint4(0, 0, 0, 0), kv = qv;
    if (r < n) {
      qv = *reinterpret_cast<const uint4*>(q + r * stride + col);
      kv = *reinterpret_cast<const uint4*>(k + r * stride + col);
    }
    *reinterpret_cast<uint4*>(q_s + r * S::kQK + col) = qv;
    *reinterpret_cast<uint4*>(k_s + r * S::kQK + col) = kv;
  }
  const float* G = op.G + g.g_row(bh, t0) + i0;
  for (int x = threadIdx.x; x < kN * K / 4; x += kThreads) {
    const int r = x / (K / 4), col = x % (K / 4) * 4;
    *reinterpret_cast<float4*>(G_s + r * S::kG + col) =
        r < n ? *reinterpret_cast<const float4*>(G + r * g.K + col)
              : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  return {q_s,       k_s, G_s, op.v + g.vrow(bh, t0), op.dout ? op.dout + g.vrow(bh, t0) : nullptr,
          g.H * g.V, n,   i0};
}

// ---- kernels

__global__ void cumulative_decay_kernel(const float* __restrict__ gate,  // g, or null
                                        GateKind kind, Geometry g,
                                        float* __restrict__ G) {  // [B*H, T, Kg]
  const int64_t work = g.B * g.H * g.NT * g.Kg;
  for (int64_t x = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; x < work;
       x += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = x % g.Kg, rest = x / g.Kg;
    const int64_t bh = rest / g.NT, t0 = rest % g.NT * kN;
    const int64_t t1 = t0 + kN < g.T ? t0 + kN : g.T;
    // RetNet: log gamma_h = log(1 - 2^(-5-h)), kernels::retention_log_gamma
    const float fixed = kind == GateKind::FixedPerHead
                            ? static_cast<float>(log1p(-exp2(-5.0 - static_cast<double>(bh % g.H))))
                            : 0.f;
    float sum = 0.f;
    for (int64_t t = t0; t < t1; ++t) {
      if (kind == GateKind::PerKey)
        sum += gate[g.qk(bh, t) + i];
      else if (kind == GateKind::ScalarPerHead)
        sum += gate[g.head_gate(bh, t)];
      else
        sum += fixed;
      G[g.g_row(bh, t) + i] = sum;
    }
  }
}

// The exact part of warp w's diagonal block: with the middle row m = R0 + 8, the quarters where
// both indices fall on one side of m, in fp32: D[a][x] = sum_i q_ri k_ji e^{G_ri - G_ji} for the
// lane's row r = R0 + g + 8a and column j = R0 + 8a + 2t + x (x < 2), i.e. entry x of the
// upper-left quarter (a = 0: C tile 2w, entries 0, 1) and entry 2 + x of the lower-right one
// (a = 1: C tile 2w + 1). Entries with j > r are garbage (possibly inf) and must be masked by
// the caller; keys are read 8 at a time from the staged rows. The lower-left quarter (r >= m > j)
// factors through m and runs on mma (score_rows). The sums run over the kKeys keys from key0.
template <int K, int kKeys = K>
__device__ void diagonal_scores(const StagedChunk<K>& cv, int R0, const Lane& L, float (&D)[2][2],
                                int key0 = 0) {
  using S = StagedChunk<K>;
#pragma unroll
  for (int a = 0; a < 2; ++a) D[a][0] = D[a][1] = 0.f;
#pragma unroll 1
  for (int i0 = key0; i0 < key0 + kKeys; i0 += 8) {
#pragma unroll
    for (int a = 0; a < 2; ++a) {
      const int r = R0 + L.g + 8 * a;
      float qr[8], Gr[8];
      load8(cv.q + r * S::kQK + i0, qr);
      load8(cv.G + r * S::kG + i0, Gr);
#pragma unroll
      for (int x = 0; x < 2; ++x) {
        const int j = R0 + 8 * a + 2 * L.t + x;
        float kj[8], Gj[8];
        load8(cv.k + j * S::kQK + i0, kj);
        load8(cv.G + j * S::kG + i0, Gj);
#pragma unroll
        for (int e = 0; e < 8; ++e) D[a][x] += qr[e] * kj[e] * fast_exp(Gr[e] - Gj[e]);
      }
    }
  }
}

// Rows R0..R0+15 (R0 = 16 w < n) of the chunk's scores into C tiles, tile nt = columns
// 8nt..8nt+7:  A_rj = s sum_i q_ri k_ji e^{G_ri - G_ji} for j <= r < n, 0 elsewhere.
// Sub-chunks b < w on mma against the reference row R0; the diagonal sub-chunk's lower-left
// quarter on mma against its middle row, the rest of it in fp32.
// kKeyUnroll: unroll factor of the key steps (the gradients kernel keeps more tiles live).
// The sums over i run over the kKeys keys from key0 (all K by default): the scores of a key
// range, whose masked and scaled parts add up to A.
template <int K, int kKeyUnroll, int kKeys = K>
__device__ void score_rows(const StagedChunk<K>& cv, int w, const Lane& L, float s,
                           float (&A)[kN / 8][4], int key0 = 0) {
  const int R0 = kSub * w;
  zero(A);
  if (w > 0) {
#pragma unroll kKeyUnroll
    for (int ks = 0; ks < kKeys / 16; ++ks) {
      uint32_t a[4];
      a_fragment2(a, L, [&](int m, int kk) {  // q_r e^{G_r - G_ref}
        const int r = R0 + m, i = key0 + 16 * ks + kk;
        if (r >= cv.n) return make_float2(0.f, 0.f);
        const float2 q = cv.q2(r, i), G = cv.G2(r, i), G0 = cv.G2(R0, i);
        return make_float2(q.x * fast_exp(G.x - G0.x), q.y * fast_exp(G.y - G0.y));
      });
#pragma unroll
      for (int b = 0; b < kWarps - 1; ++b) {
        if (b >= w) continue;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          uint32_t bf[2];
          b_fragment2(bf, L, [&](int kk, int nn) {  // (k_j e^{G_ref - G_j})^T, j < R0 < n
            const int j = 16 * b + 8 * half + nn, i = key0 + 16 * ks + kk;
            const float2 k = cv.k2(j, i), G = cv.G2(j, i), G0 = cv.G2(R0, i);
            return make_float2(k.x * fast_exp(G0.x - G.x), k.y * fast_exp(G0.y - G.y));
          });
          mma_bf16(A[2 * b + half], a, bf);
        }
      }
    }
  }
  // the diagonal block: its lower-left quarter (rows m.., columns R0..m-1, m = R0 + 8) as
  //   (q_r e^{G_r - G_m}) (k_j e^{G_m - G_j})^T  on mma, both factors <= 1 (j < m <= r),
  // in the C tile of columns R0..R0+7 whose upper rows (the A operand's zero rows) stay 0;
  // the two quarters on either side of m exactly (diagonal_scores)
  const int m = R0 + 8;
  float lower_left[4] = {0.f, 0.f, 0.f, 0.f};
  if (m < cv.n) {
#pragma unroll kKeyUnroll
    for (int ks = 0; ks < kKeys / 16; ++ks) {
      uint32_t a[4];
      a_fragment2(a, L, [&](int mm, int kk) {  // rows R0 + mm, mm >= 8 only
        const int r = R0 + mm, i = key0 + 16 * ks + kk;
        if (mm < 8 || r >= cv.n) return make_float2(0.f, 0.f);
        const float2 q = cv.q2(r, i), G = cv.G2(r, i), Gm = cv.G2(m, i);
        return make_float2(q.x * fast_exp(G.x - Gm.x), q.y * fast_exp(G.y - Gm.y));
      });
      uint32_t bf[2];
      b_fragment2(bf, L, [&](int kk, int nn) {  // columns j = R0 + nn < m < n
        const int j = R0 + nn, i = key0 + 16 * ks + kk;
        const float2 k = cv.k2(j, i), G = cv.G2(j, i), Gm = cv.G2(m, i);
        return make_float2(k.x * fast_exp(Gm.x - G.x), k.y * fast_exp(Gm.y - G.y));
      });
      mma_bf16(lower_left, a, bf);
    }
  }
  float D[2][2];
  diagonal_scores<K, kKeys>(cv, R0, L, D, key0);
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt) {
    if (nt / 2 != w) continue;
    if (nt % 2 == 0) {  // columns R0..R0+7: upper-left exact, lower-left from the mma
      A[nt][0] = D[0][0], A[nt][1] = D[0][1], A[nt][2] = lower_left[2], A[nt][3] = lower_left[3];
    } else {  // columns R0+8..R0+15: the upper rows are masked, lower-right exact
      A[nt][0] = A[nt][1] = 0.f, A[nt][2] = D[1][0], A[nt][3] = D[1][1];
    }
  }
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = R0 + acc_row(L, e), j = 8 * nt + acc_col(L, e);
      A[nt][e] = j <= r && r < cv.n ? s * A[nt][e] : 0.f;
    }
}

// chunk_output's blocks hold 128 output columns a warp at most: V = 256 takes 8 warps, two a
// sub-chunk (column halves h = 0, 1), and each pair splits the scores' keys (half h sums keys
// h K / 2 .. + K / 2 - 1) and adds the halves through shared memory, so a chunk's scores are
// computed once.
template <int V>
constexpr int output_halves() {
  return V > 128 ? 2 : 1;
}
// Shared memory of chunk_output_kernel: the staged rows, v [kN, V + 8] and a 64-key slice of the
// entering state [64, V + 8] (bf16); the halves' partial scores pass through the slice's space.
template <int K, int V>
constexpr size_t output_smem_bytes() {
  return StagedChunk<K>::kBytes + sizeof(bf16_dev) * (kN + kStateTile) * (V + 8);
}

// o_r = s (q_r e^{G_r})^T S_in + sum_{j<=r} A_rj v_j for the rows of sub-chunk w % 4 and the
// value columns V / halves (w / 4) .. + V / halves - 1. v and S_in (by 64-key slices) are staged
// in shared memory and read as B fragments through ldmatrix.trans. With `scores` the warps of
// the first half also store the chunk's A as the product read it (bf16, zeros where masked), for
// the backward.
template <int K, int V>
__global__ void __launch_bounds__(kBlock * output_halves<V>())
    chunk_output_kernel(Operands op, Geometry g,
                        const bf16_dev* __restrict__ states,  // [B*H, NT, K, V]
                        bf16_dev* __restrict__ o,             // [B,T,H,V] overwritten
                        bf16_dev* __restrict__ scores) {      // [B*H*NT, 64, 64] or null
  constexpr int kHalves = output_halves<V>(), kThreads = kBlock * kHalves;
  constexpr int VT = V / kHalves;  // output columns of a warp
  constexpr int kLd = V + 8;
  constexpr int kKeys = K / kHalves;  // keys of a warp's scores
  extern __shared__ __align__(16) unsigned char gla_mma_smem[];
  const int64_t bh = blockIdx.x / g.NT, c = blockIdx.x % g.NT;
  const StagedChunk<K> cv = stage_chunk<K, kThreads>(op, g, bh, c, gla_mma_smem);
  bf16_dev* v_s = reinterpret_cast<bf16_dev*>(gla_mma_smem + StagedChunk<K>::kBytes);
  bf16_dev* S_s = v_s + kN * kLd;
  stage<kThreads>(v_s, kLd, cv.v, cv.v_stride, cv.n, V, kN);
  __syncthreads();  // staged rows complete
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int sub = kHalves == 1 ? w : w % kWarps, h = kHalves == 1 ? 0 : w / kWarps;
  const int R0 = kSub * sub;
  const bool active = R0 < cv.n;  // inactive warps still meet every barrier
  const Lane L = lane_of();
  const float s = op.scale;

  float O[VT / 8][4];
  zero(O);
  // intra-chunk: the A tiles of sub-chunk b are the A operand, v rows 16b.. the B operand
  {
    float A[kN / 8][4];
    zero(A);
    if (active) score_rows<K, kKeys / 16, kKeys>(cv, sub, L, s, A, h * kKeys);
    if constexpr (kHalves == 2) {
      // the pair's halves through S_s: [warp][C tile entry][lane], summed low half first
      float* part = reinterpret_cast<float*>(S_s);
      static_assert(2 * kWarps * kN / 8 * 4 * 32 * sizeof(float) <=
                        kStateTile * kLd * sizeof(bf16_dev),
                    "the partial scores fit the state slice's space");
#pragma unroll
      for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) part[(w * (kN / 2) + 4 * nt + e) * 32 + lane] = A[nt][e];
      __syncthreads();
      const float* lo = part + sub * (kN / 2) * 32;
      const float* hi = part + (kWarps + sub) * (kN / 2) * 32;
#pragma unroll
      for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int at = (4 * nt + e) * 32 + lane;
          A[nt][e] = lo[at] + hi[at];
        }
      __syncthreads();  // every pair done reading before the state slices overwrite S_s
    }
    if (scores && h == 0)
      store_rows(A, scores + kScoreElems * int64_t(blockIdx.x), kN, R0, kN, L);
    if (active) mma_causal_rows(O, A, v_s + h * VT, kLd, sub, lane);
  }
  // inter-chunk: s (Q e^G) [16 x K] times the entering state [K x V], by 64-key slices
  const bf16_dev* S_in = states + g.chunk_state(bh, c);
  for (int k0 = 0; k0 < K; k0 += kStateTile) {
    if (k0 > 0) __syncthreads();  // every warp done with the previous slice
    stage<kThreads>(S_s, kLd, S_in + k0 * V, V, kStateTile, V, kStateTile);
    __syncthreads();  // slice staged
    if (!active) continue;
#pragma unroll
    for (int ks = 0; ks < kStateTile / 16; ++ks) {
      uint32_t a[4];
      a_fragment2(a, L, [&](int m, int kk) {
        const int r = R0 + m, i = k0 + 16 * ks + kk;
        if (r >= cv.n) return make_float2(0.f, 0.f);
        const float2 q = cv.q2(r, i), G = cv.G2(r, i);
        return make_float2(s * q.x * fast_exp(G.x), s * q.y * fast_exp(G.y));
      });
      mma_rows_trans(O, a, S_s + h * VT, kLd, 16 * ks, lane);
    }
  }
  if (!active) return;
  store_rows(O, o + g.vrow(bh, c * kN) + h * VT, cv.v_stride, R0, cv.n, L);
}

// The backward of one chunk in three kernels, so that each holds what it reads in shared memory
// and more warps fit a multiprocessor (equations in gated_linear_chunk.cu's header):
//   chunk_scores   A_rj = s sum_i q_ri k_ji e^{G_ri - G_ji} (bf16) and dA_rj = do_r . v_j (f32,
//                  j <= r) of every chunk; chunk_dA dA alone when the forward kept A
//   chunk_dv       per 64 value columns: dv_j = C^T (k_j e^{G_last - G_j}) + sum_{r>=j} A_rj do_r,
//                  the decayed keys as the backward's forward state walk wrote them
//   chunk_dqk      per 32 keys, C = dstates[c]:
//     dq_r = s e^{G_r} (S do_r) + s sum_{j<=r} dA_rj k_j e^{G_r - G_j}
//     dk_j = e^{G_last - G_j} (C v_j) + s sum_{r>=j} dA_rj q_r e^{G_r - G_j}
//     dg_r = sum_{u>=r} (q_u dq_u^off - k_u dk_u^intra) + e^{G_last} sum_v (S C)
//            + sum_{j<r} k_j dk_j^inter       (per key)
//                  with the gate factors applied through the reference rows.
// dA_rj = do_r . v_j (j <= r < n, zeros elsewhere) for warp w's rows R0 = 16 w .. R0 + 15 of a
// chunk, its do and v rows (row stride `stride`) read from global memory, into its dA [64, 64].
template <int V>
__device__ void dA_rows(const bf16_dev* v, const bf16_dev* dout, int64_t stride, int n, int w,
                        const Lane& L, float* dA) {
  const int R0 = kSub * w;
  float P[kN / 8][4];
  zero(P);
  if (R0 < n) {
#pragma unroll 2
    for (int vs = 0; vs < V / 16; ++vs) {
      uint32_t a[4];
      a_fragment_bits(a, L, [&](int m, int kk) {
        const int r = R0 + m;
        return r < n ? bits_of(dout + r * stride + 16 * vs + kk) : 0u;
      });
#pragma unroll
      for (int b = 0; b < kWarps; ++b) {
        if (b > w) continue;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          uint32_t bf[2];
          b_fragment_bits(bf, L, [&](int kk, int nn) {  // v^T: B[col][j] = v_j[col]
            const int j = 16 * b + 8 * half + nn;
            return j < n ? bits_of(v + j * stride + 16 * vs + kk) : 0u;
          });
          mma_bf16(P[2 * b + half], a, bf);
        }
      }
    }
  }
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = R0 + acc_row(L, e), j = 8 * nt + acc_col(L, e);
      dA[r * kN + j] = j <= r && r < n ? P[nt][e] : 0.f;
    }
}

// A (bf16, zeros where masked) and dA (f32) of every chunk.
template <int K, int V>
__global__ void __launch_bounds__(kBlock)
    chunk_scores_kernel(Operands op, Geometry g, bf16_dev* __restrict__ scores,
                        float* __restrict__ dscores) {
  extern __shared__ __align__(16) unsigned char gla_mma_smem[];
  const int64_t bh = blockIdx.x / g.NT, c = blockIdx.x % g.NT;
  const StagedChunk<K> cv = stage_chunk<K>(op, g, bh, c, gla_mma_smem);
  const int w = threadIdx.x / 32, R0 = kSub * w;
  const Lane L = lane_of();
  __syncthreads();  // staged rows complete
  {
    float P[kN / 8][4];
    zero(P);
    if (R0 < cv.n) score_rows<K, 2>(cv, w, L, op.scale, P);
    store_rows(P, scores + kScoreElems * int64_t(blockIdx.x), kN, R0, kN, L);
  }
  dA_rows<V>(cv.v, cv.dout, cv.v_stride, cv.n, w, L,
             dscores + kScoreElems * int64_t(blockIdx.x));
}

// dA of every chunk, its A kept by the forward: do and v alone, from global memory.
template <int V>
__global__ void __launch_bounds__(kBlock)
    chunk_dA_kernel(Operands op, Geometry g, float* __restrict__ dscores) {
  const int64_t bh = blockIdx.x / g.NT, c = blockIdx.x % g.NT;
  dA_rows<V>(op.v + g.vrow(bh, c * kN), op.dout + g.vrow(bh, c * kN), g.H * g.V,
             rows_in_chunk(g, c), threadIdx.x / 32, lane_of(),
             dscores + kScoreElems * int64_t(blockIdx.x));
}

// Shared memory of chunk_dv_kernel: k_j e^{G_last - G_j} [kN][K + 8], the block's columns of C
// [K][72], A and do [kN][72] (bf16).
template <int K>
constexpr size_t dv_smem_bytes() {
  return sizeof(bf16_dev) * (kN * (K + 8) + K * (kDvTile + 8) + 2 * kN * (kDvTile + 8));
}

// dv of one chunk's 64 value columns v0 = 64 blockIdx.y: the decayed keys k_j e^{G_last - G_j}
// as the state walk wrote them, C, A and do, all bf16, staged as they are; both products through
// ldmatrix, summed in the order of the single-kernel form (the keys, then A's blocks).
template <int K, int V>
__global__ void __launch_bounds__(kBlock)
    chunk_dv_kernel(Operands op, GradPointers gp, Geometry g,
                    const bf16_dev* __restrict__ decayed,    // [B*H, T, K]
                    const bf16_dev* __restrict__ scores,     // [B*H*NT, 64, 64] A
                    const bf16_dev* __restrict__ dstates) {  // [B*H, NT, K, V] leaving
  extern __shared__ __align__(16) unsigned char gla_mma_smem[];
  constexpr int kKd = K + 8, kLd = kDvTile + 8;
  bf16_dev* kd_s = reinterpret_cast<bf16_dev*>(gla_mma_smem);  // [kN][kKd]
  bf16_dev* C_s = kd_s + kN * kKd;                              // [K][kLd]
  bf16_dev* A_s = C_s + K * kLd;                                // [kN][kLd]
  bf16_dev* do_s = A_s + kN * kLd;                              // [kN][kLd]
  const int64_t bh = blockIdx.x / g.NT, c = blockIdx.x % g.NT, t0 = c * kN;
  const int v0 = kDvTile * blockIdx.y, n = rows_in_chunk(g, c);
  const bf16_dev* kd = decayed + (bh * g.T + t0) * K;
  const bf16_dev* A = scores + kScoreElems * int64_t(blockIdx.x);
  const bf16_dev* C = dstates + g.chunk_state(bh, c) + v0;
  const bf16_dev* dout = op.dout + g.vrow(bh, t0) + v0;
  stage(kd_s, kKd, kd, K, n, K, kN);
  stage(C_s, kLd, C, V, K, kDvTile, K);
  static_assert(kDvTile == kN, "A_s holds A's rows whole");
  stage(A_s, kLd, A, kN, kN, kN, kN);
  stage(do_s, kLd, dout, g.H * V, n, kDvTile, kN);
  __syncthreads();
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32, R0 = kSub * w;
  if (R0 >= n) return;  // no barrier follows
  const Lane L = lane_of();
  float D[kDvTile / 8][4];
  zero(D);
#pragma unroll 2
  for (int ks = 0; ks < K / 16; ++ks) {
    uint32_t a[4];
    a_rows(a, kd_s, kKd, R0, 16 * ks, lane);
    mma_rows_trans(D, a, C_s, kLd, 16 * ks, lane);
  }
  mma_anticausal_rows<kWarps>(D, A_s, kLd, R0, do_s, kLd, w, n, lane);  // A^T do
  bf16_dev* dv_rows = gp.dv + g.vrow(bh, t0) + v0;
#pragma unroll
  for (int nt = 0; nt < kDvTile / 8; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int j = R0 + L.g + 8 * h;
      if (j < n)
        *reinterpret_cast<__nv_bfloat162*>(dv_rows + j * g.H * V + 8 * nt + 2 * L.t) =
            __floats2bfloat162_rn(D[nt][2 * h], D[nt][2 * h + 1]);
    }
}

// Shared memory of chunk_dqk_kernel: the key tile's staged rows, dA [kN, kScorePad], the two dg
// term tiles [kN, kTermPad] and the key tile's sums of S * C (f32).
constexpr size_t dqk_smem_bytes() {
  return StagedChunk<kKeyTile>::kBytes +
         sizeof(float) * (kN * kScorePad + 2 * kN * kTermPad + kKeyTile);
}

// dq, dk, dg of one chunk's keys i0 = 32 blockIdx.y .. i0 + 31. Four blocks an SM: 128 registers,
// 4 x 52 KiB of shared memory.
template <int V>
__global__ void __launch_bounds__(kBlock, 4)
    chunk_dqk_kernel(Operands op, GradPointers gp, Geometry g, const float* __restrict__ dscores,
                     const bf16_dev* __restrict__ states,     // [B*H, NT, K, V] entering
                     const bf16_dev* __restrict__ dstates) {  // [B*H, NT, K, V] leaving
  extern __shared__ __align__(16) unsigned char gla_mma_smem[];
  const int64_t bh = blockIdx.x / g.NT, c = blockIdx.x % g.NT;
  const int i0 = kKeyTile * blockIdx.y;
  const StagedChunk<kKeyTile> cv = stage_chunk<kKeyTile>(op, g, bh, c, gla_mma_smem, i0);
  float* dA_s = reinterpret_cast<float*>(gla_mma_smem + StagedChunk<kKeyTile>::kBytes);
  float* x_s = dA_s + kN * kScorePad;  // [kN, kTermPad] q dq^off - k dk^intra
  float* y_s = x_s + kN * kTermPad;    // [kN, kTermPad] k dk^inter
  float* sc_s = y_s + kN * kTermPad;   // [kKeyTile] sum_v S * C per key
  const float* dA = dscores + kScoreElems * int64_t(blockIdx.x);
#pragma unroll
  for (int x = threadIdx.x; x < kScoreElems / 4; x += kBlock) {  // 16 bytes a load
    const float4 a = reinterpret_cast<const float4*>(dA)[x];
    float* row = dA_s + 4 * x / kN * kScorePad + 4 * x % kN;
    row[0] = a.x, row[1] = a.y, row[2] = a.z, row[3] = a.w;
  }
  const int tid = threadIdx.x, w = tid / 32, lane = tid % 32, R0 = kSub * w;
  const bool active = R0 < cv.n;  // inactive warps still meet every barrier
  const Lane L = lane_of();
  const float s = op.scale;
  const int last = cv.n - 1;
  const int ref_last = R0 + kSub - 1 < last ? R0 + kSub - 1 : last;  // dk's reference row
  const bf16_dev* S_in = states + g.chunk_state(bh, c);
  const bf16_dev* C = dstates + g.chunk_state(bh, c);
  __syncthreads();  // staged rows and dA complete

  // X = S do_r, Y = C v_r (the rows' dO / V [16 x V] times S^T / C^T [V x 32 keys]) and
  // sc_j = sum_v S_jv C_jv by 64-column slices of V: the block stages the slice of S and C for
  // its keys in x_s's place (free until the dg terms), each thread copying the same 16 bytes of
  // both and summing their products on the way; the products read the slices through ldmatrix
  constexpr int kKeyTiles = kKeyTile / 8;
  constexpr int kSlice = 64, kSliceLd = kSlice + 8, kVecs = kSlice / 8;
  constexpr int kKeyStep = kBlock / kVecs;  // keys apart of a thread's two pieces
  static_assert(V % kSlice == 0 && kKeyTile == 2 * kKeyStep, "two 16-byte pieces a thread");
  static_assert(2 * kKeyTile * kSliceLd * sizeof(bf16_dev) <= 2 * kN * kTermPad * sizeof(float),
                "the slices fit in x_s and y_s");
  bf16_dev* S_slice = reinterpret_cast<bf16_dev*>(x_s);
  bf16_dev* C_slice = S_slice + kKeyTile * kSliceLd;
  float X[kKeyTiles][4], Y[kKeyTiles][4];
  zero(X);
  zero(Y);
  float sc_part[2] = {0.f, 0.f};  // keys tid / kVecs and tid / kVecs + kKeyStep
  for (int v0 = 0; v0 < V; v0 += kSlice) {
    if (v0 > 0) __syncthreads();  // every warp done with the previous slice
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int key = tid / kVecs + h * kKeyStep, col = tid % kVecs * 8;
      const uint4 s_bits = *reinterpret_cast<const uint4*>(S_in + (i0 + key) * V + v0 + col);
      const uint4 c_bits = *reinterpret_cast<const uint4*>(C + (i0 + key) * V + v0 + col);
      *reinterpret_cast<uint4*>(S_slice + key * kSliceLd + col) = s_bits;
      *reinterpret_cast<uint4*>(C_slice + key * kSliceLd + col) = c_bits;
      float sv[8], cvv[8];
      unpack8(s_bits, sv);
      unpack8(c_bits, cvv);
#pragma unroll
      for (int e = 0; e < 8; ++e) sc_part[h] += sv[e] * cvv[e];
    }
    __syncthreads();  // slice staged
    if (!active) continue;
#pragma unroll
    for (int ks = 0; ks < kSlice / 16; ++ks) {
      const int col = v0 + 16 * ks;
      uint32_t a_do[4], a_v[4];
      a_fragment_bits(a_do, L, [&](int m, int kk) {
        const int r = R0 + m;
        return r < cv.n ? cv.do_bits(r, col + kk) : 0u;
      });
      a_fragment_bits(a_v, L, [&](int m, int kk) {
        const int r = R0 + m;
        return r < cv.n ? cv.v_bits(r, col + kk) : 0u;
      });
      mma_rows(X, a_do, S_slice, kSliceLd, 16 * ks, lane);
      mma_rows(Y, a_v, C_slice, kSliceLd, 16 * ks, lane);
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // sc: the kVecs lanes of a key
    float sc = sc_part[h];
#pragma unroll
    for (int m = 1; m < kVecs; m <<= 1) sc += __shfl_xor_sync(0xffffffffu, sc, m);
    if (tid % kVecs == 0) sc_s[tid / kVecs + h * kKeyStep] = sc;
  }
  __syncthreads();  // every slice read: x_s and y_s are free for the dg terms

  if (active) {
    float Z[kKeyTiles][4];
    zero(Z);
    // dq^off: (e^{G_ref} S do_r + sum_{b<w} dA_rj k_j e^{G_ref - G_j}) s e^{G_r - G_ref}
#pragma unroll
    for (int nt = 0; nt < kKeyTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) X[nt][e] *= fast_exp(cv.G_at(R0, i0 + 8 * nt + acc_col(L, e)));
#pragma unroll
    for (int b = 0; b < kWarps - 1; ++b) {
      if (b >= w) continue;
      uint32_t a[4];
      a_fragment(a, L, [&](int m, int kk) { return dA_s[(R0 + m) * kScorePad + 16 * b + kk]; });
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt) {
        uint32_t bf[2];
        b_fragment(bf, L, [&](int kk, int nn) {  // j < R0 < n
          const int j = 16 * b + kk, i = i0 + 8 * nt + nn;
          return cv.k_at(j, i) * fast_exp(cv.G_at(R0, i) - cv.G_at(j, i));
        });
        mma_bf16(X[nt], a, bf);
      }
    }
    // dk^intra: s e^{G_ref - G_j} sum_{b>w} dA_rj (q_r e^{G_r - G_ref}), ref = ref_last
#pragma unroll
    for (int b = 1; b < kWarps; ++b) {
      if (b <= w || 16 * b >= cv.n) continue;
      uint32_t a[4];
      a_fragment(a, L, [&](int m, int kk) { return dA_s[(16 * b + kk) * kScorePad + R0 + m]; });
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt) {
        uint32_t bf[2];
        b_fragment(bf, L, [&](int kk, int nn) {
          const int r = 16 * b + kk, i = i0 + 8 * nt + nn;
          return r < cv.n ? cv.q_at(r, i) * fast_exp(cv.G_at(r, i) - cv.G_at(ref_last, i)) : 0.f;
        });
        mma_bf16(Z[nt], a, bf);
      }
    }
    // the gate factors of the off-diagonal terms, before the diagonal's sums, so that Y is
    // spent and stored as y_s = k dk^inter, X holds dq^off less the diagonal's part and Z dk
    // less the diagonal's and the j = r terms:
    //   X = s e^{G_r - G_R0} X     Z = e^{G_last - G_r} Y + s e^{G_ref - G_r} Z
    float Gr[2][2 * kKeyTiles];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt) {
        const float2 G = cv.G2(R0 + L.g + 8 * h, i0 + 8 * nt + 2 * L.t);
        Gr[h][2 * nt] = G.x, Gr[h][2 * nt + 1] = G.y;
      }
#pragma unroll
    for (int nt = 0; nt < kKeyTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = R0 + acc_row(L, e), ic = 8 * nt + acc_col(L, e), i = i0 + ic;
        const float G_r = Gr[e / 2][2 * nt + e % 2];
        const float dk_inter = fast_exp(cv.G_at(last, i) - G_r) * Y[nt][e];
        X[nt][e] *= s * fast_exp(G_r - cv.G_at(R0, i));
        Z[nt][e] = dk_inter + s * Z[nt][e] * fast_exp(cv.G_at(ref_last, i) - G_r);
        if (r < cv.n) y_s[r * kTermPad + ic] = cv.k_at(r, i) * dk_inter;
      }
    // the diagonal sub-chunk in fp32: for the lane's rows r = R0 + g + 8h and keys
    // i = i0 + 8 (x / 2) + 2t + x % 2, the s-less sums over j in [R0, r) and u in (r, ref]
    //   before = sum_j dA_rj k_ji e^{G_ri - G_ji}    after = sum_u dA_ur q_ui e^{G_ui - G_ri}
    float before[2][2 * kKeyTiles], after[2][2 * kKeyTiles];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int x = 0; x < 2 * kKeyTiles; ++x) before[h][x] = after[h][x] = 0.f;
#pragma unroll 2
    for (int j = R0; j <= ref_last; ++j) {
      float kj[2 * kKeyTiles], qj[2 * kKeyTiles], Gj[2 * kKeyTiles];
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt) {
        const int i = i0 + 8 * nt + 2 * L.t;
        const float2 k = cv.k2(j, i), q = cv.q2(j, i), G = cv.G2(j, i);
        kj[2 * nt] = k.x, kj[2 * nt + 1] = k.y;
        qj[2 * nt] = q.x, qj[2 * nt + 1] = q.y;
        Gj[2 * nt] = G.x, Gj[2 * nt + 1] = G.y;
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = R0 + L.g + 8 * h;
        if (j < r) {
          const float d = dA_s[r * kScorePad + j];
#pragma unroll
          for (int x = 0; x < 2 * kKeyTiles; ++x)
            before[h][x] += d * kj[x] * fast_exp(Gr[h][x] - Gj[x]);
        } else if (j > r) {
          const float d = dA_s[j * kScorePad + r];
#pragma unroll
          for (int x = 0; x < 2 * kKeyTiles; ++x)
            after[h][x] += d * qj[x] * fast_exp(Gj[x] - Gr[h][x]);
        }
      }
    }
    // dq, dk and x = q dq^off - k dk^intra = q dq^off - k (dk less the j = r terms) + y
#pragma unroll
    for (int nt = 0; nt < kKeyTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e / 2, x = 2 * nt + e % 2;
        const int r = R0 + acc_row(L, e), ic = 8 * nt + acc_col(L, e), i = i0 + ic;
        if (r >= cv.n) continue;
        const float dq_off = X[nt][e] + s * before[h][x];
        const float dk_off = Z[nt][e] + s * after[h][x];  // dk^inter + dk^intra
        const float diag = s * dA_s[r * kScorePad + r];   // the j = r terms
        const float q_ri = cv.q_at(r, i), k_ri = cv.k_at(r, i);
        const int64_t at = g.qk(bh, c * kN + r) + i;
        gp.dq[at] = __float2bfloat16_rn(dq_off + diag * k_ri);
        gp.dk[at] = __float2bfloat16_rn(dk_off + diag * q_ri);
        x_s[r * kTermPad + ic] = q_ri * dq_off - k_ri * dk_off + y_s[r * kTermPad + ic];
      }
  }
  __syncthreads();  // dg terms written; dA_s is free
  // dg_r = sum_{u>=r} x_u + e^{G_last} sc + sum_{u<r} y_u for the lane's key column: warp w
  // scans its sub-chunk's rows, then adds the totals of the sub-chunks after it (x) and before
  // it (y), kept in dA_s [2][kWarps][kKeyTile]
  static_assert(kKeyTile == 32, "a lane a key column");
  const int key = lane;
  float x_suffix[kSub], y_prefix[kSub], x_total = 0.f, y_total = 0.f;
#pragma unroll
  for (int m = kSub - 1; m >= 0; --m) {
    const int r = R0 + m;
    x_total += r < cv.n ? x_s[r * kTermPad + key] : 0.f;
    x_suffix[m] = x_total;
  }
#pragma unroll
  for (int m = 0; m < kSub; ++m) {
    const int r = R0 + m;
    y_prefix[m] = y_total;
    y_total += r < cv.n ? y_s[r * kTermPad + key] : 0.f;
  }
  float* x_totals = dA_s;
  float* y_totals = dA_s + kWarps * kKeyTile;
  x_totals[w * kKeyTile + key] = x_total;
  y_totals[w * kKeyTile + key] = y_total;
  __syncthreads();  // every sub-chunk's totals written
  float x_after = 0.f, y_before = fast_exp(cv.G_at(last, i0 + key)) * sc_s[key];
#pragma unroll
  for (int b = 0; b < kWarps; ++b) {
    if (b > w) x_after += x_totals[b * kKeyTile + key];
    if (b < w) y_before += y_totals[b * kKeyTile + key];
  }
#pragma unroll
  for (int m = 0; m < kSub; ++m) {
    const int r = R0 + m;
    if (r < cv.n)
      gp.dg[g.qk(bh, c * kN + r) + i0 + key] = x_suffix[m] + x_after + y_prefix[m] + y_before;
  }
}

// ---- launchers

Geometry geometry_of(const GatedLinearBf16Args& a, const char* op) {
  const kernels::RecDims& d = a.d;
  HLA_CHECK(d.B > 0 && d.T > 0 && d.H > 0, op << ": B,T,H = " << d.B << "," << d.T << "," << d.H);
  HLA_CHECK(a.q && a.k && a.v, op << ": q, k and v are required");
  const bool has_gate = a.gate == GateKind::ScalarPerHead || a.gate == GateKind::PerKey;
  HLA_CHECK(has_gate == (a.g != nullptr),
            op << ": g must be given exactly for ScalarPerHead / PerKey");
  check_aligned(a.q, op, "q");
  check_aligned(a.k, op, "k");
  check_aligned(a.v, op, "v");
  check_aligned(a.g, op, "g");
  const int64_t NT = (d.T + kN - 1) / kN;
  if (d.B * d.H * NT >= (int64_t(1) << 31))
    throw Error(op, "B*H*ceil(T/64) < 2^31 chunks (one thread block each)",
                std::to_string(d.B * d.H * NT), "split the batch or the sequence");
  return {d.B, d.T, d.H, d.K, d.V, NT, a.gate == GateKind::PerKey ? d.K : 1};
}

Operands operands_of(const GatedLinearBf16Args& a, const bf16* dout, const Tensor& G) {
  return {reinterpret_cast<const bf16_dev*>(a.q),
          reinterpret_cast<const bf16_dev*>(a.k),
          reinterpret_cast<const bf16_dev*>(a.v),
          reinterpret_cast<const bf16_dev*>(dout),
          G.data<float>(),
          static_cast<float>(a.scale)};
}

Tensor cumulative_decay(const GatedLinearBf16Args& a, const Geometry& g) {
  Tensor G = Tensor::empty({g.B * g.H * g.T * g.Kg}, DType::f32, Device::CUDA);
  cumulative_decay_kernel<<<grid_for(g.B * g.H * g.NT * g.Kg), kThreads, 0, stream()>>>(
      a.g, a.gate, g, G.data<float>());
  CUDA_CHECK(cudaGetLastError());
  return G;
}

Tensor chunk_states(const Geometry& g) {
  return Tensor::empty({g.B * g.H * g.NT * g.K * g.V}, DType::bf16, Device::CUDA);
}


}  // namespace

void gated_linear_mma_forward(const GatedLinearBf16Args& a, const GatedLinearBf16Out& out) {
  const char* op = "gated_linear_mma_forward (cuda)";
  const Geometry g = geometry_of(a, op);
  HLA_CHECK(out.o, "o is required");
  with_head_sizes(a.d.K, a.d.V, op, [&](auto sizes) {
    constexpr int K = decltype(sizes)::K, V = decltype(sizes)::V;
    const Tensor G = cumulative_decay(a, g);
    const Operands ops = operands_of(a, nullptr, G);
    Tensor states = chunk_states(g);
    chunk_states(ops, g, ops.v, a.h0, states.data<bf16_dev>(), out.hT, false);
    if (g.Kg == 1)
      return scalar_decay_output(ops, g, states.data<bf16_dev>(),
                                 reinterpret_cast<bf16_dev*>(out.o));
    constexpr size_t smem = output_smem_bytes<K, V>();
    allow_shared_memory(chunk_output_kernel<K, V>, smem, op);
    const unsigned grid = static_cast<unsigned>(g.B * g.H * g.NT);
    chunk_output_kernel<K, V><<<grid, kBlock * output_halves<V>(), smem, stream()>>>(
        ops, g, states.data<bf16_dev>(), reinterpret_cast<bf16_dev*>(out.o),
        reinterpret_cast<bf16_dev*>(out.scores));
    CUDA_CHECK(cudaGetLastError());
  });
}

void gated_linear_mma_backward(const GatedLinearBf16Args& a, const GatedLinearBf16Grad& grad) {
  const char* op = "gated_linear_mma_backward (cuda)";
  const Geometry g = geometry_of(a, op);
  HLA_CHECK(grad.dout && grad.dq && grad.dk && grad.dv, "dout, dq, dk and dv are required");
  check_aligned(grad.dout, op, "dout");
  check_aligned(grad.dv, op, "dv");
  const bool want_dg = a.gate == GateKind::ScalarPerHead || a.gate == GateKind::PerKey;
  HLA_CHECK(!want_dg || grad.dg, "dg is required for a gate tensor");
  with_head_sizes(a.d.K, a.d.V, op, [&](auto sizes) {
    constexpr int K = decltype(sizes)::K, V = decltype(sizes)::V;
    const Tensor G = cumulative_decay(a, g);
    const Operands ops = operands_of(a, grad.dout, G);
    Tensor states = chunk_states(g), dstates = chunk_states(g);
    Tensor decayed;  // k_r e^{G_last - G_r}, the per-key decay's dv operand
    if (g.Kg != 1) decayed = Tensor::empty({g.B * g.H * g.T * g.K}, DType::bf16, Device::CUDA);
    chunk_states(ops, g, ops.v, a.h0, states.data<bf16_dev>(), nullptr, false,
                 g.Kg != 1 ? decayed.data<bf16_dev>() : nullptr);
    chunk_states(ops, g, ops.dout, grad.dhT, dstates.data<bf16_dev>(), grad.dh0, true);
    const GradPointers gp{reinterpret_cast<bf16_dev*>(grad.dq),
                          reinterpret_cast<bf16_dev*>(grad.dk),
                          reinterpret_cast<bf16_dev*>(grad.dv), want_dg ? grad.dg : nullptr};
    if (g.Kg == 1)
      return scalar_decay_gradients(ops, gp, g, states.data<bf16_dev>(), dstates.data<bf16_dev>());
    const unsigned chunks = static_cast<unsigned>(g.B * g.H * g.NT);
    Tensor dscores = Tensor::empty({int64_t(chunks) * kScoreElems}, DType::f32, Device::CUDA);
    Tensor own_scores;  // A when the forward did not keep it
    const bf16_dev* scores = reinterpret_cast<const bf16_dev*>(grad.scores);
    if (scores) {
      chunk_dA_kernel<V><<<chunks, kBlock, 0, stream()>>>(ops, g, dscores.data<float>());
    } else {
      own_scores = Tensor::empty({int64_t(chunks) * kScoreElems}, DType::bf16, Device::CUDA);
      constexpr size_t scores_smem = StagedChunk<K>::kBytes;
      allow_shared_memory(chunk_scores_kernel<K, V>, scores_smem, op);
      chunk_scores_kernel<K, V><<<chunks, kBlock, scores_smem, stream()>>>(
          ops, g, own_scores.data<bf16_dev>(), dscores.data<float>());
      scores = own_scores.data<bf16_dev>();
    }
    CUDA_CHECK(cudaGetLastError());
    constexpr size_t dv_smem = dv_smem_bytes<K>();
    allow_shared_memory(chunk_dv_kernel<K, V>, dv_smem, op);
    chunk_dv_kernel<K, V><<<dim3(chunks, V / kDvTile), kBlock, dv_smem, stream()>>>(
        ops, gp, g, decayed.data<bf16_dev>(), scores, dstates.data<bf16_dev>());
    CUDA_CHECK(cudaGetLastError());
    constexpr size_t dqk_smem = dqk_smem_bytes();
    allow_shared_memory(chunk_dqk_kernel<V>, dqk_smem, op);
    chunk_dqk_kernel<V><<<dim3(chunks, K / kKeyTile), kBlock, dqk_smem, stream()>>>(
        ops, gp, g, dscores.data<float>(), states.data<bf16_dev>(), dstates.data<bf16_dev>());
    CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace hla::cuda
