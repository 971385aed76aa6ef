// Warpgroup matrix products (PTX ISA, "wgmma.mma_async"), Hopper's own tensor-core instructions:
// compiled only for the arch-specific target sm_90a (the *_sm90a.cu files, CMakeLists.txt).
// A warpgroup (4 consecutive warps, the first a multiple of 4) computes D (+)= A B for A 64 x 16
// and B 16 x N (bf16, f32 accumulators): B from shared memory through a descriptor, A from
// shared memory too or from registers. The 128 threads issue the product together; it runs
// asynchronously until wgmma::wait, and wgmma::fence orders register writes before it.
//
// Accumulators: warp w of the warpgroup holds rows 16 w .. 16 w + 15 as mma.sync m16n8 C tiles,
// one for each 8 columns: d[j][e] = D[16 w + g + 8 (e / 2)][8 j + 2 t + e % 2] (lane 4 g + t).
// A from registers: the warp's 16 rows as an mma.sync m16n8k16 A fragment (a0..a3).
//
// Shared-memory tiles, 128-byte swizzle: bf16 rows of 64 elements (128 bytes), the 16-byte
// chunk c of row r stored at chunk c ^ (r % 8); a tile with more columns is a sequence of
// [rows][64] column blocks. The tile starts 1024-byte aligned (the swizzle works on address
// bits). Such a tile [rows][cols] serves as
//   K-major (rows = M or N, cols = K; A as is, B given as its transpose): a product's 16-deep
//     k-step kk starts at block kk / 4, byte 32 (kk % 4) of the rows; 8-row groups 1024 bytes
//     apart (SBO).
//   MN-major (rows = K, cols = N; B as is, "transposed" in the instruction): k-step kk starts
//     at row 16 kk; 8-row groups 1024 bytes apart (SBO), 64-column blocks rows * 128 bytes
//     apart (LBO).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace hla::cuda::wgmma {

constexpr int kSwizzleAlign = 1024;  // bytes: a tile's base alignment
constexpr int kRowElems = 64;        // bf16 of a 128-byte row

// Element offset of (row, col) in a swizzled [rows][cols] tile.
__host__ __device__ constexpr int swizzled(int row, int col, int rows) {
  return (col / kRowElems) * rows * kRowElems + row * kRowElems +
         (((col % kRowElems) / 8) ^ (row % 8)) * 8 + col % 8;
}

// Descriptor of a swizzled operand at shared-memory byte address `addr`, as its two 32-bit
// halves: lo = address >> 4 (bits 0-13) | LBO >> 4 << 16, hi = SBO >> 4 | layout 1 (128-byte
// swizzle) << 30 (bits 62-63 of the whole).
struct Desc {
  uint32_t lo, hi;
};
__device__ inline Desc descriptor(uint32_t addr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  return {((addr & 0x3FFFF) >> 4) | (lbo_bytes >> 4) << 16, (sbo_bytes >> 4) | 1u << 30};
}
// A descriptor moved on by `bytes` (a multiple of 16 that keeps the address below 256 KiB: the
// address field takes it without a carry).
__device__ inline Desc advance(Desc d, uint32_t bytes) {
  return {d.lo + (bytes >> 4), d.hi};
}
// Byte offsets from a tile's first k-step to k-step kk: K-major [rows][cols], MN-major.
__host__ __device__ constexpr uint32_t k_major_step(int rows, int kk) {
  return static_cast<uint32_t>((kk / 4) * rows * 128 + (kk % 4) * 32);
}
__host__ __device__ constexpr uint32_t mn_major_step(int kk) {
  return static_cast<uint32_t>(kk * 16 * 128);
}
// Descriptors of a tile at byte address addr: K-major (LBO unused: 16), MN-major [rows][cols]
// (LBO: the 64-column blocks, rows * 128 bytes apart); 8-row groups 1024 bytes apart.
__device__ inline Desc k_major(uint32_t addr) {
  return descriptor(addr, 16, 1024);
}
__device__ inline Desc mn_major(uint32_t addr, int rows) {
  return descriptor(addr, static_cast<uint32_t>(rows) * 128, 1024);
}

__device__ inline void fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ inline void commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Returns once at most N of the warpgroup's committed groups are still running.
template <int N>
__device__ inline void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accesses of accumulators across the asynchronous products.
template <int N>
__device__ inline void fence_operands(float (&d)[N][4]) {
#pragma unroll
  for (int j = 0; j < N; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[j][e])::"memory");
}

// Generic-proxy writes to shared memory (stores, cp.async) made visible to the products' reads.
__device__ inline void fence_shared_for_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

#define HLA_WG_ACC4(d, j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define HLA_WG_ACC32(d)                                                                          \
  HLA_WG_ACC4(d, 0), HLA_WG_ACC4(d, 1), HLA_WG_ACC4(d, 2), HLA_WG_ACC4(d, 3), HLA_WG_ACC4(d, 4), \
      HLA_WG_ACC4(d, 5), HLA_WG_ACC4(d, 6), HLA_WG_ACC4(d, 7)
#define HLA_WG_ACC64(d)                                                                          \
  HLA_WG_ACC32(d), HLA_WG_ACC4(d, 8), HLA_WG_ACC4(d, 9), HLA_WG_ACC4(d, 10), HLA_WG_ACC4(d, 11), \
      HLA_WG_ACC4(d, 12), HLA_WG_ACC4(d, 13), HLA_WG_ACC4(d, 14), HLA_WG_ACC4(d, 15)
#define HLA_WG_D32                                                                         \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, " \
  "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define HLA_WG_D64                                                                             \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "     \
  "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, " \
  "%37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, " \
  "%55, %56, %57, %58, %59, %60, %61, %62, %63}"

// d (+)= A B, 64 x 64 x 16: A and B K-major in shared memory (descriptors a, b).
__device__ inline void mma_ss_n64(float (&d)[8][4], Desc a, Desc b, bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\n.reg .b64 da, db;\nsetp.ne.b32 p, %36, 0;\n"
      "mov.b64 da, {%32, %33};\nmov.b64 db, {%34, %35};\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " HLA_WG_D32
      ", da, db, p, 1, 1, 0, 0;\n}\n"
      : HLA_WG_ACC32(d)
      : "r"(a.lo), "r"(a.hi), "r"(b.lo), "r"(b.hi), "r"(static_cast<int>(accumulate)));
}

// d += A B, 64 x 64 x 16: A from registers, B MN-major in shared memory (descriptor b).
__device__ inline void mma_rs_n64(float (&d)[8][4], const uint32_t (&a)[4], Desc b) {
  asm volatile(
      "{\n.reg .pred p;\n.reg .b64 db;\nsetp.ne.b32 p, %38, 0;\nmov.b64 db, {%36, %37};\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " HLA_WG_D32
      ", {%32, %33, %34, %35}, db, p, 1, 1, 1;\n}\n"
      : HLA_WG_ACC32(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b.lo), "r"(b.hi), "r"(1));
}

// d += A B, 64 x 128 x 16: A from registers, B MN-major in shared memory (descriptor b).
__device__ inline void mma_rs_n128(float (&d)[16][4], const uint32_t (&a)[4], Desc b) {
  asm volatile(
      "{\n.reg .pred p;\n.reg .b64 db;\nsetp.ne.b32 p, %70, 0;\nmov.b64 db, {%68, %69};\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " HLA_WG_D64
      ", {%64, %65, %66, %67}, db, p, 1, 1, 1;\n}\n"
      : HLA_WG_ACC64(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b.lo), "r"(b.hi), "r"(1));
}

// d += A B, 64 x N x 16 for N in {64, 128} (the width of d): mma_rs_n64 or mma_rs_n128.
template <int NT>
__device__ inline void mma_rs(float (&d)[NT][4], const uint32_t (&a)[4], Desc b) {
  static_assert(NT == 8 || NT == 16, "N = 64 or 128");
  if constexpr (NT == 8)
    mma_rs_n64(d, a, b);
  else
    mma_rs_n128(d, a, b);
}

#undef HLA_WG_ACC4
#undef HLA_WG_ACC32
#undef HLA_WG_ACC64
#undef HLA_WG_D32
#undef HLA_WG_D64

}  // namespace hla::cuda::wgmma
