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
#pragma once

#include <cstdint>

namespace hla::cuda {

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
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          af[2 * h] = live[h] ? to_tf32(a(rows[0], ks[h])) : 0u;
          af[2 * h + 1] = live[h] ? to_tf32(a(rows[1], ks[h])) : 0u;
        }
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          const uint32_t bf[2] = {live[0] ? to_tf32(b(ks[0], cols[j])) : 0u,
                                  live[1] ? to_tf32(b(ks[1], cols[j])) : 0u};
          mma_tf32(acc[j], af, bf);
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
