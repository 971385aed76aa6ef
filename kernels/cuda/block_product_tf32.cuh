// block_product's contract (block_product.cuh) on the tensor cores: the f32 operands, read
// through the caller's accessors, rounded to TF32 (10-bit mantissa; to nearest: ties to even on
// sm_90, where cvt.rn.tf32 is one instruction, and away from zero before, where cvt.rna is the
// only mode), the products on mma.sync.m16n8k8 with f32 accumulation:
//   out(m, n, sum_{r < R} tf32(a(m, r)) tf32(b(r, n)))   for every m < M, n < N.
// W warps (8 or 16: 256 or 512 threads); the output in 64 x 64 tiles, warp w owning rows
// 16 (w % 4) .. +16 and columns 64 / (W / 4) wide from (w / 4) times that (W = 8: four m16n8
// accumulators a warp; W = 16: two). Fragments (PTX ISA, "Matrix fragments for mma.m16n8k8"
// with .tf32), lane = 4 g + t:
//   A 16 x 8:  a0 (g, t)  a1 (g + 8, t)  a2 (g, t + 4)  a3 (g + 8, t + 4)
//   B 8 x 8:   b0 (t, g)  b1 (t + 4, g)
//   C 16 x 8:  c0 (g, 2t)  c1 (g, 2t + 1)  c2 (g + 8, 2t)  c3 (g + 8, 2t + 1)
// As in block_product: rows / columns past M / N are clamped and their results dropped, a
// thread's entries depend only on (M, N), and the reduction past R is zero-padded (the last
// step of 8 reads clamped indices and masks them).
//
// An operand may instead be SharedRows: rows of shared memory along which the reduction runs,
// A(m, r) = p[m ld + r] or B(r, n) = p[n ld + r] (B stored as its transpose). Its fragments then
// load by ldmatrix, which hands lane 4 g + t the 32-bit entry (g, t) of each of four 8 x 4
// blocks: one A fragment, or the B fragments of two n-tiles, an instruction (8 shared loads
// and their addresses before). The entries and their rounding are the same.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/ldmatrix.cuh"

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

template <int W = 8, class FA, class FB, class FOut>
__device__ __forceinline__ void block_product_tf32(int M, int N, int R, FA a, FB b, FOut out) {
  static_assert(W == 8 || W == 16, "8 or 16 warps");
  constexpr int NT = 32 / W, span = 8 * NT;  // n8 tiles and columns a warp
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  for (int m0 = 0; m0 < M; m0 += 64)
    for (int n0 = 0; n0 < N; n0 += 64) {
      const int row = m0 + 16 * (warp & 3) + g, col = n0 + span * (warp >> 2) + g;
      const int rows[2] = {min(row, M - 1), min(row + 8, M - 1)};
      int cols[NT];
#pragma unroll
      for (int j = 0; j < NT; ++j) cols[j] = min(col + 8 * j, N - 1);
      float acc[NT][4] = {};
      auto a_at = [&](int m, int r) {
        if constexpr (is_shared_rows<FA>) return a.at(m, r);
        else return a(m, r);
      };
      auto b_at = [&](int r, int n) {
        if constexpr (is_shared_rows<FB>) return b.at(n, r);
        else return b(r, n);
      };
      // ldmatrix rows: lane l gives row l % 8 of block l / 8. A: blocks (rows 0-7, 8-15) x
      // (columns r0 .. +3, r0 + 4 .. +7); B: n-tiles 2p, 2p + 1 x the same two column halves.
      const float* a_row = nullptr;
      const float* b_row[NT / 2] = {};
      if constexpr (is_shared_rows<FA>)
        a_row = a.p + min(m0 + 16 * (warp & 3) + lane % 8 + 8 * (lane / 8 % 2), M - 1) * a.ld +
                4 * (lane / 16);
      if constexpr (is_shared_rows<FB>)
#pragma unroll
        for (int p = 0; p < NT / 2; ++p)
          b_row[p] = b.p + min(col - g + 8 * (2 * p + lane / 16) + lane % 8, N - 1) * b.ld +
                     4 * (lane / 8 % 2);
      // One step of 8 along R from r0; `tail` zeroes the entries at r >= R.
      auto step = [&](int r0, bool tail) {
        int ks[2] = {r0 + t, r0 + t + 4};
        bool live[2] = {true, true};
        if (tail)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            live[h] = ks[h] < R;
            ks[h] = min(ks[h], R - 1);
          }
        uint32_t af[4];
        if (is_shared_rows<FA> && !tail) {
          uint32_t raw[4];
          ldmatrix_x4(raw, a_row + r0);  // a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3
#pragma unroll
          for (int i = 0; i < 4; ++i) af[i] = to_tf32(__uint_as_float(raw[i]));
        } else {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            af[2 * h] = live[h] ? to_tf32(a_at(rows[0], ks[h])) : 0u;
            af[2 * h + 1] = live[h] ? to_tf32(a_at(rows[1], ks[h])) : 0u;
          }
        }
        if (is_shared_rows<FB> && !tail) {
#pragma unroll
          for (int p = 0; p < NT / 2; ++p) {
            uint32_t raw[4];
            ldmatrix_x4(raw, b_row[p] + r0);  // b0, b1 of n-tile 2p, then of 2p + 1
            const uint32_t b0[2] = {to_tf32(__uint_as_float(raw[0])),
                                    to_tf32(__uint_as_float(raw[1]))};
            const uint32_t b1[2] = {to_tf32(__uint_as_float(raw[2])),
                                    to_tf32(__uint_as_float(raw[3]))};
            mma_tf32(acc[2 * p], af, b0);
            mma_tf32(acc[2 * p + 1], af, b1);
          }
        } else {
#pragma unroll
          for (int j = 0; j < NT; ++j) {
            const uint32_t bf[2] = {live[0] ? to_tf32(b_at(ks[0], cols[j])) : 0u,
                                    live[1] ? to_tf32(b_at(ks[1], cols[j])) : 0u};
            mma_tf32(acc[j], af, bf);
          }
        }
      };
      const int full = R & ~7;
#pragma unroll 2
      for (int r0 = 0; r0 < full; r0 += 8) step(r0, false);
      if (full < R) step(full, true);
      const int ocol = col - g + 2 * t;  // the accumulators' columns: 2t, 2t + 1 of each tile
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int m = row + 8 * (e >> 1), n = ocol + 8 * j + (e & 1);
          if (m < M && n < N) out(m, n, acc[j][e]);
        }
    }
}

}  // namespace hla::cuda
