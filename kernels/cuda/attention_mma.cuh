// What the bf16 attention kernels share (attention_mma.cu on mma.sync, attention_wgmma_sm90a.cu
// on wgmma): the exponentials in log2 units, the rows of a head, the query tile of a block, the
// accumulator fragments as product operands, the forward's online softmax over one key tile,
// and the output rows' store. Fragments are mma.sync m16n8 C tiles (attention_mma.cu's header):
// lane 4 g + t holds c[n][e] = C[g + 8 (e / 2)][8 n + 2 t + e % 2], the rows g and g + 8 of a
// warp's 16 ("half" 0 and 1 below); wgmma's accumulators have the same layout per warp.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <limits>

#include "kernels/cuda/attention_mask.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mma_fragments.cuh"
#include "kernels/recurrence.h"

namespace hla::cuda::attention {

using kernels::AttnDims;

// 2^x on the multifunction unit, one MUFU.EX2 (ex2.approx.ftz: relative error about 2^-22).
// The exponentials run in log2 units: scores scaled by scale log2(e), the running max and the
// lse shifted to match, so each element takes one FFMA or FADD and one MUFU. (__expf(x) is
// ex2.approx of x log2(e) without ftz: a multiply, a range test and two predicated multiplies
// around the MUFU, 6 instructions an element where this takes 2.) Results below 2^-126 flush to
// 0: P is at most 1 in every row (the max, or the lse, is subtracted), so they are invisible in
// its f32 sums and its bf16 rounding.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
constexpr float kLog2e = 1.4426950408889634f;  // log2(e)
constexpr float kLn2 = 0.6931471805599453f;    // ln(2) = 1 / log2(e)
// How far (log2 units) a row's running maximum may lag its scores in the forward: exponents up
// to 2^8, far inside f32 and bf16 range.
constexpr float kStaleMax = 8.f;

constexpr int kKeyTile = 64;  // keys a step of the forward and dQ loops; wgmma dK/dV: keys a block
constexpr int kVec = 8;       // bf16 per 16-byte load

__device__ inline int64_t row_offset(int64_t b, int64_t t, int64_t T, int64_t heads, int64_t hd,
                                     int64_t D) {
  return ((b * T + t) * heads + hd) * D;
}

// The rows of one head of a [B,T,heads,D] bf16 tensor: row t starts at p + t * stride.
struct HeadRows {
  const bf16_dev* p;
  int64_t stride;
};
template <int D>
__device__ inline HeadRows head_rows(const bf16_dev* __restrict__ src, int64_t b, int64_t T,
                                     int64_t heads, int64_t hd) {
  return {src + (b * T * heads + hd) * D, heads * D};
}

// A [ROWS][D] tile moved by THREADS threads in 16-byte pieces, kPieces a thread: thread x takes
// columns col = 8 (x % (D / 8)) .. col + 7 of rows row = x / (D / 8) + kRowStep i, i < kPieces.
// The thread's first addresses are formed once; each further piece is one add.
template <int D, int ROWS, int THREADS>
struct TilePieces {
  static constexpr int kChunks = D / kVec, kRowStep = THREADS / kChunks,
                       kPieces = ROWS / kRowStep;
  static_assert(ROWS % kRowStep == 0, "a tile is a whole number of thread rows");
  int row = static_cast<int>(threadIdx.x) / kChunks;
  int col = static_cast<int>(threadIdx.x) % kChunks * kVec;
};

// The query tile of a forward or dQ block (the last tiles, which see the most keys under
// causality, run first) and the keys it walks: tiles of kKeyTile from j_begin to the one
// holding `last`.
struct QueryTile {
  int64_t bh, b, h, c;  // (b, h) as one index, batch, head, the head's kv head
  int64_t i0;           // first query
  int nq;               // queries in the tile (fewer at the end of T)
  int64_t j_begin, last;
};
__device__ inline QueryTile query_tile(const AttnDims& d, const MaskRule& mask, int n_tiles,
                                       int rows) {
  QueryTile qt;
  const int tile = n_tiles - 1 - static_cast<int>(blockIdx.x % n_tiles);
  qt.bh = blockIdx.x / n_tiles;
  qt.b = qt.bh / d.H;
  qt.h = qt.bh % d.H;
  qt.c = qt.h / (d.H / d.Hkv);
  qt.i0 = static_cast<int64_t>(tile) * rows;
  qt.nq = static_cast<int>(d.T - qt.i0 < rows ? d.T - qt.i0 : rows);
  const int64_t first = mask.first_key(qt.i0);
  qt.j_begin = first - first % kKeyTile;
  qt.last = mask.last_key(qt.i0 + qt.nq);
  return qt;
}

// The key tile of a dK/dV block: its place in the grid.
struct KeyTile {
  int64_t b, c, heads;  // batch, kv head, query heads a kv head
  int64_t j0;           // first key
  int nk;               // keys in the tile (fewer at the end of T)
};
__device__ inline KeyTile key_tile(const AttnDims& d, int n_tiles, int rows) {
  KeyTile kt;
  const int tile = static_cast<int>(blockIdx.x % n_tiles);
  const int64_t bc = blockIdx.x / n_tiles;
  kt.b = bc / d.Hkv;
  kt.c = bc % d.Hkv;
  kt.heads = d.H / d.Hkv;
  kt.j0 = static_cast<int64_t>(tile) * rows;
  kt.nk = static_cast<int>(d.T - kt.j0 < rows ? d.T - kt.j0 : rows);
  return kt;
}
// The queries that see a key tile's keys: their tiles of `step` queries from i_begin to the one
// holding `last`, walked for every query head of the tile's kv head in turn (from
// (h_begin, i_begin) by next()).
struct QueryWalk {
  int64_t i_begin, last;   // the first query tile's start, the last query that sees a key
  int64_t h_begin, h_end;  // the kv head's query heads
  int step;                // queries a tile
  __device__ QueryWalk(const KeyTile& kt, const MaskRule& mask, int step_) : step(step_) {
    const int64_t first = mask.first_query(kt.j0);
    i_begin = first - first % step;
    last = mask.last_query(kt.j0 + kt.nk);
    h_begin = kt.c * kt.heads;
    h_end = (kt.c + 1) * kt.heads;
  }
  // Whether some query sees the tile's keys.
  __device__ bool any() const { return i_begin <= last; }
  // The query tile after (h, i0): the head's next, else the next head's first.
  __device__ void next(int64_t& h, int64_t& i0) const {
    i0 += step;
    if (i0 > last) i0 = i_begin, ++h;
  }
};

// The A fragment of k-step j (columns 16 j .. 16 j + 15) from fp32 accumulators c[n-tile][4]:
// the C tiles 2 j and 2 j + 1, rounded to bf16 (pack_bf16, zero: mma_fragments.cuh).
template <int N>
__device__ inline void a_from_acc(uint32_t (&a)[4], const float (&c)[N][4], int j) {
  a[0] = pack_bf16(c[2 * j][0], c[2 * j][1]);
  a[1] = pack_bf16(c[2 * j][2], c[2 * j][3]);
  a[2] = pack_bf16(c[2 * j + 1][0], c[2 * j + 1][1]);
  a[3] = pack_bf16(c[2 * j + 1][2], c[2 * j + 1][3]);
}

// Sum / max over the 4 lanes of a quad (one accumulator row is spread over lanes 4 g .. 4 g + 3).
__device__ inline float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ inline float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

// The forward's running softmax state of a thread's two rows: the running max m of the scores
// in log2 units (scale log2(e) q.k), this thread's share l of the row sums (its columns of each
// key tile), and scale2 = scale log2(e).
struct OnlineSoftmax {
  float scale2;
  float masked;  // a raw score that scales to -inf: -inf in the scale's direction
  float m[2], l[2];
  __device__ explicit OnlineSoftmax(float scale)
      : scale2(scale * kLog2e),
        masked(scale2 >= 0.f ? -std::numeric_limits<float>::infinity()
                             : std::numeric_limits<float>::infinity()),
        m{-std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()},
        l{0.f, 0.f} {}

  // Raw scores s of keys j0.. (columns 8 n + 2 t + e % 2) for the thread's rows i_g (g) and
  // i_g + 8: the disallowed ones become `masked`.
  template <int NS>
  __device__ void mask(float (&s)[NS][4], const MaskRule& rule, int64_t i_g, int64_t j0,
                       int t) const {
#pragma unroll
    for (int nt = 0; nt < NS; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (!rule.allowed(i_g + 8 * (e / 2), j0 + 8 * nt + 2 * t + e % 2)) s[nt][e] = masked;
  }

  // One key tile: the raw scores s become P = 2^(scale2 s - m) in place (masked entries exactly
  // 0 unless `whole`), m and l move on, and correction[half] is the factor by which the row's
  // output accumulator must be scaled (1 when m stayed). Returns whether some m moved.
  template <int NS>
  __device__ bool step(float (&s)[NS][4], bool whole, float (&correction)[2]) {
    return whole ? step_tile<true>(s, correction) : step_tile<false>(s, correction);
  }
  // The same with `whole` known at compile time: the whole tiles' loop has no test an element.
  template <bool Whole, int NS>
  __device__ bool step_tile(float (&s)[NS][4], float (&correction)[2]) {
    const float neg_inf = -std::numeric_limits<float>::infinity();
    // The rows' largest scaled scores, from the raw scores' extreme in the scale's direction
    // (a warp-uniform branch): no multiply an element before the exponent's FFMA.
    float top[2] = {neg_inf, neg_inf};
    if (scale2 >= 0.f) {
#pragma unroll
      for (int nt = 0; nt < NS; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) top[e / 2] = fmaxf(top[e / 2], s[nt][e]);
    } else {
#pragma unroll
      for (int nt = 0; nt < NS; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) top[e / 2] = fmaxf(top[e / 2], -s[nt][e]);
    }
    // m moves only when a row's maximum passes it by more than kStaleMax (log2 units), so the
    // exponents stay below 2^kStaleMax and most tiles skip rescaling O; m = -inf (no allowed key
    // yet) always moves. A row without allowed keys gives top = -inf (or NaN at scale 0): no move.
    bool moved = false;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      correction[half] = 1.f;
      const float mx = fabsf(scale2) * quad_max(top[half]);
      if (mx > m[half] + kStaleMax) {
        correction[half] = fast_exp2(m[half] - mx);
        m[half] = mx;
        moved = true;
      }
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      // a row with no allowed key yet keeps m = -inf: shift it by 0 instead (no inf - inf)
      const float shift = m[half] == neg_inf ? 0.f : m[half];
      float row_sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < NS; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = s[nt][2 * half + e];
          const float raw = x;
          x = fast_exp2(fmaf(raw, scale2, -shift));
          if (!Whole && raw == masked) x = 0.f;  // exactly, whatever the scale (0 * inf is NaN)
          row_sum += x;
        }
      l[half] = correction[half] * l[half] + row_sum;
    }
    return moved;
  }

  // After the last tile: the output rows divided by their sums (rows without allowed keys stay
  // 0), and lse = ln(sum of e^(scale q.k)) of the rows (-inf without allowed keys) into lse_row
  // [half] for the quad's first lane of each row below n_rows (r_g: the row of half 0).
  template <int NO>
  __device__ void finish(float (&acc)[NO][4], float* lse_row0, int r_g, int n_rows, int t) const {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float l_row = quad_sum(l[half]);
      const float inv = l_row > 0.f ? 1.f / l_row : 0.f;
#pragma unroll
      for (int nt = 0; nt < NO; ++nt) {
        acc[nt][2 * half] *= inv;
        acc[nt][2 * half + 1] *= inv;
      }
      const int r = r_g + 8 * half;
      if (lse_row0 && t == 0 && r < n_rows)
        lse_row0[r] =
            l_row > 0.f ? m[half] * kLn2 + logf(l_row) : -std::numeric_limits<float>::infinity();
    }
  }
};

// The backward's dS = P o (dP - D) in place of dP, for the thread's rows i_g (its row g) and
// i_g + 8 and the keys j0 + 8 nt + 2 t + e % 2: P = 2^(scale2 S - lse2) with lse2 the rows' lse
// in log2 units, 0 where the mask forbids the pair (unless Whole), D = rowsum(dO o O). Whole is
// a template argument so that the loop of a whole tile has no test an element (a run-time flag
// there cost a branch an element around each exponential).
template <bool Whole, int NS>
__device__ inline void ds_from_scores(const float (&s)[NS][4], float (&dp)[NS][4],
                                      const MaskRule& mask, int64_t i_g, int64_t j0, int t,
                                      float scale2, const float (&lse2)[2],
                                      const float (&D_r)[2]) {
#pragma unroll
  for (int nt = 0; nt < NS; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int half = e / 2;  // accumulator e: row g + 8 (e / 2), column 8 nt + 2 t + e % 2
      const int64_t i = i_g + 8 * half, j = j0 + 8 * nt + 2 * t + e % 2;
      const float p =
          Whole || mask.allowed(i, j) ? fast_exp2(scale2 * s[nt][e] - lse2[half]) : 0.f;
      dp[nt][e] = p * (dp[nt][e] - D_r[half]);
    }
}
template <int NS>
__device__ inline void ds_from_scores(const float (&s)[NS][4], float (&dp)[NS][4],
                                      const MaskRule& mask, bool whole, int64_t i_g, int64_t j0,
                                      int t, float scale2, const float (&lse2)[2],
                                      const float (&D_r)[2]) {
  if (whole)
    ds_from_scores<true>(s, dp, mask, i_g, j0, t, scale2, lse2, D_r);
  else
    ds_from_scores<false>(s, dp, mask, i_g, j0, t, scale2, lse2, D_r);
}

// The dK/dV kernels' transposed form: S^T and dP^T with rows the keys j_g (the thread's row g)
// and j_g + 8, columns the queries i0 + 8 nt + 2 t + e % 2 whose lse (natural log) and D are
// lse_t[column], D_t[column]. S^T becomes P^T and dP^T becomes dS^T = P^T o (dP^T - D).
template <bool Whole, int NQ>
__device__ inline void ds_t_from_scores(float (&st)[NQ][4], float (&dpt)[NQ][4],
                                        const MaskRule& mask, int64_t i0, int64_t j_g, int t,
                                        float scale2, const float* lse_t, const float* D_t) {
#pragma unroll
  for (int nt = 0; nt < NQ; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int qc = 8 * nt + 2 * t + e % 2;
      const float p = Whole || mask.allowed(i0 + qc, j_g + 8 * (e / 2))
                          ? fast_exp2(scale2 * st[nt][e] - kLog2e * lse_t[qc])
                          : 0.f;
      st[nt][e] = p;
      dpt[nt][e] = p * (dpt[nt][e] - D_t[qc]);
    }
}
template <int NQ>
__device__ inline void ds_t_from_scores(float (&st)[NQ][4], float (&dpt)[NQ][4],
                                        const MaskRule& mask, bool whole, int64_t i0, int64_t j_g,
                                        int t, float scale2, const float* lse_t,
                                        const float* D_t) {
  if (whole)
    ds_t_from_scores<true>(st, dpt, mask, i0, j_g, t, scale2, lse_t, D_t);
  else
    ds_t_from_scores<false>(st, dpt, mask, i0, j_g, t, scale2, lse_t, D_t);
}

// Stores rows r0.. of a warp's 16 x D accumulator (times mul, as bf16) to head hd of a
// [B,T,heads,D] tensor, rows below n only.
template <int D>
__device__ inline void store_rows(const float (&c)[D / 8][4], float mul, bf16_dev* __restrict__ dst,
                                  int64_t b, int64_t t0, int row0, int n, int64_t T, int64_t heads,
                                  int64_t hd, int g, int t) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = row0 + g + 8 * half;
    if (r >= n) continue;
    bf16_dev* row = dst + row_offset(b, t0 + r, T, heads, hd, D);
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt)
      *reinterpret_cast<uint32_t*>(row + 8 * nt + 2 * t) =
          pack_bf16(mul * c[nt][2 * half], mul * c[nt][2 * half + 1]);
  }
}

}  // namespace hla::cuda::attention
