// The bf16 tensor-core products of the gated linear family's kernels: fragments and helpers of
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (sm_80+). Fragments (PTX ISA, "Matrix fragments for
// mma.m16n8k16"), lane = 4 g + t (g = groupID, t = threadID_in_group):
//   A [16 x 16] row-major, 4 .b32 of 2 bf16 (lower index in the low half):
//     a0 = (g, 2t..2t+1)  a1 = (g+8, 2t..2t+1)  a2 = (g, 2t+8..2t+9)  a3 = (g+8, 2t+8..2t+9)
//   B [16 x 8] (k x n), 2 .b32:  b0 = (k = 2t..2t+1, n = g)  b1 = (k = 2t+8..2t+9, n = g)
//   C/D [16 x 8] fp32, 4 floats:  c0, c1 = (g, 2t), (g, 2t+1)   c2, c3 = (g+8, 2t), (g+8, 2t+1)
// Two C tiles of adjacent 8 columns are one A fragment of 16 columns (c of the first tile gives
// a0, a1, of the second a2, a3): the score rows feed the next product from registers.
//
// Shared-memory tiles are read into fragments with ldmatrix (ldmatrix.cuh): an A stored row-major
// [m][k] or a B stored as its transpose [n][k] with the plain load, an A stored as [k][m] or a B
// stored as [k][n] with .trans.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ldmatrix.cuh"

namespace hla::cuda {

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

// Two consecutive bf16 (4-byte aligned) as a float2.
__device__ inline float2 pair_of(const bf16_dev* p) {
  const __nv_bfloat162 x = *reinterpret_cast<const __nv_bfloat162*>(p);
  return make_float2(__bfloat162float(x.x), __bfloat162float(x.y));
}

// 8 bf16 (one 16-byte load) as floats, the lowest address first.
__device__ inline void unpack8(const uint4& u, float (&out)[8]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int x = 0; x < 4; ++x) {
    __nv_bfloat162 p;
    memcpy(&p, &w[x], sizeof(p));
    out[2 * x] = __bfloat162float(p.x);
    out[2 * x + 1] = __bfloat162float(p.y);
  }
}

// 8 consecutive bf16 / f32 values (16-byte aligned) as floats.
__device__ inline void load8(const bf16_dev* p, float (&out)[8]) {
  unpack8(*reinterpret_cast<const uint4*>(p), out);
}
__device__ inline void load8(const float* p, float (&out)[8]) {
  const float4 lo = *reinterpret_cast<const float4*>(p);
  const float4 hi = *reinterpret_cast<const float4*>(p + 4);
  out[0] = lo.x, out[1] = lo.y, out[2] = lo.z, out[3] = lo.w;
  out[4] = hi.x, out[5] = hi.y, out[6] = hi.z, out[7] = hi.w;
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
// The same from value2(row, col) = the pair (col, col + 1) of a row, col even.
template <class F>
__device__ inline void a_fragment2(uint32_t (&a)[4], const Lane& L, F value2) {
  float2 p = value2(L.g, 2 * L.t);
  a[0] = pack_bf16(p.x, p.y);
  p = value2(L.g + 8, 2 * L.t);
  a[1] = pack_bf16(p.x, p.y);
  p = value2(L.g, 2 * L.t + 8);
  a[2] = pack_bf16(p.x, p.y);
  p = value2(L.g + 8, 2 * L.t + 8);
  a[3] = pack_bf16(p.x, p.y);
}
// The same from value2(k, n) = the pair (k, k + 1) at column n, k even.
template <class F>
__device__ inline void b_fragment2(uint32_t (&b)[2], const Lane& L, F value2) {
  float2 p = value2(2 * L.t, L.g);
  b[0] = pack_bf16(p.x, p.y);
  p = value2(2 * L.t + 8, L.g);
  b[1] = pack_bf16(p.x, p.y);
}
// Two consecutive bf16 (4-byte aligned) as the .b32 register of a fragment, unconverted.
__device__ inline uint32_t bits_of(const bf16_dev* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}
// a_fragment2 / b_fragment2 for operands already in bf16: bits2(row, col) = the pair (col,
// col + 1) as its 32 bits (bits_of), so no value goes through float and back.
template <class F>
__device__ inline void a_fragment_bits(uint32_t (&a)[4], const Lane& L, F bits2) {
  a[0] = bits2(L.g, 2 * L.t);
  a[1] = bits2(L.g + 8, 2 * L.t);
  a[2] = bits2(L.g, 2 * L.t + 8);
  a[3] = bits2(L.g + 8, 2 * L.t + 8);
}
template <class F>
__device__ inline void b_fragment_bits(uint32_t (&b)[2], const Lane& L, F bits2) {
  b[0] = bits2(2 * L.t, L.g);
  b[1] = bits2(2 * L.t + 8, L.g);
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

// acc[n-tile] += a B for every one of the NT n-tiles, B = rows k0..k0+15 of a row-major
// [k][8 NT] bf16 tile in shared memory (row stride ld), its fragments read through ldmatrix.trans
// two n-tiles at a time.
template <int NT>
__device__ inline void mma_rows_trans(float (&acc)[NT][4], const uint32_t (&a)[4],
                                      const bf16_dev* tile, int ld, int k0, int lane) {
  static_assert(NT % 2 == 0, "n-tiles are read in pairs");
#pragma unroll
  for (int p = 0; p < NT / 2; ++p) {
    uint32_t b[4];
    ldmatrix_x4_trans(
        b, tile + (k0 + lane % 8 + 8 * (lane / 8 % 2)) * ld + 16 * p + 8 * (lane / 16));
    const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
    mma_bf16(acc[2 * p], a, b0);
    mma_bf16(acc[2 * p + 1], a, b1);
  }
}


// The A fragment of rows row0..row0+15, columns col0..col0+15 of a row-major tile.
__device__ inline void a_rows(uint32_t (&a)[4], const bf16_dev* tile, int ld, int row0, int col0,
                              int lane) {
  ldmatrix_x4(a, tile + (row0 + lane % 8 + 8 * (lane / 8 % 2)) * ld + col0 + 8 * (lane / 16));
}
// The A fragment of a transpose: A[m][k] = tile[k0 + k][m0 + m].
__device__ inline void a_rows_trans(uint32_t (&a)[4], const bf16_dev* tile, int ld, int k0, int m0,
                                    int lane) {
  ldmatrix_x4_trans(a, tile + (k0 + lane % 8 + 8 * (lane / 16)) * ld + m0 + 8 * (lane / 8 % 2));
}

// acc[n-tile] += a B for the NT n-tiles of a B stored as its transpose, B[k][n] = tile[n][k0 + k]
// (rows n = 0 .. 8 NT - 1 of the tile), read through the plain ldmatrix two n-tiles at a time.
template <int NT>
__device__ inline void mma_rows(float (&acc)[NT][4], const uint32_t (&a)[4], const bf16_dev* tile,
                                int ld, int k0, int lane) {
  static_assert(NT % 2 == 0, "n-tiles are read in pairs");
#pragma unroll
  for (int p = 0; p < NT / 2; ++p) {
    uint32_t b[4];
    ldmatrix_x4(b, tile + (16 * p + lane % 8 + 8 * (lane / 16)) * ld + k0 + 8 * (lane / 8 % 2));
    const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
    mma_bf16(acc[2 * p], a, b0);
    mma_bf16(acc[2 * p + 1], a, b1);
  }
}

// acc += P B over the key blocks b <= w of a chunk's score rows (C tiles, 16 keys a block): P's
// tiles 2b, 2b + 1 as the A operand, B = rows 16b .. 16b + 15 of a row-major tile.
template <int NP, int NT>
__device__ inline void mma_causal_rows(float (&acc)[NT][4], const float (&P)[NP][4],
                                       const bf16_dev* tile, int ld, int w, int lane) {
#pragma unroll
  for (int b = 0; b < NP / 2; ++b) {
    if (b > w) continue;
    uint32_t a[4];
    a_from_acc(a, P[2 * b], P[2 * b + 1]);
    mma_rows_trans(acc, a, tile, ld, 16 * b, lane);
  }
}

// acc += S^T B over the blocks b >= w of a chunk's rows that hold rows (16 b < n): S a shared
// [C][ls] score tile whose column block R0 .. R0 + 15 (this warp's rows) is read transposed as
// the A operand, B = rows 16b .. 16b + 15 of a row-major tile (the transpose of
// mma_causal_rows: dv = A^T do, dk = dA^T q).
template <int NB, int NT>
__device__ inline void mma_anticausal_rows(float (&acc)[NT][4], const bf16_dev* S, int ls, int R0,
                                           const bf16_dev* tile, int ld, int w, int n, int lane) {
#pragma unroll
  for (int b = 0; b < NB; ++b) {
    if (b < w || 16 * b >= n) continue;
    uint32_t a[4];
    a_rows_trans(a, S, ls, 16 * b, R0, lane);
    mma_rows_trans(acc, a, tile, ld, 16 * b, lane);
  }
}

// Stores the accumulator rows R0 + g and R0 + g + 8 that are < n to dst (bf16, row stride
// `stride`, columns from 0).
template <int NT>
__device__ inline void store_rows(const float (&acc)[NT][4], bf16_dev* dst, int64_t stride, int R0,
                                  int n, const Lane& L) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = R0 + L.g + 8 * h;
      if (r < n)
        *reinterpret_cast<__nv_bfloat162*>(dst + r * stride + 8 * nt + 2 * L.t) =
            __floats2bfloat162_rn(acc[nt][2 * h], acc[nt][2 * h + 1]);
    }
}

}  // namespace hla::cuda
