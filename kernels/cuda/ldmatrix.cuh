// ldmatrix (PTX ISA, "ldmatrix"), sm_75+: four 8 x 8 bf16 blocks of a shared-memory tile in one
// instruction. Lane l gives the address of row l % 8 of block l / 8 (16-byte aligned); lane
// 4 g + t receives, as r[i], row g, columns 2t..2t+1 of block i (the lower column in the low
// half), or with .trans column g, rows 2t..2t+1. So the A fragment of a row-major [m][k] tile,
// or the B fragments of two n-tiles of a B stored as its transpose [n][k], are one plain load;
// a B stored as [k][n], or an A stored as [k][m], is read with .trans.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace hla::cuda {

__device__ inline void ldmatrix_x4(uint32_t (&r)[4], const __nv_bfloat16* row) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// The same blocks of 32-bit entries (8 rows x 4 floats, lane 4 g + t receiving entry (g, t)).
__device__ inline void ldmatrix_x4(uint32_t (&r)[4], const float* row) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ inline void ldmatrix_x4_trans(uint32_t (&r)[4], const __nv_bfloat16* row) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

}  // namespace hla::cuda
