// defines: hla::cuda::softmax_attention_mma_supports / _forward / _backward (bf16)
//
// FlashAttention-2 on the tensor cores: the maths, masks, GQA mapping and two-kernel
// deterministic backward of attention_tiled.cu, with every matrix product on
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (bf16 operands, fp32 accumulators). The
// softmax statistics (m, l, lse, D = rowsum(dO o O)) and every accumulator stay fp32; only the
// operands of the products are bf16: q, k, v, dO as given, and P (forward, dV) and dS (dK, dQ)
// rounded from fp32 registers.
// On compute capability 9.0 devices the forward and the backward's dQ and dK/dV run on Hopper's
// warpgroup products instead (attention_wgmma_sm90a.cu, the same function), unless
// AttentionMma::Sync or HLA_ATTENTION_MMA=sync asks for these; the pieces both share are in
// attention_mma.cuh.
// Layouts (device pointers, row-major, contiguous, 16-byte aligned), D = K = V in {64, 128}:
//   q [B,T,H,D]   k, v [B,T,Hkv,D]   o, dout [B,T,H,D] (bf16)   lse [B,H,T] (f32)
//
// Threads: 4 warps (128 threads); warp w owns the 16 rows 16 w .. 16 w + 15 of a 64-row tile:
//   forward   one CTA per (b, h, 64 queries); loops over tiles of 64 keys
//             S = Q K^T (16 x 64 per warp), online softmax, O += P V (16 x D per warp); a
//             row's running max m moves only when the row's scores pass it by more than
//             kStaleMax (log2 units), so most tiles skip rescaling O (exponents stay < 2^8)
//   dK, dV    one CTA per (b, kv head, 64 keys); loops over the group's query heads and tiles of
//             QT = 32 queries (fewer accumulator registers, so more blocks an SM)
//             S^T = K Q^T, dP^T = V dO^T (16 x QT per warp), P^T, dS^T = P^T o (dP^T - D),
//             dV += P^T dO, dK += dS^T Q (16 x D per warp); dK scaled once at the end
//   dQ        one CTA per (b, h, 64 queries); loops over tiles of 64 keys
//             S = Q K^T, dP = dO V^T, P, dS = P o (dP - D), dQ += dS K; dQ scaled at the end
// where P = exp(scale S - lse) (masked: 0). Every output element has one owner: no atomics.
// Each warp holds the A fragments of its rows of the block's fixed tile in registers over the
// loop: Q in the forward; at D = 64 also K and V in dK/dV, Q and dO in dQ.
//
// mma.sync m16n8k16 fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16" with .bf16), lane =
// 4 g + t (g = lane / 4 in 0..7, t = lane % 4 in 0..3); a .b32 register holds two bf16, the
// lower column (or k) index in the low 16 bits:
//   A 16x16 (row):  a0 = A[g][2t..2t+1]     a1 = A[g+8][2t..2t+1]
//                   a2 = A[g][2t+8..2t+9]   a3 = A[g+8][2t+8..2t+9]
//   B 16x8  (col):  b0 = B[2t..2t+1][g]     b1 = B[2t+8..2t+9][g]
//   C 16x8  (f32):  c0, c1 = C[g][2t], C[g][2t+1]      c2, c3 = C[g+8][2t], C[g+8][2t+1]
// Fragments come from shared memory through ldmatrix (PTX ISA, "ldmatrix"): one instruction
// loads four 8 x 8 bf16 blocks, lane l giving the address of row l % 8 of block l / 8, and lane
// 4 g + t receiving row g, columns 2t..2t+1 of each block (.trans: column g, rows 2t..2t+1).
// So an A fragment of a row-major [m][k] tile, or the B fragments of two n-tiles of a B stored
// as its transpose Bt[n][k] (K for S = Q K^T, dO for dP = dO V^T ...), are one ldmatrix each;
// a B stored as [k][n] (V, dO, Q, K when the product runs over their rows) is read with .trans,
// so no transposed copy is kept.
// An A fragment from accumulators (P, P^T, dS, dS^T as the left operand of the second product):
// the C tiles 2j and 2j+1 (columns 16 j .. 16 j + 15) are exactly the A fragment of k-step j:
//   a0 = (c[2j][0], c[2j][1])   a1 = (c[2j][2], c[2j][3])
//   a2 = (c[2j+1][0], c[2j+1][1])   a3 = (c[2j+1][2], c[2j+1][3])
// so the thread converts its own registers to bf16, with no shared memory round trip.
//
// Shared memory (bf16 rows padded by 8 elements: ld = D + 8, so the 8 rows of an 8 x 8 block
// start 4 banks apart and an ldmatrix phase touches 32 distinct banks; rows stay 16-byte
// aligned). The tiles a loop walks over are double-buffered: the next one is copied with
// cp.async while the products run on this one. A step waits for its own tile (the only copy in
// flight), then one barrier both publishes it and certifies that every warp is done with the
// other buffer (the previous step), which the next tile's copy then refills. Each thread
// copies fixed 16-byte pieces of a tile (TilePieces: its first address formed once, one add
// a further piece, no tests when the tile lies inside T):
//   forward  Q [64][D+8], K, V [2][64][D+8]                      D = 64 / 128: 45 / 85 KiB
//   dK, dV   K, V [64][D+8], Q, dO [2][QT][D+8], lse, D [2][QT]  D = 64 / 128: 37 / 68.5 KiB
//   dQ       Q, dO [64][D+8], K, V [2][64][D+8], lse, D [64]     D = 64 / 128: 54.5 / 102.5 KiB
// A key (or query) tile that every query (key) of the block sees whole skips the mask
// (MaskRule::covers): under causality all tiles but the diagonal one.
// Registers (ptxas, sm_90, no spills): forward 128 / 255, dK/dV 166 / 254, dQ 168 / 240 for
// D = 64 / 128 (resident blocks an SM: min_blocks below).
// Rows past T (and keys past T) are stored as zeros, so masked products never meet NaN bits.
#include <cuda_bf16.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "kernels/cuda/attention_mask.cuh"
#include "kernels/cuda/attention_mma.cuh"
#include "kernels/cuda/attention_wgmma.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/ldmatrix.cuh"
#include "kernels/cuda/recurrence_cuda.h"

namespace hla::cuda {

using kernels::AttentionArgs;
using kernels::AttnDims;

namespace {

using namespace attention;

constexpr int kWarps = 4;
constexpr int kMmaThreads = 32 * kWarps;
// Resident blocks an SM each kernel is compiled for (__launch_bounds__' second argument). At
// D = 64 the kernels wait on their loads with few warps: the forward fits 4 blocks in 128
// registers, dQ 3 in 168 and dK/dV 3 in 166 (ptxas; unbounded they would take more, so 3, 2
// and 2 blocks). At
// D = 128 shared memory allows 2 anyway, and one block is all they promise, so ptxas may use up
// to 255 registers a thread (the forward spills at the default budget).
enum class Pass { Forward, DQ, DKDV };
template <Pass P, int D>
constexpr int min_blocks() {
  if (D != 64) return 1;
  return P == Pass::Forward ? 4 : 3;
}
constexpr int kWarpRows = 16;              // rows of a tile owned by one warp (mma m)
constexpr int kTile = kWarpRows * kWarps;  // queries (forward, dQ) or keys (dK/dV) per CTA
constexpr int kPad = 8;                    // bf16 elements of row padding (16 bytes)

constexpr int kBwdQueries = 32;  // queries per step of the dK/dV loop (QT in the header)

// ---- shared-memory tiles

// One 16-byte piece of a tile: to = from, or zeros when !valid (from is then not read); any is
// a readable address for a cp.async that reads nothing.
template <bool Async>
__device__ inline void copy_piece(bf16_dev* to, const bf16_dev* from, bool valid,
                                  const bf16_dev* any) {
  if constexpr (Async)
    cp_async_16(to, valid ? from : any, valid);
  else
    *reinterpret_cast<uint4*>(to) =
        valid ? *reinterpret_cast<const uint4*>(from) : make_uint4(0u, 0u, 0u, 0u);
}

// dst[r][x] (row stride D + kPad) = row t0 + r of `src` for r < n, zero for n <= r < ROWS, by
// cp.async when Async (the caller commits and waits), else by loads and stores.
template <int D, int ROWS, bool Async>
__device__ inline void load_tile(bf16_dev* dst, const HeadRows& src, int64_t t0, int n) {
  constexpr int ld = D + kPad;
  using P = TilePieces<D, ROWS, kMmaThreads>;
  const P at;
  const int64_t step = P::kRowStep * src.stride;
  const bf16_dev* from = src.p + (t0 + at.row) * src.stride + at.col;
  bf16_dev* to = dst + at.row * ld + at.col;
  if (Async && n >= ROWS) {  // every row inside T: no tests (the loops' copies)
#pragma unroll
    for (int i = 0; i < P::kPieces; ++i, from += step, to += P::kRowStep * ld)
      copy_piece<Async>(to, from, true, src.p);
    return;
  }
#pragma unroll
  for (int i = 0; i < P::kPieces; ++i, from += step, to += P::kRowStep * ld)
    copy_piece<Async>(to, from, at.row + i * P::kRowStep < n, src.p);
}

// dst[r] = src[r] for r < n, zero for n <= r < rows; load_vec_async by cp.async.
__device__ inline void load_vec(float* dst, int rows, const float* __restrict__ src, int n) {
  for (int r = threadIdx.x; r < rows; r += blockDim.x) dst[r] = r < n ? src[r] : 0.f;
}
__device__ inline void load_vec_async(float* dst, int rows, const float* __restrict__ src, int n) {
  for (int r = threadIdx.x; r < rows; r += blockDim.x)
    cp_async_4(dst + r, src + (r < n ? r : 0), r < n);
}

// K and V of the key tile at j0 into buffer buf of Ks, Vs ([2][kKeyTile][D + kPad] each),
// asynchronously.
template <int D>
__device__ inline void fetch_kv(bf16_dev* Ks, bf16_dev* Vs, int buf, int64_t j0,
                                const HeadRows& k, const HeadRows& v, int64_t T) {
  constexpr int ld = D + kPad;
  const int nk = static_cast<int>(T - j0 < kKeyTile ? T - j0 : kKeyTile);
  load_tile<D, kKeyTile, true>(Ks + buf * kKeyTile * ld, k, j0, nk);
  load_tile<D, kKeyTile, true>(Vs + buf * kKeyTile * ld, v, j0, nk);
}

// ---- mma fragments

// A fragment of the 16 x 16 block at rows row0.., columns col0.. of a row-major [m][k] tile:
// blocks (row0, col0), (row0 + 8, col0), (row0, col0 + 8), (row0 + 8, col0 + 8) = a0..a3.
__device__ inline void load_a(uint32_t (&a)[4], const bf16_dev* m, int ld, int row0, int col0,
                              int lane) {
  ldmatrix_x4(a, m + (row0 + lane % 8 + 8 * (lane / 8 % 2)) * ld + col0 + 8 * (lane / 16));
}

// B fragments of n-tiles n0.. and n0 + 8.. over k = k0..k0 + 15, B read from its transpose
// Bt [n][k] (row-major): blocks (n0, k0), (n0, k0 + 8), (n0 + 8, k0), (n0 + 8, k0 + 8).
__device__ inline void load_b_pair(uint32_t (&b0)[2], uint32_t (&b1)[2], const bf16_dev* bt,
                                   int ld, int n0, int k0, int lane) {
  uint32_t r[4];
  ldmatrix_x4(r, bt + (n0 + lane % 8 + 8 * (lane / 16)) * ld + k0 + 8 * (lane / 8 % 2));
  b0[0] = r[0], b0[1] = r[1], b1[0] = r[2], b1[1] = r[3];
}

// The same from B itself stored row-major [k][n], read transposed: blocks (k0, n0),
// (k0 + 8, n0), (k0, n0 + 8), (k0 + 8, n0 + 8).
__device__ inline void load_b_pair_trans(uint32_t (&b0)[2], uint32_t (&b1)[2], const bf16_dev* b,
                                         int ld, int k0, int n0, int lane) {
  uint32_t r[4];
  ldmatrix_x4_trans(r, b + (k0 + lane % 8 + 8 * (lane / 8 % 2)) * ld + n0 + 8 * (lane / 16));
  b0[0] = r[0], b0[1] = r[1], b1[0] = r[2], b1[1] = r[3];
}

// d += A B on one m16n8k16 tile, fp32 accumulation.
__device__ inline void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// A warp's 16 rows row0.. of a fixed row-major [64][D + kPad] shared tile as the A operand of
// products over D: with Held, its fragments (one a k-step) are loaded once into registers and
// kept over a loop; else each use reads them by ldmatrix.
template <int D, bool Held>
struct RowsA {
  const bf16_dev* tile;
  int row0, lane;
  uint32_t frag[Held ? D / 16 : 1][4];
  __device__ RowsA(const bf16_dev* tile_, int row0_, int lane_)
      : tile(tile_), row0(row0_), lane(lane_) {
    if constexpr (Held)
#pragma unroll
      for (int k0 = 0; k0 < D; k0 += 16) load_a(frag[k0 / 16], tile, D + kPad, row0, k0, lane);
  }
  // a = the fragment of k-step k0 / 16
  __device__ void at(uint32_t (&a)[4], int k0) const {
    if constexpr (Held)
#pragma unroll
      for (int e = 0; e < 4; ++e) a[e] = frag[k0 / 16][e];
    else
      load_a(a, tile, D + kPad, row0, k0, lane);
  }
};

// c[n-tile][..] += A Bt^T over a depth of D (multiple of 16): A = the warp's rows a_rows, Bt =
// rows 0 .. 8 N of the row-major [n][D] tile `bt`.
template <int N, int D, bool Held>
__device__ inline void mma_tile(float (&c)[N][4], const RowsA<D, Held>& a_rows,
                                const bf16_dev* bt, int ldb, int lane) {
  static_assert(N % 2 == 0, "n-tiles are read in pairs");
#pragma unroll
  for (int k0 = 0; k0 < D; k0 += 16) {
    uint32_t a[4];
    a_rows.at(a, k0);
#pragma unroll
    for (int n = 0; n < N; n += 2) {
      uint32_t b0[2], b1[2];
      load_b_pair(b0, b1, bt, ldb, 8 * n, k0, lane);
      mma_bf16(c[n], a, b0);
      mma_bf16(c[n + 1], a, b1);
    }
  }
}

// acc[n-tile][..] += L R over a depth of 8 NL: L = the fp32 accumulators l (16 x 8 NL, rounded
// to bf16), R the row-major [8 NL][8 NACC] tile `r` (read transposed).
template <int NACC, int NL>
__device__ inline void mma_from_acc(float (&acc)[NACC][4], const float (&l)[NL][4],
                                    const bf16_dev* r, int ldr, int lane) {
  static_assert(NACC % 2 == 0, "n-tiles are read in pairs");
#pragma unroll
  for (int j = 0; j < NL / 2; ++j) {
    uint32_t a[4];
    a_from_acc(a, l, j);
#pragma unroll
    for (int n = 0; n < NACC; n += 2) {
      uint32_t b0[2], b1[2];
      load_b_pair_trans(b0, b1, r, ldr, 16 * j, 8 * n, lane);
      mma_bf16(acc[n], a, b0);
      mma_bf16(acc[n + 1], a, b1);
    }
  }
}

// ---- kernels

template <int D>
__global__ void __launch_bounds__(kMmaThreads, min_blocks<Pass::Forward, D>())
    attention_mma_fwd_kernel(AttnDims d, const bf16_dev* __restrict__ q,
                             const bf16_dev* __restrict__ k, const bf16_dev* __restrict__ v,
                             bool causal, int64_t window, float scale,
                             bf16_dev* __restrict__ o,  // [B,T,H,D] overwritten
                             float* __restrict__ lse,   // [B,H,T] overwritten, or null
                             int n_tiles) {             // query tiles per (b, h)
  constexpr int ld = D + kPad, NS = kKeyTile / 8, NO = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16_dev* Qs = reinterpret_cast<bf16_dev*>(smem_raw);  // [64][ld]
  bf16_dev* Ks = Qs + kTile * ld;                        // [2][64][ld]: this tile, the next
  bf16_dev* Vs = Ks + 2 * kKeyTile * ld;                 // [2][64][ld]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int row0 = kWarpRows * warp;
  const MaskRule mask{d.T, causal, window};
  const QueryTile qt = query_tile(d, mask, n_tiles, kTile);
  const int64_t T = d.T, bh = qt.bh, b = qt.b, h = qt.h, i0 = qt.i0, last = qt.last;
  const int nq = qt.nq;

  const HeadRows k_rows = head_rows<D>(k, b, T, d.Hkv, qt.c),
                 v_rows = head_rows<D>(v, b, T, d.Hkv, qt.c);
  if (qt.j_begin <= last) fetch_kv<D>(Ks, Vs, 0, qt.j_begin, k_rows, v_rows, T);
  cp_async_commit();
  load_tile<D, kTile, false>(Qs, head_rows<D>(q, b, T, d.H, h), i0, nq);
  // Rows g and g + 8 of the warp: the softmax state and the output accumulator.
  OnlineSoftmax softmax(scale);
  float acc[NO][4];
  zero(acc);
  __syncthreads();  // Q stored; the warp's rows of it held over the loop
  const RowsA<D, true> q_rows(Qs, row0, lane);
  int buf = 0;
  for (int64_t j0 = qt.j_begin; j0 <= last; j0 += kKeyTile, buf ^= 1) {
    cp_async_wait<0>();  // this thread's copies of this tile have landed
    __syncthreads();     // every thread's, and the reads of the other buffer (the previous
                         // tile) are done
    if (j0 + kKeyTile <= last) fetch_kv<D>(Ks, Vs, buf ^ 1, j0 + kKeyTile, k_rows, v_rows, T);
    cp_async_commit();
    const bf16_dev *Kt = Ks + buf * kKeyTile * ld, *Vt = Vs + buf * kKeyTile * ld;
    const bool whole = mask.covers(i0, i0 + kTile, j0, j0 + kKeyTile);
    float s[NS][4];
    zero(s);
    mma_tile(s, q_rows, Kt, ld, lane);
    if (!whole) softmax.mask(s, mask, i0 + row0 + g, j0, t);
    float correction[2];
    const bool moved = softmax.step(s, whole, correction);
    if (__any_sync(0xffffffffu, moved))
#pragma unroll
      for (int nt = 0; nt < NO; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nt][e] *= correction[e / 2];
    mma_from_acc<NO, NS>(acc, s, Vt, ld, lane);  // O += P V, P in bf16
  }
  softmax.finish(acc, lse ? lse + bh * T + i0 : nullptr, row0 + g, nq, t);
  store_rows<D>(acc, 1.f, o, b, i0, row0, nq, T, d.H, h, g, t);
}

// D[b,h,t] = dout[b,t,h,:] . o[b,t,h,:] in f32, one warp per (b, t, h) row.
__global__ void attention_mma_delta_kernel(AttnDims d, const bf16_dev* __restrict__ dout,
                                           const bf16_dev* __restrict__ o, float* __restrict__ D) {
  const int64_t rows = d.B * d.T * d.H, V = d.V;
  const int lane = threadIdx.x % 32;
  const int64_t n_warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
       row += n_warps) {
    float sum = 0.f;
    for (int64_t x = lane; x < V; x += 32)
      sum += __bfloat162float(dout[row * V + x]) * __bfloat162float(o[row * V + x]);
    sum = warp_reduce(sum, SumOp());
    if (lane == 0) {
      const int64_t h = row % d.H, bt = row / d.H, t = bt % d.T, b = bt / d.T;
      D[(b * d.H + h) * d.T + t] = sum;
    }
  }
}

template <int D>
__global__ void __launch_bounds__(kMmaThreads, min_blocks<Pass::DKDV, D>())
    attention_mma_dkdv_kernel(AttnDims d, const bf16_dev* __restrict__ q,
                              const bf16_dev* __restrict__ k, const bf16_dev* __restrict__ v,
                              bool causal, int64_t window, float scale,
                              const bf16_dev* __restrict__ dout, const float* __restrict__ lse,
                              const float* __restrict__ Dsum,  // [B,H,T] dO . O
                              bf16_dev* __restrict__ dk, bf16_dev* __restrict__ dv,
                              int n_tiles) {  // key tiles per (b, kv head)
  constexpr int QT = kBwdQueries, ld = D + kPad, NQ = QT / 8, NO = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16_dev* Ks = reinterpret_cast<bf16_dev*>(smem_raw);        // [64][ld]
  bf16_dev* Vs = Ks + kTile * ld;                              // [64][ld]
  bf16_dev* Qs = Vs + kTile * ld;                              // [2][QT][ld]: this tile, the next
  bf16_dev* dOs = Qs + 2 * QT * ld;                            // [2][QT][ld]
  float* lse_s = reinterpret_cast<float*>(dOs + 2 * QT * ld);  // [2][QT]
  float* D_s = lse_s + 2 * QT;                                 // [2][QT]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int row0 = kWarpRows * warp;  // the warp's keys, local to the tile
  const KeyTile kt = key_tile(d, n_tiles, kTile);
  const int64_t b = kt.b, c = kt.c, T = d.T, j0 = kt.j0;
  const int nk = kt.nk;
  const MaskRule mask{T, causal, window};
  const float scale2 = scale * kLog2e;  // the exponents in log2 units (fast_exp2)

  load_tile<D, kTile, false>(Ks, head_rows<D>(k, b, T, d.Hkv, c), j0, nk);
  load_tile<D, kTile, false>(Vs, head_rows<D>(v, b, T, d.Hkv, c), j0, nk);
  float dk_acc[NO][4], dv_acc[NO][4];  // rows: the warp's keys
  zero(dk_acc);
  zero(dv_acc);
  const QueryWalk qw(kt, mask, QT);
  // Q, dO, lse, D of query tile (hh, ii) into buffer buf, asynchronously
  auto fetch = [&](int64_t hh, int64_t ii, int buf) {
    const int nq = static_cast<int>(T - ii < QT ? T - ii : QT);
    load_tile<D, QT, true>(Qs + buf * QT * ld, head_rows<D>(q, b, T, d.H, hh), ii, nq);
    load_tile<D, QT, true>(dOs + buf * QT * ld, head_rows<D>(dout, b, T, d.H, hh), ii, nq);
    load_vec_async(lse_s + buf * QT, QT, lse + (b * d.H + hh) * T + ii, nq);
    load_vec_async(D_s + buf * QT, QT, Dsum + (b * d.H + hh) * T + ii, nq);
  };
  const bool any = qw.any();
  if (any) fetch(qw.h_begin, qw.i_begin, 0);
  cp_async_commit();
  // At D = 64 the warp's rows of K and V are held over the whole loop (32 registers; at D = 128
  // the 64 they would take spill), read from shared memory at each use otherwise.
  constexpr bool kHeld = D == 64;
  if constexpr (kHeld) __syncthreads();  // K and V stored
  const RowsA<D, kHeld> k_rows(Ks, row0, lane), v_rows(Vs, row0, lane);
  int buf = 0;
  for (int64_t h = qw.h_begin, i0 = qw.i_begin; any && h < qw.h_end; buf ^= 1) {
    int64_t h_next = h, i_next = i0;
    qw.next(h_next, i_next);
    cp_async_wait<0>();  // this thread's copies of this tile have landed
    __syncthreads();     // every thread's, and the reads of the other buffer (the previous
                         // tile) are done
    if (h_next < qw.h_end) fetch(h_next, i_next, buf ^ 1);
    cp_async_commit();
    const bf16_dev *Qt = Qs + buf * QT * ld, *dOt = dOs + buf * QT * ld;
    const float *lse_t = lse_s + buf * QT, *D_t = D_s + buf * QT;
    float pt[NQ][4], dst[NQ][4];  // P^T, then dS^T: rows keys, columns queries
    zero(pt);
    zero(dst);
    const bool whole = mask.covers(i0, i0 + QT, j0, j0 + kTile);
    mma_tile(pt, k_rows, Qt, ld, lane);    // S^T = K Q^T
    mma_tile(dst, v_rows, dOt, ld, lane);  // dP^T = V dO^T
    ds_t_from_scores(pt, dst, mask, whole, i0, j0 + row0 + g, t, scale2, lse_t, D_t);
    mma_from_acc<NO, NQ>(dv_acc, pt, dOt, ld, lane);  // dV += P^T dO
    mma_from_acc<NO, NQ>(dk_acc, dst, Qt, ld, lane);  // dK += dS^T Q
    h = h_next, i0 = i_next;
  }
  store_rows<D>(dk_acc, scale, dk, b, j0, row0, nk, T, d.Hkv, c, g, t);
  store_rows<D>(dv_acc, 1.f, dv, b, j0, row0, nk, T, d.Hkv, c, g, t);
}

template <int D>
__global__ void __launch_bounds__(kMmaThreads, min_blocks<Pass::DQ, D>())
    attention_mma_dq_kernel(AttnDims d, const bf16_dev* __restrict__ q,
                            const bf16_dev* __restrict__ k, const bf16_dev* __restrict__ v,
                            bool causal, int64_t window, float scale,
                            const bf16_dev* __restrict__ dout, const float* __restrict__ lse,
                            const float* __restrict__ Dsum,  // [B,H,T] dO . O
                            bf16_dev* __restrict__ dq,
                            int n_tiles) {  // query tiles per (b, h)
  constexpr int ld = D + kPad, NS = kKeyTile / 8, NO = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16_dev* Qs = reinterpret_cast<bf16_dev*>(smem_raw);             // [64][ld]
  bf16_dev* dOs = Qs + kTile * ld;                                  // [64][ld]
  bf16_dev* Ks = dOs + kTile * ld;                                  // [2][64][ld]
  bf16_dev* Vs = Ks + 2 * kKeyTile * ld;                            // [2][64][ld]
  float* lse_s = reinterpret_cast<float*>(Vs + 2 * kKeyTile * ld);  // [64]
  float* D_s = lse_s + kTile;                             // [64]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int row0 = kWarpRows * warp;
  const MaskRule mask{d.T, causal, window};
  const float scale2 = scale * kLog2e;  // the exponents in log2 units (fast_exp2)
  const QueryTile qt = query_tile(d, mask, n_tiles, kTile);
  const int64_t T = d.T, bh = qt.bh, b = qt.b, h = qt.h, i0 = qt.i0, last = qt.last;
  const int nq = qt.nq;

  const HeadRows k_rows = head_rows<D>(k, b, T, d.Hkv, qt.c),
                 v_rows = head_rows<D>(v, b, T, d.Hkv, qt.c);
  if (qt.j_begin <= last) fetch_kv<D>(Ks, Vs, 0, qt.j_begin, k_rows, v_rows, T);
  cp_async_commit();
  load_tile<D, kTile, false>(Qs, head_rows<D>(q, b, T, d.H, h), i0, nq);
  load_tile<D, kTile, false>(dOs, head_rows<D>(dout, b, T, d.H, h), i0, nq);
  load_vec(lse_s, kTile, lse + bh * T + i0, nq);
  load_vec(D_s, kTile, Dsum + bh * T + i0, nq);
  __syncthreads();         // lse_s, D_s complete (read into registers below)
  // At D = 64 the warp's rows of Q and dO are held over the whole loop (as in the dK/dV kernel).
  constexpr bool kHeld = D == 64;
  const RowsA<D, kHeld> q_rows(Qs, row0, lane), do_rows(dOs, row0, lane);
  float lse_r[2], D_r[2];  // rows g and g + 8 of the warp
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    lse_r[half] = kLog2e * lse_s[row0 + g + 8 * half];  // in log2 units
    D_r[half] = D_s[row0 + g + 8 * half];
  }
  float dq_acc[NO][4];
  zero(dq_acc);
  int buf = 0;
  for (int64_t j0 = qt.j_begin; j0 <= last; j0 += kKeyTile, buf ^= 1) {
    cp_async_wait<0>();  // this thread's copies of this tile have landed
    __syncthreads();     // every thread's, and the reads of the other buffer (the previous
                         // tile) are done
    if (j0 + kKeyTile <= last) fetch_kv<D>(Ks, Vs, buf ^ 1, j0 + kKeyTile, k_rows, v_rows, T);
    cp_async_commit();
    const bf16_dev *Kt = Ks + buf * kKeyTile * ld, *Vt = Vs + buf * kKeyTile * ld;
    float s[NS][4], ds[NS][4];  // P, then dS: rows queries, columns keys
    zero(s);
    zero(ds);
    const bool whole = mask.covers(i0, i0 + kTile, j0, j0 + kKeyTile);
    mma_tile(s, q_rows, Kt, ld, lane);    // S = Q K^T
    mma_tile(ds, do_rows, Vt, ld, lane);  // dP = dO V^T
    ds_from_scores(s, ds, mask, whole, i0 + row0 + g, j0, t, scale2, lse_r, D_r);
    mma_from_acc<NO, NS>(dq_acc, ds, Kt, ld, lane);  // dQ += dS K
  }
  store_rows<D>(dq_acc, scale, dq, b, i0, row0, nq, T, d.H, h, g, t);
}

// ---- launchers

void check_args(const AttentionArgs<bf16>& a, const char* op) {
  const AttnDims& d = a.d;
  HLA_CHECK(d.B > 0 && d.T > 0 && d.H > 0 && d.Hkv > 0,
            op << ": B,T,H,Hkv = " << d.B << "," << d.T << "," << d.H << "," << d.Hkv);
  HLA_CHECK(d.H % d.Hkv == 0, op << ": H=" << d.H << " must be a multiple of Hkv=" << d.Hkv);
  HLA_CHECK(a.window >= 0, op << ": window=" << a.window);
  HLA_CHECK(a.q && a.k && a.v, op << ": q, k and v are required");
  if (!softmax_attention_mma_supports(d))
    throw Error(op, "head sizes K == V, either 64 or 128",
                "K=" + std::to_string(d.K) + ", V=" + std::to_string(d.V),
                "use softmax_attention_tiled_* (f32) for other head sizes");
  // blocks are numbered (b, head, tile) in one int32 grid dimension
  HLA_CHECK(
      d.B * d.H * (d.T / kTile + 1) < (int64_t(1) << 31),
      op << ": too many (batch, head, tile) blocks: B=" << d.B << ", H=" << d.H << ", T=" << d.T);
}

const bf16_dev* dev_ptr(const bf16* p) {
  return reinterpret_cast<const bf16_dev*>(p);
}
bf16_dev* dev_ptr(bf16* p) {
  return reinterpret_cast<bf16_dev*>(p);
}

// Calls f(std::integral_constant<int, D>) for the supported head size D.
template <class F>
void visit_head_size(int64_t D, F&& f) {
  if (D == 64) return f(std::integral_constant<int, 64>{});
  f(std::integral_constant<int, 128>{});
}

int tiles_of(int64_t T, int tile) {
  return static_cast<int>((T + tile - 1) / tile);
}

constexpr size_t kBf16Bytes = sizeof(bf16_dev);

#ifdef HLA_WITH_SM90A
// Auto's choice: the warpgroup products where the device runs them, unless
// HLA_ATTENTION_MMA=sync (read once).
bool wgmma_chosen() {
  static const bool forced_sync = [] {
    const char* e = std::getenv("HLA_ATTENTION_MMA");
    return e && std::string(e) == "sync";
  }();
  return !forced_sync && attention_wgmma_runs();
}
#endif

}  // namespace

bool softmax_attention_wgmma_available() {
#ifdef HLA_WITH_SM90A
  return attention_wgmma_runs();
#else
  return false;
#endif
}

bool softmax_attention_mma_supports(const AttnDims& d) {
  return d.K == d.V && (d.K == 64 || d.K == 128);
}

void softmax_attention_mma_forward(const AttentionArgs<bf16>& a, const AttentionBf16Out& out,
                                   AttentionMma mma) {
  const char* op = "softmax_attention_mma_forward (cuda)";
  check_args(a, op);
  HLA_CHECK(out.o, op << ": o is required");
  check_aligned(a.q, op, "q");
  check_aligned(a.k, op, "k");
  check_aligned(a.v, op, "v");
  check_aligned(out.o, op, "o");
#ifdef HLA_WITH_SM90A
  if (mma == AttentionMma::Auto && wgmma_chosen()) return attention_wgmma_forward(a, out);
#else
  (void)mma;
#endif
  const AttnDims& d = a.d;
  visit_head_size(d.K, [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    const size_t smem = static_cast<size_t>(kTile + 4 * kKeyTile) * (D + kPad) * kBf16Bytes;
    const int n_tiles = tiles_of(d.T, kTile);
    auto* kernel = attention_mma_fwd_kernel<D>;
    allow_shared_memory(kernel, smem, op);
    kernel<<<static_cast<unsigned>(d.B * d.H * n_tiles), kMmaThreads, smem, stream()>>>(
        d, dev_ptr(a.q), dev_ptr(a.k), dev_ptr(a.v), a.causal, a.window,
        static_cast<float>(a.scale), dev_ptr(out.o), out.lse, n_tiles);
    CUDA_CHECK(cudaGetLastError());
  });
}

void softmax_attention_mma_backward(const AttentionArgs<bf16>& a, const AttentionBf16Grad& g,
                                    AttentionMma mma) {
  const char* op = "softmax_attention_mma_backward (cuda)";
  check_args(a, op);
  HLA_CHECK(g.dout && g.o && g.lse && g.dq && g.dk && g.dv,
            op << ": dout, o, lse, dq, dk and dv are required");
  check_aligned(a.q, op, "q");
  check_aligned(a.k, op, "k");
  check_aligned(a.v, op, "v");
  check_aligned(g.dout, op, "dout");
  check_aligned(g.dq, op, "dq");
  check_aligned(g.dk, op, "dk");
  check_aligned(g.dv, op, "dv");
  const AttnDims& d = a.d;
  const float scale = static_cast<float>(a.scale);
  const Tensor Dsum = Tensor::empty({d.B * d.H * d.T}, DType::f32, Device::CUDA);
  float* D_ptr = static_cast<float*>(const_cast<void*>(Dsum.raw_data()));
  attention_mma_delta_kernel<<<grid_for(d.B * d.H * d.T * 32), kThreads, 0, stream()>>>(
      d, dev_ptr(g.dout), dev_ptr(g.o), D_ptr);
  CUDA_CHECK(cudaGetLastError());
#ifdef HLA_WITH_SM90A
  if (mma == AttentionMma::Auto && wgmma_chosen()) return attention_wgmma_backward(a, g, D_ptr);
#else
  (void)mma;
#endif
  visit_head_size(d.K, [&](auto dc) {
    constexpr int D = decltype(dc)::value, QT = kBwdQueries;
    const int n_tiles = tiles_of(d.T, kTile);

    const size_t smem_dkdv =
        static_cast<size_t>(2 * kTile + 4 * QT) * (D + kPad) * kBf16Bytes + 4 * QT * sizeof(float);
    auto* dkdv = attention_mma_dkdv_kernel<D>;
    allow_shared_memory(dkdv, smem_dkdv, op);
    dkdv<<<static_cast<unsigned>(d.B * d.Hkv * n_tiles), kMmaThreads, smem_dkdv, stream()>>>(
        d, dev_ptr(a.q), dev_ptr(a.k), dev_ptr(a.v), a.causal, a.window, scale, dev_ptr(g.dout),
        g.lse, D_ptr, dev_ptr(g.dk), dev_ptr(g.dv), n_tiles);
    CUDA_CHECK(cudaGetLastError());

    const size_t smem_dq = static_cast<size_t>(2 * kTile + 4 * kKeyTile) * (D + kPad) * kBf16Bytes +
                           2 * kTile * sizeof(float);
    auto* dq = attention_mma_dq_kernel<D>;
    allow_shared_memory(dq, smem_dq, op);
    dq<<<static_cast<unsigned>(d.B * d.H * n_tiles), kMmaThreads, smem_dq, stream()>>>(
        d, dev_ptr(a.q), dev_ptr(a.k), dev_ptr(a.v), a.causal, a.window, scale, dev_ptr(g.dout),
        g.lse, D_ptr, dev_ptr(g.dq), n_tiles);
    CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace hla::cuda
