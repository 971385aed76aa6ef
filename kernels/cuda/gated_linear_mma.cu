// The chunked tier of the gated linear family on tensor cores: GLA / HGRN2 (PerKey), simple GLA
// (ScalarPerHead), RetNet (FixedPerHead), linear attention (None), for bf16 q, k, v, o and their
// gradients, f32 gates, states and state gradients (kernels/cuda/recurrence_cuda.h). The maths is
// gated_linear_chunk.cu's (its header states the chunk equations and the dg split; the CPU tier
// derives them): chunks of n = kernels::kChunk = 64 rows, the last chunk of a head may be shorter.
// Every product runs on mma.sync.m16n8k16 with bf16 operands and fp32 accumulators; what is
// rounded to bf16 is an operand (an input, an exp-scaled input, the fp32 score matrices A / dA,
// or the state entering a chunk), never a sum.
//
// Layouts (row-major, contiguous device pointers): q, k [B,T,H,K]  v, o [B,T,H,V]
// g [B,T,H] or [B,T,H,K]  h0, hT [B,H,K,V]. Head sizes K, V in {64, 128} (template parameters).
// Scratch, NT = ceil(T / 64) chunks per head:
//   G        [B*H, T, Kg] f32   chunk-local cumulative log decay G_r = g_0 + ... + g_r (Kg = K
//                               for PerKey, else 1; zeros for None)
//   states   [B*H, NT, K, V] bf16  the state entering each chunk (an mma operand)
//   dstates  [B*H, NT, K, V] bf16  C = dL/dS at the end of each chunk (backward only)
//
// Secondary chunking (fla's; kernels/cpu/recurrence/gated_linear_chunk.cpp): a chunk is 4
// sub-chunks of 16 rows, one per warp. A pair factor e^{G_r - G_j} (per key) between sub-chunks
// a > b is split against a reference row ref of sub-chunk a's side:
//   q_r k_j e^{G_r - G_j} = (q_r e^{G_r - G_ref}) (k_j e^{G_ref - G_j}),  j < ref <= r
// with both exponents <= 0 (G falls with r), so each factor is in (0, 1] and rounds to bf16
// without overflow. ref = the sub-chunk's first row for A and dq, its last valid row for dk
// (r > ref >= j there). The diagonal 16 x 16 blocks take the exact exp(G_r - G_j) per key in
// fp32 SIMT, each lane computing the accumulator entries it owns.
//
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 fragments (PTX ISA, "Matrix fragments for
// mma.m16n8k16"), lane = 4 g + t (g = groupID, t = threadID_in_group):
//   A [16 x 16] row-major, 4 .b32 of 2 bf16 (lower index in the low half):
//     a0 = (g, 2t..2t+1)  a1 = (g+8, 2t..2t+1)  a2 = (g, 2t+8..2t+9)  a3 = (g+8, 2t+8..2t+9)
//   B [16 x 8] (k x n), 2 .b32:  b0 = (k = 2t..2t+1, n = g)  b1 = (k = 2t+8..2t+9, n = g)
//   C/D [16 x 8] fp32, 4 floats:  c0, c1 = (g, 2t), (g, 2t+1)   c2, c3 = (g+8, 2t), (g+8, 2t+1)
// Two C tiles of adjacent 8 columns are one A fragment of 16 columns (c of the first tile gives
// a0, a1, of the second a2, a3): the score rows feed the next product from registers.
//
// Kernels, kBlock = 128 threads (4 warps) each:
//   cumulative_decay  one thread per (b*h, chunk, column of G): the chunk-local cumsum into G
//   state_pass        one block per (b*h, 64-key tile, 64-column tile) walking the chunks in order
//                     (forward: states, hT) or in reverse (backward: dstates, dh0). Warp w holds
//                     keys 16w..16w+15 x 64 columns of the fp32 state as 8 C tiles (32 floats per
//                     lane) and adds (K e^{G_last - G})^T V (or s (Q e^G)^T dO) on mma, the chunk's
//                     64 rows being the k dimension. No shared memory.
//   chunk_output      one block per (b*h, chunk); warp a: rows 16a..16a+15. A rows [16 x 64] as
//                     8 C tiles, then o = A V + s (Q e^G) S_in, V/8 C tiles. No shared memory.
//   chunk_gradients   one block per (b*h, chunk); warp a: rows 16a..16a+15. A and dA [64,65] f32
//                     in shared (dk and dv read them transposed across warps); then per 32-key
//                     tile dq^off, dk^inter, dk^intra as 3 x 4 C tiles, the dg terms in two
//                     [64,33] f32 tiles scanned one key column per thread; then dv per 32-column
//                     tile. Shared: 2 * 64*65*4 + 2 * 64*33*4 + 32*4 = 49.1 KiB (opted in).
// Operands are read from global memory (L1/L2) straight into fragments.
// Gradients are overwritten, never accumulated.
#include <cstdint>
#include <cstring>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gated_linear_geometry.cuh"
#include "kernels/cuda/recurrence_cuda.h"

namespace hla::cuda {

using kernels::GateKind;

namespace {

// e^x on the multifunction unit: __expf is ex2.approx of x log2(e), relative error about 1e-7
// near 0 and 7e-6 at |x| = 100 (CUDA Math API: 2 + 1.17 |x| ulp), against the 4e-3 of the bf16
// rounding every operand here takes; accurate expf spends several times the instructions in
// loops that compute one exponential per operand or score element.
__device__ __forceinline__ float fast_exp(float x) { return __expf(x); }

constexpr int kN = static_cast<int>(kernels::kChunk);  // rows per chunk
constexpr int kSub = 16;                               // rows per sub-chunk: one warp, mma M
constexpr int kWarps = kN / kSub;
constexpr int kBlock = 32 * kWarps;
constexpr int kStateTile = 64;          // keys and columns of a state_pass block
constexpr int kKeyTile = 32;            // keys per gradient pass: 4 C tiles of 8
constexpr int kColTile = 32;            // value columns per dv pass: 4 C tiles of 8
constexpr int kScorePad = kN + 1;       // row stride of A and dA in shared memory
constexpr int kTermPad = kKeyTile + 1;  // row stride of the dg term tiles
static_assert(kN == kWarps * kSub && kN % 16 == 0, "a chunk is whole sub-chunks of 16 rows");
static_assert(kBlock >= kKeyTile, "one thread per key column of a tile in the dg scan");

// The device pointers of one call.
struct Operands {
  const bf16_dev* q;
  const bf16_dev* k;
  const bf16_dev* v;
  const bf16_dev* dout;  // backward only
  const float* G;        // [B*H, T, Kg]
  float scale;
};

// One chunk of one head: rows r < n, indexed from the chunk's first row. Callers read rows < n
// only (a partial last chunk ends at T).
struct ChunkView {
  const bf16_dev* q;
  const bf16_dev* k;
  const bf16_dev* v;
  const bf16_dev* dout;
  const float* G;
  int64_t qk_stride, v_stride;  // H*K, H*V
  int g_stride, g_col;          // G row stride; 1 for per-key G, 0 for one value per row
  int n;
  __device__ float q_at(int r, int i) const { return __bfloat162float(q[r * qk_stride + i]); }
  __device__ float k_at(int r, int i) const { return __bfloat162float(k[r * qk_stride + i]); }
  __device__ float v_at(int r, int c) const { return __bfloat162float(v[r * v_stride + c]); }
  __device__ float do_at(int r, int c) const { return __bfloat162float(dout[r * v_stride + c]); }
  __device__ float G_at(int r, int i) const { return G[r * g_stride + i * g_col]; }
};

__device__ inline ChunkView chunk_view(const Operands& op, const Geometry& g, int64_t bh,
                                       int64_t c) {
  const int64_t t0 = c * kN;
  ChunkView cv;
  cv.q = op.q + g.qk(bh, t0);
  cv.k = op.k + g.qk(bh, t0);
  cv.v = op.v + g.vrow(bh, t0);
  cv.dout = op.dout ? op.dout + g.vrow(bh, t0) : nullptr;
  cv.G = op.G + g.g_row(bh, t0);
  cv.qk_stride = g.H * g.K;
  cv.v_stride = g.H * g.V;
  cv.g_stride = static_cast<int>(g.Kg);
  cv.g_col = g.Kg == 1 ? 0 : 1;
  cv.n = static_cast<int>(g.T - t0 < kN ? g.T - t0 : kN);
  return cv;
}

// ---- mma.sync m16n8k16 bf16 fragments (mappings in the header comment)

struct Lane {
  int g, t;  // groupID = lane / 4, threadID_in_group = lane % 4
};
__device__ inline Lane lane_of() {
  const int lane = threadIdx.x % 32;
  return {lane / 4, lane % 4};
}
// Row and column of entry e < 4 of a C tile.
__device__ inline int acc_row(const Lane& L, int e) {
  return L.g + 8 * (e / 2);
}
__device__ inline int acc_col(const Lane& L, int e) {
  return 2 * L.t + e % 2;
}

// Two floats rounded to bf16 (nearest even), `lo` in the low half as the fragments want it.
__device__ inline uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &pair, sizeof(bits));
  return bits;
}

// A fragment of the [16 x 16] operand value(row, col).
template <class F>
__device__ inline void a_fragment(uint32_t (&a)[4], const Lane& L, F value) {
  a[0] = pack_bf16(value(L.g, 2 * L.t), value(L.g, 2 * L.t + 1));
  a[1] = pack_bf16(value(L.g + 8, 2 * L.t), value(L.g + 8, 2 * L.t + 1));
  a[2] = pack_bf16(value(L.g, 2 * L.t + 8), value(L.g, 2 * L.t + 9));
  a[3] = pack_bf16(value(L.g + 8, 2 * L.t + 8), value(L.g + 8, 2 * L.t + 9));
}
// B fragment of the [16 x 8] operand value(k, n).
template <class F>
__device__ inline void b_fragment(uint32_t (&b)[2], const Lane& L, F value) {
  b[0] = pack_bf16(value(2 * L.t, L.g), value(2 * L.t + 1, L.g));
  b[1] = pack_bf16(value(2 * L.t + 8, L.g), value(2 * L.t + 9, L.g));
}
// A fragment of columns 16b..16b+15 from the C tiles lo (columns 16b..+7) and hi (16b+8..+15).
__device__ inline void a_from_acc(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

// c += a b on the tensor cores.
__device__ inline void mma_bf16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <int kTiles>
__device__ inline void zero(float (&c)[kTiles][4]) {
#pragma unroll
  for (int nt = 0; nt < kTiles; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) c[nt][e] = 0.f;
}

__device__ inline float load(const bf16_dev* p, int64_t i) {
  return __bfloat162float(p[i]);
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

// The chunk-to-chunk recurrence of one (b*h, 64-key tile, 64-column tile) of the state:
//   forward:  X <- diag(e^{G_last}) X + sum_r (k_r * e^{G_last - G_r}) cols_r^T   from init = h0
//   reverse:  X <- diag(e^{G_last}) X + s sum_r (q_r * e^{G_r}) cols_r^T          from init = dhT
// with cols = v (forward) or do (reverse), chunks in order or in reverse. per_chunk[c] receives
// X (rounded to bf16) as it enters chunk c's update; the fp32 X after the last update goes to
// final_state (if wanted). Warp w's C tile nt holds keys i0 + 16w + {g, g+8}, columns
// v0 + 8nt + {2t, 2t+1}.
template <int K, int V>
__global__ void __launch_bounds__(kBlock)
    state_pass_kernel(Operands op, Geometry g, const bf16_dev* __restrict__ cols,  // [B,T,H,V]
                      const float* __restrict__ init,    // [B,H,K,V] or null (zeros)
                      bf16_dev* __restrict__ per_chunk,  // [B*H, NT, K, V]
                      float* __restrict__ final_state,   // [B,H,K,V] or null
                      bool reverse) {
  constexpr int kColTiles = kStateTile / 8;
  const Lane L = lane_of();
  const int64_t bh = blockIdx.x;
  const int i0 = blockIdx.y * kStateTile + kSub * (threadIdx.x / 32);
  const int v0 = blockIdx.z * kStateTile;
  const float s = op.scale;

  float X[kColTiles][4];
#pragma unroll
  for (int nt = 0; nt < kColTiles; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      X[nt][e] =
          init ? init[g.state(bh) + (i0 + acc_row(L, e)) * V + v0 + 8 * nt + acc_col(L, e)] : 0.f;
  for (int64_t step = 0; step < g.NT; ++step) {
    const int64_t c = reverse ? g.NT - 1 - step : step;
    const ChunkView cv = chunk_view(op, g, bh, c);
    const bf16_dev* col_rows = cols + g.vrow(bh, c * kN);
    const int last = cv.n - 1;
    bf16_dev* entering = per_chunk + g.chunk_state(bh, c);
#pragma unroll
    for (int nt = 0; nt < kColTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        entering[(i0 + acc_row(L, e)) * V + v0 + 8 * nt + acc_col(L, e)] =
            __float2bfloat16_rn(X[nt][e]);
    const float decay_lo = fast_exp(cv.G_at(last, i0 + L.g));
    const float decay_hi = fast_exp(cv.G_at(last, i0 + L.g + 8));
#pragma unroll
    for (int nt = 0; nt < kColTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) X[nt][e] *= e < 2 ? decay_lo : decay_hi;
    }
    // the chunk's rows are the k dimension: A [keys x rows], B [rows x columns]
#pragma unroll
    for (int ks = 0; ks < kN / 16; ++ks) {
      if (16 * ks >= cv.n) break;
      uint32_t a[4];
      a_fragment(a, L, [&](int m, int kk) {
        const int r = 16 * ks + kk, i = i0 + m;
        if (r >= cv.n) return 0.f;
        if (reverse) return s * cv.q_at(r, i) * fast_exp(cv.G_at(r, i));
        return cv.k_at(r, i) * fast_exp(cv.G_at(last, i) - cv.G_at(r, i));
      });
#pragma unroll
      for (int nt = 0; nt < kColTiles; ++nt) {
        uint32_t b[2];
        b_fragment(b, L, [&](int kk, int nn) {
          const int r = 16 * ks + kk;
          return r < cv.n ? load(col_rows, r * cv.v_stride + v0 + 8 * nt + nn) : 0.f;
        });
        mma_bf16(X[nt], a, b);
      }
    }
  }
  if (final_state) {
#pragma unroll
    for (int nt = 0; nt < kColTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        final_state[g.state(bh) + (i0 + acc_row(L, e)) * V + v0 + 8 * nt + acc_col(L, e)] =
            X[nt][e];
  }
}

// Rows R0..R0+15 (R0 = 16 w < n) of the chunk's scores into C tiles, tile nt = columns
// 8nt..8nt+7:  A_rj = s sum_i q_ri k_ji e^{G_ri - G_ji} for j <= r < n, 0 elsewhere.
// Sub-chunks b < w on mma against the reference row R0; the diagonal sub-chunk in fp32.
// kKeyUnroll: unroll factor of the key steps (the gradients kernel keeps more tiles live and
// takes 2 to stay within 255 registers without spills).
template <int K, int kKeyUnroll>
__device__ void score_rows(const ChunkView& cv, int w, const Lane& L, float s,
                           float (&A)[kN / 8][4]) {
  const int R0 = kSub * w;
  zero(A);
#pragma unroll
  for (int b = 0; b < kWarps; ++b) {
    if (b >= w) continue;
#pragma unroll kKeyUnroll
    for (int ks = 0; ks < K / 16; ++ks) {
      uint32_t a[4];
      a_fragment(a, L, [&](int m, int kk) {  // q_r e^{G_r - G_ref}
        const int r = R0 + m, i = 16 * ks + kk;
        return r < cv.n ? cv.q_at(r, i) * fast_exp(cv.G_at(r, i) - cv.G_at(R0, i)) : 0.f;
      });
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        uint32_t bf[2];
        b_fragment(bf, L, [&](int kk, int nn) {  // (k_j e^{G_ref - G_j})^T, j < R0 < n
          const int j = 16 * b + 8 * half + nn, i = 16 * ks + kk;
          return cv.k_at(j, i) * fast_exp(cv.G_at(R0, i) - cv.G_at(j, i));
        });
        mma_bf16(A[2 * b + half], a, bf);
      }
    }
  }
  // the diagonal sub-chunk (R0 <= j <= r): exact exponent differences, each lane its own entries
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = R0 + acc_row(L, e), j = 8 * nt + acc_col(L, e);
      if (j < R0 || j > r || r >= cv.n) continue;
      float sum = 0.f;
#pragma unroll 4
      for (int i = 0; i < K; ++i)
        sum += cv.q_at(r, i) * cv.k_at(j, i) * fast_exp(cv.G_at(r, i) - cv.G_at(j, i));
      A[nt][e] = sum;
    }
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = R0 + acc_row(L, e), j = 8 * nt + acc_col(L, e);
      A[nt][e] = j <= r && r < cv.n ? s * A[nt][e] : 0.f;
    }
}

// o_r = s (q_r e^{G_r})^T S_in + sum_{j<=r} A_rj v_j for the rows of warp w.
template <int K, int V>
__global__ void __launch_bounds__(kBlock)
    chunk_output_kernel(Operands op, Geometry g,
                        const bf16_dev* __restrict__ states,  // [B*H, NT, K, V]
                        bf16_dev* __restrict__ o) {           // [B,T,H,V] overwritten
  const int64_t bh = blockIdx.x / g.NT, c = blockIdx.x % g.NT;
  const ChunkView cv = chunk_view(op, g, bh, c);
  const int w = threadIdx.x / 32, R0 = kSub * w;
  if (R0 >= cv.n) return;  // no rows in this sub-chunk; the kernel has no block barrier
  const Lane L = lane_of();
  const float s = op.scale;

  float A[kN / 8][4];
  score_rows<K, K / 16>(cv, w, L, s, A);
  float O[V / 8][4];
  zero(O);
  // intra-chunk: the A tiles of sub-chunk b are the A operand, v rows 16b.. the B operand
#pragma unroll
  for (int b = 0; b < kWarps; ++b) {
    if (b > w) continue;
    uint32_t a[4];
    a_from_acc(a, A[2 * b], A[2 * b + 1]);
#pragma unroll
    for (int vt = 0; vt < V / 8; ++vt) {
      uint32_t bf[2];
      b_fragment(bf, L, [&](int kk, int nn) {
        const int j = 16 * b + kk;
        return j < cv.n ? cv.v_at(j, 8 * vt + nn) : 0.f;
      });
      mma_bf16(O[vt], a, bf);
    }
  }
  // inter-chunk: s (Q e^G) [16 x K] times the entering state [K x V]
  const bf16_dev* S_in = states + g.chunk_state(bh, c);
#pragma unroll
  for (int ks = 0; ks < K / 16; ++ks) {
    uint32_t a[4];
    a_fragment(a, L, [&](int m, int kk) {
      const int r = R0 + m, i = 16 * ks + kk;
      return r < cv.n ? s * cv.q_at(r, i) * fast_exp(cv.G_at(r, i)) : 0.f;
    });
#pragma unroll
    for (int vt = 0; vt < V / 8; ++vt) {
      uint32_t bf[2];
      b_fragment(bf, L,
                 [&](int kk, int nn) { return load(S_in, (16 * ks + kk) * V + 8 * vt + nn); });
      mma_bf16(O[vt], a, bf);
    }
  }
  bf16_dev* o_rows = o + g.vrow(bh, c * kN);
#pragma unroll
  for (int vt = 0; vt < V / 8; ++vt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = R0 + acc_row(L, e);
      if (r < cv.n)
        o_rows[r * cv.v_stride + 8 * vt + acc_col(L, e)] = __float2bfloat16_rn(O[vt][e]);
    }
}

struct GradPointers {
  bf16_dev* dq;
  bf16_dev* dk;
  bf16_dev* dv;
  float* dg;  // null without a gate tensor
};

constexpr size_t gradients_smem_bytes() {
  return sizeof(float) * (2 * kN * kScorePad + 2 * kN * kTermPad + kKeyTile);
}

// dq, dk, dv, dg of one chunk (equations in gated_linear_chunk.cu's header), C = dstates[c]:
//   dq_r = s e^{G_r} (S do_r) + s sum_{j<=r} dA_rj k_j e^{G_r - G_j}
//   dk_j = e^{G_last - G_j} (C v_j) + s sum_{r>=j} dA_rj q_r e^{G_r - G_j}
//   dv_j = C^T (k_j e^{G_last - G_j}) + sum_{r>=j} A_rj do_r
//   dg_r = sum_{u>=r} (q_u dq_u^off - k_u dk_u^intra) + e^{G_last} sum_v (S C)
//          + sum_{j<r} k_j dk_j^inter       (per key; summed over keys for ScalarPerHead)
// with dA_rj = do_r . v_j (j <= r) and the gate factors applied through the reference rows.
template <int K, int V>
__global__ void __launch_bounds__(kBlock)
    chunk_gradients_kernel(Operands op, GradPointers gp, Geometry g, GateKind gate,
                           const bf16_dev* __restrict__ states,     // [B*H, NT, K, V] entering
                           const bf16_dev* __restrict__ dstates) {  // [B*H, NT, K, V] leaving
  extern __shared__ __align__(16) unsigned char gla_mma_smem[];
  float* A_s = reinterpret_cast<float*>(gla_mma_smem);  // [kN, kScorePad] A
  float* dA_s = A_s + kN * kScorePad;                   // [kN, kScorePad] dA
  float* x_s = dA_s + kN * kScorePad;                   // [kN, kTermPad] q dq^off - k dk^intra
  float* y_s = x_s + kN * kTermPad;                     // [kN, kTermPad] k dk^inter
  float* sc_s = y_s + kN * kTermPad;                    // [kKeyTile] sum_v S * C per key
  const int64_t bh = blockIdx.x / g.NT, c = blockIdx.x % g.NT;
  const ChunkView cv = chunk_view(op, g, bh, c);
  const int tid = threadIdx.x, w = tid / 32, R0 = kSub * w;
  const bool active = R0 < cv.n;  // inactive warps still meet every barrier
  const Lane L = lane_of();
  const float s = op.scale;
  const int last = cv.n - 1;
  const int ref_last = R0 + kSub - 1 < last ? R0 + kSub - 1 : last;  // dk's reference row
  const bf16_dev* S_in = states + g.chunk_state(bh, c);
  const bf16_dev* C = dstates + g.chunk_state(bh, c);

  // A, then dA, rows of this sub-chunk into shared memory (zeros where masked or inactive);
  // one set of C tiles serves both
  {
    float P[kN / 8][4];
    zero(P);
    if (active) score_rows<K, 2>(cv, w, L, s, P);
#pragma unroll
    for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        A_s[(R0 + acc_row(L, e)) * kScorePad + 8 * nt + acc_col(L, e)] = P[nt][e];
    zero(P);
    if (active) {
#pragma unroll
      for (int b = 0; b < kWarps; ++b) {
        if (b > w) continue;
#pragma unroll 2
        for (int vs = 0; vs < V / 16; ++vs) {
          uint32_t a[4];
          a_fragment(a, L, [&](int m, int kk) {
            const int r = R0 + m;
            return r < cv.n ? cv.do_at(r, 16 * vs + kk) : 0.f;
          });
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            uint32_t bf[2];
            b_fragment(bf, L, [&](int kk, int nn) {  // v^T: B[col][j] = v_j[col]
              const int j = 16 * b + 8 * half + nn;
              return j < cv.n ? cv.v_at(j, 16 * vs + kk) : 0.f;
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
        dA_s[r * kScorePad + j] = j <= r && r < cv.n ? P[nt][e] : 0.f;
      }
  }
  __syncthreads();  // A and dA complete

  const bool per_key = gate == GateKind::PerKey;
  const bool head_gate = gate == GateKind::ScalarPerHead;
  float dg_of_row = 0.f;  // ScalarPerHead: dg of row tid, summed over the key tiles
  for (int i0 = 0; i0 < K; i0 += kKeyTile) {
    constexpr int kKeyTiles = kKeyTile / 8;
    if (active) {
      // X = S do_r, Y = C v_r: the rows' dO / V [16 x V] times S^T / C^T [V x 32 keys]
      float X[kKeyTiles][4], Y[kKeyTiles][4], Z[kKeyTiles][4];
      zero(X);
      zero(Y);
      zero(Z);
#pragma unroll 2
      for (int vs = 0; vs < V / 16; ++vs) {
        uint32_t a_do[4], a_v[4];
        a_fragment(a_do, L, [&](int m, int kk) {
          const int r = R0 + m;
          return r < cv.n ? cv.do_at(r, 16 * vs + kk) : 0.f;
        });
        a_fragment(a_v, L, [&](int m, int kk) {
          const int r = R0 + m;
          return r < cv.n ? cv.v_at(r, 16 * vs + kk) : 0.f;
        });
#pragma unroll
        for (int nt = 0; nt < kKeyTiles; ++nt) {
          uint32_t b_s[2], b_c[2];
          b_fragment(b_s, L, [&](int kk, int nn) {
            return load(S_in, (i0 + 8 * nt + nn) * V + 16 * vs + kk);
          });
          b_fragment(b_c, L, [&](int kk, int nn) {
            return load(C, (i0 + 8 * nt + nn) * V + 16 * vs + kk);
          });
          mma_bf16(X[nt], a_do, b_s);
          mma_bf16(Y[nt], a_v, b_c);
        }
      }
      // dq^off: (e^{G_ref} S do_r + sum_{b<w} dA_rj k_j e^{G_ref - G_j}) s e^{G_r - G_ref}
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) X[nt][e] *= fast_exp(cv.G_at(R0, i0 + 8 * nt + acc_col(L, e)));
#pragma unroll
      for (int b = 0; b < kWarps; ++b) {
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
      for (int b = 0; b < kWarps; ++b) {
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
      // the diagonal sub-chunk in fp32, the gate factors, then dq, dk and the dg terms
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = R0 + acc_row(L, e), ic = 8 * nt + acc_col(L, e), i = i0 + ic;
          if (r >= cv.n) continue;
          const float G_r = cv.G_at(r, i);
          float before = 0.f, after = 0.f;  // s-less sums over j in [R0, r) and r' in (r, ref]
          for (int j = R0; j < r; ++j)
            before += dA_s[r * kScorePad + j] * cv.k_at(j, i) * fast_exp(G_r - cv.G_at(j, i));
          for (int u = r + 1; u <= ref_last; ++u)
            after += dA_s[u * kScorePad + r] * cv.q_at(u, i) * fast_exp(cv.G_at(u, i) - G_r);
          const float dq_off = s * (X[nt][e] * fast_exp(G_r - cv.G_at(R0, i)) + before);
          const float dk_inter = fast_exp(cv.G_at(last, i) - G_r) * Y[nt][e];
          const float dk_intra = s * (Z[nt][e] * fast_exp(cv.G_at(ref_last, i) - G_r) + after);
          const float diag = s * dA_s[r * kScorePad + r];  // the j = r terms
          const float q_ri = cv.q_at(r, i), k_ri = cv.k_at(r, i);
          const int64_t at = g.qk(bh, c * kN + r) + i;
          gp.dq[at] = __float2bfloat16_rn(dq_off + diag * k_ri);
          gp.dk[at] = __float2bfloat16_rn(dk_inter + dk_intra + diag * q_ri);
          x_s[r * kTermPad + ic] = q_ri * dq_off - k_ri * dk_intra;
          y_s[r * kTermPad + ic] = k_ri * dk_inter;
        }
    }
    if (tid < kKeyTile) {
      float sc = 0.f;
      for (int col = 0; col < V; ++col)
        sc += load(S_in, (i0 + tid) * V + col) * load(C, (i0 + tid) * V + col);
      sc_s[tid] = sc;
    }
    __syncthreads();  // dg terms and sc_s written
    if (per_key || head_gate) {
      if (tid < kKeyTile) {  // one key column per thread: reverse cumsum, then the prefix terms
        float sum = 0.f;
        for (int r = last; r >= 0; --r) {
          sum += x_s[r * kTermPad + tid];
          x_s[r * kTermPad + tid] = sum;
        }
        float prefix = fast_exp(cv.G_at(last, i0 + tid)) * sc_s[tid];
        for (int r = 0; r < cv.n; ++r) {
          x_s[r * kTermPad + tid] += prefix;
          prefix += y_s[r * kTermPad + tid];
        }
      }
      __syncthreads();  // dg of the tile complete
      if (per_key) {
        for (int e = tid; e < cv.n * kKeyTile; e += kBlock) {
          const int r = e / kKeyTile, ic = e % kKeyTile;
          gp.dg[g.qk(bh, c * kN + r) + i0 + ic] = x_s[r * kTermPad + ic];
        }
      } else if (tid < cv.n) {
        for (int ic = 0; ic < kKeyTile; ++ic) dg_of_row += x_s[tid * kTermPad + ic];
      }
    }
    __syncthreads();  // the tiles read before the next key tile rewrites them
  }
  if (head_gate && tid < cv.n) gp.dg[g.head_gate(bh, c * kN + tid)] = dg_of_row;

  // dv_j = (k_j e^{G_last - G_j})^T C + sum_{r>=j} A_rj do_r, by 32-column tiles
  if (!active) return;  // no barrier follows
  for (int v0 = 0; v0 < V; v0 += kColTile) {
    constexpr int kColTiles = kColTile / 8;
    float D[kColTiles][4];
    zero(D);
#pragma unroll 2
    for (int ks = 0; ks < K / 16; ++ks) {
      uint32_t a[4];
      a_fragment(a, L, [&](int m, int kk) {
        const int j = R0 + m, i = 16 * ks + kk;
        return j < cv.n ? cv.k_at(j, i) * fast_exp(cv.G_at(last, i) - cv.G_at(j, i)) : 0.f;
      });
#pragma unroll
      for (int nt = 0; nt < kColTiles; ++nt) {
        uint32_t bf[2];
        b_fragment(bf, L,
                   [&](int kk, int nn) { return load(C, (16 * ks + kk) * V + v0 + 8 * nt + nn); });
        mma_bf16(D[nt], a, bf);
      }
    }
#pragma unroll
    for (int b = 0; b < kWarps; ++b) {
      if (b < w || 16 * b >= cv.n) continue;
      uint32_t a[4];  // A^T: rows j of this sub-chunk, columns r of sub-chunk b
      a_fragment(a, L, [&](int m, int kk) { return A_s[(16 * b + kk) * kScorePad + R0 + m]; });
#pragma unroll
      for (int nt = 0; nt < kColTiles; ++nt) {
        uint32_t bf[2];
        b_fragment(bf, L, [&](int kk, int nn) {
          const int r = 16 * b + kk;
          return r < cv.n ? cv.do_at(r, v0 + 8 * nt + nn) : 0.f;
        });
        mma_bf16(D[nt], a, bf);
      }
    }
    bf16_dev* dv_rows = gp.dv + g.vrow(bh, c * kN);
#pragma unroll
    for (int nt = 0; nt < kColTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = R0 + acc_row(L, e);
        if (j < cv.n)
          dv_rows[j * cv.v_stride + v0 + 8 * nt + acc_col(L, e)] = __float2bfloat16_rn(D[nt][e]);
      }
  }
}

// ---- launchers

template <int K_, int V_>
struct HeadSizes {
  static constexpr int K = K_, V = V_;
};

// Calls f(HeadSizes<K, V>{}) for the supported head sizes; hla::Error otherwise.
template <class F>
void with_head_sizes(const kernels::RecDims& d, const char* op, F&& f) {
  if (d.K == 64 && d.V == 64) return f(HeadSizes<64, 64>{});
  if (d.K == 64 && d.V == 128) return f(HeadSizes<64, 128>{});
  if (d.K == 128 && d.V == 64) return f(HeadSizes<128, 64>{});
  if (d.K == 128 && d.V == 128) return f(HeadSizes<128, 128>{});
  throw Error(op, "head sizes K and V each 64 or 128",
              "K=" + std::to_string(d.K) + ", V=" + std::to_string(d.V),
              "gated_linear_chunk_forward/backward (f32) take any head size");
}

Geometry geometry_of(const GatedLinearBf16Args& a, const char* op) {
  const kernels::RecDims& d = a.d;
  HLA_CHECK(d.B > 0 && d.T > 0 && d.H > 0, op << ": B,T,H = " << d.B << "," << d.T << "," << d.H);
  HLA_CHECK(a.q && a.k && a.v, op << ": q, k and v are required");
  const bool has_gate = a.gate == GateKind::ScalarPerHead || a.gate == GateKind::PerKey;
  HLA_CHECK(has_gate == (a.g != nullptr),
            op << ": g must be given exactly for ScalarPerHead / PerKey");
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

template <int K, int V>
void state_pass(const Operands& op, const Geometry& g, const bf16_dev* cols, const float* init,
                Tensor& per_chunk, float* final_state, bool reverse) {
  const dim3 grid(static_cast<unsigned>(g.B * g.H), K / kStateTile, V / kStateTile);
  state_pass_kernel<K, V><<<grid, kBlock, 0, stream()>>>(
      op, g, cols, init, per_chunk.data<bf16_dev>(), final_state, reverse);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void gated_linear_mma_forward(const GatedLinearBf16Args& a, const GatedLinearBf16Out& out) {
  const char* op = "gated_linear_mma_forward (cuda)";
  const Geometry g = geometry_of(a, op);
  HLA_CHECK(out.o, "o is required");
  with_head_sizes(a.d, op, [&](auto sizes) {
    constexpr int K = decltype(sizes)::K, V = decltype(sizes)::V;
    const Tensor G = cumulative_decay(a, g);
    const Operands ops = operands_of(a, nullptr, G);
    Tensor states = chunk_states(g);
    state_pass<K, V>(ops, g, ops.v, a.h0, states, out.hT, false);
    chunk_output_kernel<K, V><<<static_cast<unsigned>(g.B * g.H * g.NT), kBlock, 0, stream()>>>(
        ops, g, states.data<bf16_dev>(), reinterpret_cast<bf16_dev*>(out.o));
    CUDA_CHECK(cudaGetLastError());
  });
}

void gated_linear_mma_backward(const GatedLinearBf16Args& a, const GatedLinearBf16Grad& grad) {
  const char* op = "gated_linear_mma_backward (cuda)";
  const Geometry g = geometry_of(a, op);
  HLA_CHECK(grad.dout && grad.dq && grad.dk && grad.dv, "dout, dq, dk and dv are required");
  const bool want_dg = a.gate == GateKind::ScalarPerHead || a.gate == GateKind::PerKey;
  HLA_CHECK(!want_dg || grad.dg, "dg is required for a gate tensor");
  with_head_sizes(a.d, op, [&](auto sizes) {
    constexpr int K = decltype(sizes)::K, V = decltype(sizes)::V;
    const Tensor G = cumulative_decay(a, g);
    const Operands ops = operands_of(a, grad.dout, G);
    Tensor states = chunk_states(g), dstates = chunk_states(g);
    state_pass<K, V>(ops, g, ops.v, a.h0, states, nullptr, false);
    state_pass<K, V>(ops, g, ops.dout, grad.dhT, dstates, grad.dh0, true);

    constexpr size_t smem = gradients_smem_bytes();
    allow_shared_memory(chunk_gradients_kernel<K, V>, smem, op);
    const GradPointers gp{reinterpret_cast<bf16_dev*>(grad.dq),
                          reinterpret_cast<bf16_dev*>(grad.dk),
                          reinterpret_cast<bf16_dev*>(grad.dv), want_dg ? grad.dg : nullptr};
    chunk_gradients_kernel<K, V>
        <<<static_cast<unsigned>(g.B * g.H * g.NT), kBlock, smem, stream()>>>(
            ops, gp, g, a.gate, states.data<bf16_dev>(), dstates.data<bf16_dev>());
    CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace hla::cuda
