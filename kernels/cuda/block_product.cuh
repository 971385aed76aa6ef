// One thread block computes a small matrix product for the chunked recurrences:
//   out(m, n, sum_{r < R} a(m, r) b(r, n))   for every m < M, n < N,
// the operands read through the caller's accessors (shared or global memory, either way round,
// scaled or masked), each result handed to `out` once. 256 threads; thread (ty, tx) =
// (tid / 16, tid % 16) owns rows ty + 16 i (i < 4) and columns tx + 16 j (j < TN) of every
// 64 x 16 TN tile of the output and keeps them in registers over the R steps: per step a warp
// reads 2 rows of `a` (broadcasts) and 16 consecutive columns of `b`, so a row-major operand
// with an odd row stride hits distinct shared-memory banks read either way round. Indices past
// M or N are clamped and their results dropped (no branch in the loop). A thread's entries
// depend only on (M, N, TN): two products of the same shape may update the same entries with no
// barrier between them. stage_rows copies an operand into shared memory with its loads batched.
#pragma once

namespace hla::cuda {

constexpr int kProductThreads = 256;

template <class S, int TN = 4, class FA, class FB, class FOut>
__device__ __forceinline__ void block_product(int M, int N, int R, FA a, FB b, FOut out) {
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  for (int m0 = 0; m0 < M; m0 += 64)
    for (int n0 = 0; n0 < N; n0 += 16 * TN) {
      int rows[4], cols[TN];
#pragma unroll
      for (int i = 0; i < 4; ++i) rows[i] = min(m0 + ty + 16 * i, M - 1);
#pragma unroll
      for (int j = 0; j < TN; ++j) cols[j] = min(n0 + tx + 16 * j, N - 1);
      S acc[4][TN] = {};
#pragma unroll 4
      for (int r = 0; r < R; ++r) {
        S av[4], bv[TN];
#pragma unroll
        for (int i = 0; i < 4; ++i) av[i] = a(rows[i], r);
#pragma unroll
        for (int j = 0; j < TN; ++j) bv[j] = b(r, cols[j]);
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] += av[i] * bv[j];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          const int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
          if (m < M && n < N) out(m, n, acc[i][j]);
        }
    }
}

// dst[r * ld + c] = src(r, c) for r < rows, c < cols: warps over (row, group of 32 columns)
// items, lanes over a group's columns (one index division per element), each thread issuing
// kStageBatch loads before their stores so that the loads' latencies (global memory, L2)
// overlap: a 64 x 64 tile costs two round trips.
constexpr int kStageBatch = 8;
template <class S, class Src>
__device__ __forceinline__ void stage_rows(S* dst, int ld, int rows, int cols, Src src) {
  const int warps = blockDim.x >> 5, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int groups = (cols + 31) >> 5, items = rows * groups;
  for (int i0 = warp; i0 < items; i0 += warps * kStageBatch) {
    S v[kStageBatch];
    int at[kStageBatch];  // dst offset, or -1
#pragma unroll
    for (int u = 0; u < kStageBatch; ++u) {
      const int it = i0 + warps * u, r = it / groups, c = (it - r * groups) * 32 + lane;
      at[u] = it < items && c < cols ? r * ld + c : -1;
      if (at[u] >= 0) v[u] = src(r, c);
    }
#pragma unroll
    for (int u = 0; u < kStageBatch; ++u)
      if (at[u] >= 0) dst[at[u]] = v[u];
  }
}

// dst(r, c, x) for r < rows, c < cols with x = the shared src[r * ld + c] (a warp per row, lanes
// over columns): the stores of a staged tile back to memory.
template <class S, class Dst>
__device__ __forceinline__ void unstage_rows(const S* src, int ld, int rows, int cols, Dst dst) {
  const int warps = blockDim.x >> 5, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r = warp; r < rows; r += warps)
    for (int c = lane; c < cols; c += 32) dst(r, c, src[r * ld + c]);
}

}  // namespace hla::cuda
