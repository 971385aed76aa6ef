// block_product's contract (block_product.cuh) on the tensor cores, f32 accumulation, with the
// f32 operands (read through the caller's accessors) rounded one of two ways (Rounding):
//   Tf32  to TF32 (10-bit mantissa; to nearest: ties to even on sm_90, where cvt.rn.tf32 is one
//         instruction, and away from zero before, where cvt.rna is the only mode), the products
//         on mma.sync.m16n8k8: an F2FP an element and an MMA a step of 8 along R;
//   Bf16  to bf16 (7-bit mantissa, nearest even, two elements an F2FP), on mma.sync.m16n8k16:
//         half the conversions and half the MMAs (each at twice TF32's rate) for the same R;
//   out(m, n, sum_{r < R} rnd(a(m, r)) rnd(b(r, n)))   for every m < M, n < N.
// W warps (8 or 16: 256 or 512 threads); the output in 64 x 64 tiles, warp w owning rows
// 16 (w % 4) .. +16 and columns 64 / (W / 4) wide from (w / 4) times that (W = 8: four m16n8
// accumulators a warp; W = 16: two; MmaTile, which mma_tile_accumulate adds to and
// mma_tile_out hands out, so that a sum may run over several calls). Fragments (PTX ISA,
// "Matrix fragments for mma.m16n8k8"
// with .tf32), lane = 4 g + t:
//   A 16 x 8:  a0 (g, t)  a1 (g + 8, t)  a2 (g, t + 4)  a3 (g + 8, t + 4)
//   B 8 x 8:   b0 (t, g)  b1 (t + 4, g)
//   C 16 x 8:  c0 (g, 2t)  c1 (g, 2t + 1)  c2 (g + 8, 2t)  c3 (g + 8, 2t + 1)
// A thread gathers those entries for a step of 8 whichever the rounding. For bf16 it gathers two
// steps (r0 and r0 + 8) and packs each pair of a row (t, t + 4) into one 32-bit register: the
// k16 fragments (mma_fragments.cuh) want columns (2t, 2t + 1) and (2t + 8, 2t + 9), and the
// reduction's order inside a step is free so long as A and B agree, so logical column 2t is
// r0 + t, 2t + 1 is r0 + t + 4, 2t + 8 is r0 + 8 + t and 2t + 9 is r0 + 12 + t (each of the 16
// once). The same loads as TF32 (ldmatrix included) thus feed the bf16 products.
// As in block_product: rows / columns past M / N are clamped and their results dropped, a
// thread's entries depend only on (M, N), and the reduction past R is zero-padded (the last
// step reads clamped indices and masks them).
//
// An operand may instead be SharedRows: rows of shared memory along which the reduction runs,
// A(m, r) = p[m ld + r] or B(r, n) = p[n ld + r] (B stored as its transpose). Its fragments then
// load by ldmatrix, which hands lane 4 g + t the 32-bit entry (g, t) of each of four 8 x 4
// blocks: one A fragment, or the B fragments of two n-tiles, an instruction (8 shared loads
// and their addresses before). The entries and their rounding are the same. With bf16 rounding
// an operand may also be bf16 shared memory, Rows16 or Cols16 (below): fragments by ldmatrix or
// ldmatrix.trans, in the k16 fragments' own column order (the other operand then gathers its
// pairs (k, k + 1) to match).
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/ldmatrix.cuh"
#include "kernels/cuda/mma_fragments.cuh"

namespace hla::cuda {

// p 16-byte aligned in shared memory, ld a multiple of 4 (every TF32 row stride is 4 mod 32,
// so the 8 rows of an ldmatrix block fall on distinct banks).
struct SharedRows {
  const float* p;
  int ld;
  __device__ float at(int row, int r) const { return p[row * ld + r]; }
};
template <class F>
constexpr bool is_shared_rows = std::is_same_v<F, SharedRows>;

// bf16 operands in shared memory (Bf16 rounding only; their entries are already bf16), read
// by ldmatrix as 8 x 8 blocks of 16-bit entries, rows 16-byte aligned (ld a multiple of 8; ld
// = 8 mod 64 puts the 8 rows of a block on distinct banks):
//   Rows16  the reduction along the rows: A(m, r) = p[m ld + r], B(r, n) = p[n ld + r]
//   Cols16  the reduction down the columns: A(m, r) = p[r ld + m], B(r, n) = p[r ld + n]
//           (ldmatrix .trans). A block reads 8 columns whole, so each row must extend to the
//           64-column tile's end past M or N (what it holds there only meets dropped outputs).
struct Rows16 {
  const bf16_dev* p;
  int ld;
  __device__ float at(int row, int r) const { return __bfloat162float(p[row * ld + r]); }
};
struct Cols16 {
  const bf16_dev* p;
  int ld;
  __device__ float at(int col, int r) const { return __bfloat162float(p[r * ld + col]); }
};
template <class F>
constexpr bool is_rows16 = std::is_same_v<F, Rows16>;
template <class F>
constexpr bool is_cols16 = std::is_same_v<F, Cols16>;
template <class F>
constexpr bool is_shared = is_shared_rows<F> || is_rows16<F> || is_cols16<F>;

// cvt.rna is emulated (an infinity test, an add, per operand); cvt.rn (PTX 7.8, sm_90) is one
// F2FP instruction. The two differ only on exact ties, by one TF32 unit.
__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
#if __CUDA_ARCH__ >= 900
  asm("cvt.rn.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
#else
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
#endif
  return r;
}

__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// acc += a b on the TF32 tensor cores at about f32's precision (3xTF32): each operand split into
// its TF32 rounding and the TF32 rounding of the rest, the three products that matter summed
// smallest first. Fragments of mma.m16n8k8 (above), raw f32 entries.
__device__ __forceinline__ void mma_3xtf32(float (&acc)[4], const float (&a)[4],
                                           const float (&b)[2]) {
  uint32_t ah[4], al[4], bh[2], bl[2];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    ah[i] = to_tf32(a[i]);
    al[i] = to_tf32(a[i] - __uint_as_float(ah[i]));
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    bh[i] = to_tf32(b[i]);
    bl[i] = to_tf32(b[i] - __uint_as_float(bh[i]));
  }
  mma_tf32(acc, al, bh);
  mma_tf32(acc, ah, bl);
  mma_tf32(acc, ah, bh);
}

enum class Rounding { Tf32, Bf16 };

// A warp's accumulators of one 64 x 64 output tile: the m16n8 tiles it owns (32 / W of them,
// as laid out above), which a sum over several calls of mma_tile_accumulate keeps.
template <int W>
struct MmaTile {
  static_assert(W == 8 || W == 16, "8 or 16 warps");
  static constexpr int NT = 32 / W, span = 8 * NT;  // n8 tiles and columns a warp
  float acc[NT][4] = {};
};

// acc += the (m0, n0) 64 x 64 tile of rnd(A) rnd(B) over R (rows and columns past M, N clamped,
// their sums to be dropped by the caller: mma_tile_out).
template <int W, Rounding Rnd, class FA, class FB>
__device__ __forceinline__ void mma_tile_accumulate(MmaTile<W>& tile, int m0, int n0, int M, int N,
                                                    int R, FA a, FB b) {
  constexpr int NT = MmaTile<W>::NT, span = MmaTile<W>::span;
  constexpr int kSub = Rnd == Rounding::Bf16 ? 2 : 1, kStep = 8 * kSub;  // steps of 8 an MMA
  constexpr bool kNatural = is_rows16<FA> || is_cols16<FA> || is_rows16<FB> || is_cols16<FB>;
  static_assert(!kNatural || Rnd == Rounding::Bf16, "bf16 operands: bf16 rounding");
  static_assert(!kNatural || !(is_shared_rows<FA> || is_shared_rows<FB>),
                "an f32 SharedRows operand loads fragments in the reordered columns");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int row = m0 + 16 * (warp & 3) + g, col = n0 + span * (warp >> 2) + g;
  const int rows[2] = {min(row, M - 1), min(row + 8, M - 1)};
  int cols[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) cols[j] = min(col + 8 * j, N - 1);
  float (&acc)[NT][4] = tile.acc;
  auto a_at = [&](int m, int r) -> float {
    if constexpr (is_shared<FA>) return a.at(m, r);
    else return a(m, r);
  };
  auto b_at = [&](int r, int n) -> float {
    if constexpr (is_shared<FB>) return b.at(n, r);
    else return b(r, n);
  };
  // ldmatrix rows: lane l gives row l % 8 of block l / 8. A: blocks (rows 0-7, 8-15) x
  // (the step's first 16 bytes, its next 16); B: n-tiles 2p, 2p + 1 x the same two halves.
  // The same rows serve SharedRows (4 floats a half) and Rows16 (8 bf16).
  const int a_lrow = min(m0 + 16 * (warp & 3) + lane % 8 + 8 * (lane / 8 % 2), M - 1);
  auto b_lrow = [&](int p) { return min(col - g + 8 * (2 * p + lane / 16) + lane % 8, N - 1); };
  const float* a_row = nullptr;
  const float* b_row[NT / 2] = {};
  if constexpr (is_shared_rows<FA>) a_row = a.p + a_lrow * a.ld + 4 * (lane / 16);
  if constexpr (is_shared_rows<FB>)
#pragma unroll
    for (int p = 0; p < NT / 2; ++p) b_row[p] = b.p + b_lrow(p) * b.ld + 4 * (lane / 8 % 2);
  // One MMA step along R from r0: the raw entries of kSub steps of 8 (fa[s] = a0..a3 and
  // fb[s][j] = b0, b1 of step s, in the TF32 fragments' order), then rounded and multiplied;
  // `tail` zeroes the entries at r >= R.
  auto step = [&](int r0, bool tail) {
    float fa[kSub][4], fb[kSub][NT][2];
#pragma unroll
    for (int s = 0; s < kSub; ++s) {
      const int r = r0 + 8 * s;
      int ks[2] = {r + t, r + t + 4};
      bool live[2] = {true, true};
      if (tail)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          live[h] = ks[h] < R;
          ks[h] = min(ks[h], R - 1);
        }
      if (is_shared_rows<FA> && !tail) {
        uint32_t raw[4];
        ldmatrix_x4(raw, a_row + r);  // a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3
#pragma unroll
        for (int i = 0; i < 4; ++i) fa[s][i] = __uint_as_float(raw[i]);
      } else {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          fa[s][2 * h] = live[h] ? a_at(rows[0], ks[h]) : 0.f;
          fa[s][2 * h + 1] = live[h] ? a_at(rows[1], ks[h]) : 0.f;
        }
      }
      if (is_shared_rows<FB> && !tail) {
#pragma unroll
        for (int p = 0; p < NT / 2; ++p) {
          uint32_t raw[4];
          ldmatrix_x4(raw, b_row[p] + r);  // b0, b1 of n-tile 2p, then of 2p + 1
#pragma unroll
          for (int i = 0; i < 4; ++i) fb[s][2 * p + i / 2][i % 2] = __uint_as_float(raw[i]);
        }
      } else {
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int h = 0; h < 2; ++h) fb[s][j][h] = live[h] ? b_at(ks[h], cols[j]) : 0.f;
      }
    }
    if constexpr (Rnd == Rounding::Tf32) {
      const uint32_t af[4] = {to_tf32(fa[0][0]), to_tf32(fa[0][1]), to_tf32(fa[0][2]),
                              to_tf32(fa[0][3])};
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const uint32_t bf[2] = {to_tf32(fb[0][j][0]), to_tf32(fb[0][j][1])};
        mma_tf32(acc[j], af, bf);
      }
    } else {  // rows g and g + 8 of columns (t, t + 4) of each step of 8: a0 a1, then a2 a3
      const uint32_t af[4] = {pack_bf16(fa[0][0], fa[0][2]), pack_bf16(fa[0][1], fa[0][3]),
                              pack_bf16(fa[1][0], fa[1][2]), pack_bf16(fa[1][1], fa[1][3])};
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const uint32_t bf[2] = {pack_bf16(fb[0][j][0], fb[0][j][1]),
                                pack_bf16(fb[1][j][0], fb[1][j][1])};
        mma_bf16(acc[j], af, bf);
      }
    }
  };
  // With a bf16 shared operand (natural order): the k16 fragments as the PTX ISA lays them
  // out (mma_fragments.cuh), by ldmatrix for Rows16 / Cols16 (lane l gives row l % 8 of
  // block l / 8, the blocks in the fragments' order), element pairs (k, k + 1) otherwise.
  const bf16_dev* a16 = nullptr;
  const bf16_dev* b16[NT / 2] = {};
  if constexpr (is_rows16<FA>) a16 = a.p + a_lrow * a.ld + 8 * (lane / 16);
  if constexpr (is_cols16<FA>)
    a16 = a.p + (lane % 8 + 8 * (lane / 16)) * a.ld + m0 + 16 * (warp & 3) + 8 * (lane / 8 % 2);
  if constexpr (is_rows16<FB>)
#pragma unroll
    for (int p = 0; p < NT / 2; ++p) b16[p] = b.p + b_lrow(p) * b.ld + 8 * (lane / 8 % 2);
  if constexpr (is_cols16<FB>)
#pragma unroll
    for (int p = 0; p < NT / 2; ++p)
      b16[p] = b.p + (lane % 8 + 8 * (lane / 8 % 2)) * b.ld + col - g + 8 * (2 * p + lane / 16);
  auto step16 = [&](int r0, bool tail) {
    uint32_t af[4], bf[NT][2];
    int ks[2][2];  // the pairs' columns: r0 + 8h + 2t and + 1
    bool live[2][2];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        ks[h][e] = r0 + 8 * h + 2 * t + e;
        live[h][e] = !tail || ks[h][e] < R;
        if (tail) ks[h][e] = min(ks[h][e], R - 1);
      }
    auto a_pair = [&](int m, int h) {
      return pack_bf16(live[h][0] ? a_at(m, ks[h][0]) : 0.f,
                       live[h][1] ? a_at(m, ks[h][1]) : 0.f);
    };
    auto b_pair = [&](int n, int h) {
      return pack_bf16(live[h][0] ? b_at(ks[h][0], n) : 0.f,
                       live[h][1] ? b_at(ks[h][1], n) : 0.f);
    };
    if constexpr (is_rows16<FA> || is_cols16<FA>) {
      if (!tail) {
        if constexpr (is_rows16<FA>) ldmatrix_x4(af, a16 + r0);
        else ldmatrix_x4_trans(af, a16 + r0 * a.ld);
      }
    }
    if (!(is_rows16<FA> || is_cols16<FA>) || tail) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        af[2 * h] = a_pair(rows[0], h);
        af[2 * h + 1] = a_pair(rows[1], h);
      }
    }
    if constexpr (is_rows16<FB> || is_cols16<FB>) {
      if (!tail)
#pragma unroll
        for (int p = 0; p < NT / 2; ++p) {
          uint32_t raw[4];  // b0, b1 of n-tile 2p, then of 2p + 1
          if constexpr (is_rows16<FB>) ldmatrix_x4(raw, b16[p] + r0);
          else ldmatrix_x4_trans(raw, b16[p] + r0 * b.ld);
#pragma unroll
          for (int i = 0; i < 4; ++i) bf[2 * p + i / 2][i % 2] = raw[i];
        }
    }
    if (!(is_rows16<FB> || is_cols16<FB>) || tail) {
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) bf[j][h] = b_pair(cols[j], h);
    }
#pragma unroll
    for (int j = 0; j < NT; ++j) mma_bf16(acc[j], af, bf[j]);
  };
  const int full = R - R % kStep;
  if constexpr (kNatural) {
#pragma unroll 2
    for (int r0 = 0; r0 < full; r0 += kStep) step16(r0, false);
    if (full < R) step16(full, true);
  } else {
#pragma unroll 2
    for (int r0 = 0; r0 < full; r0 += kStep) step(r0, false);
    if (full < R) step(full, true);
  }
}

// out(m, n, sum) for the tile's entries inside M x N.
template <int W, class FOut>
__device__ __forceinline__ void mma_tile_out(const MmaTile<W>& tile, int m0, int n0, int M, int N,
                                             FOut out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int row = m0 + 16 * (warp & 3) + g;
  const int ocol = n0 + MmaTile<W>::span * (warp >> 2) + 2 * t;  // columns 2t, 2t + 1 of a tile
#pragma unroll
  for (int j = 0; j < MmaTile<W>::NT; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int m = row + 8 * (e >> 1), n = ocol + 8 * j + (e & 1);
      if (m < M && n < N) out(m, n, tile.acc[j][e]);
    }
}

// f(m, n, x_n, x_{n+1}) for the pairs of adjacent entries a thread holds of the tile at
// (m0, n0) (the C fragments' columns 2t, 2t + 1), none dropped: for stores of two entries at
// once when M and N are whole tiles.
template <int W, class F>
__device__ __forceinline__ void mma_tile_pairs(const MmaTile<W>& tile, int m0, int n0, F f) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int row = m0 + 16 * (warp & 3) + g;
  const int ocol = n0 + MmaTile<W>::span * (warp >> 2) + 2 * t;
#pragma unroll
  for (int j = 0; j < MmaTile<W>::NT; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      f(row + 8 * h, ocol + 8 * j, tile.acc[j][2 * h], tile.acc[j][2 * h + 1]);
}

template <int W = 8, Rounding Rnd = Rounding::Tf32, class FA, class FB, class FOut>
__device__ __forceinline__ void block_product_mma(int M, int N, int R, FA a, FB b, FOut out) {
  for (int m0 = 0; m0 < M; m0 += 64)
    for (int n0 = 0; n0 < N; n0 += 64) {
      MmaTile<W> tile;
      mma_tile_accumulate<W, Rnd>(tile, m0, n0, M, N, R, a, b);
      mma_tile_out(tile, m0, n0, M, N, out);
    }
}

}  // namespace hla::cuda
