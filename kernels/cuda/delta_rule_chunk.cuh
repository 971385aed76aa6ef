// The chunked tier of DeltaNet / Gated DeltaNet on CUDA: the UT-transform algorithm of
// kernels/cpu/recurrence/delta_rule_chunk.cpp (whose header derives every equation) in its WY
// form, chunk size C = kernels::kChunk = 64, any T (partial last chunk). Layouts (row-major,
// contiguous, device pointers in the structs of kernels/recurrence.h):
//   q, k [B,T,H,K]  v, o [B,T,H,V]  beta, g [B,T,H]  h0, hT [B,H,K,V].
//
// Per chunk of n <= C rows (Q, K L2-normalised when asked; V, beta, g its rows; S the incoming
// state [K,V]):
//   Gam_r = sum_{i<=r} g_i (chunk-local; 0 for DeltaNet);  gam = exp(Gam);  lam = exp(Gam_n - Gam)
//   M_ij = exp(Gam_i - Gam_j) for i >= j, else 0;  A = K K^T;  L = tril_{-1}(diag(beta)(A o M))
//   Ti = (I + L)^{-1};  U = Ti diag(beta) V;  W = Ti diag(beta gam) K;  P = (Q K^T) o M
//   Vn = (I + L)^{-1} diag(beta)(V - diag(gam) K S) = U - W S
//   O  = s [diag(gam) Q S + P Vn];   S <- gam_n S + (diag(lam) K)^T Vn
// Only the two lines with S are sequential over chunks. The backward, dS the gradient of a
// chunk's outgoing state:
//   dVn = s P^T dO + diag(lam) K dS;  dY = Ti^T dVn;  dRs = diag(beta) dY
//   dS <- gam_n dS + s (diag(gam) Q)^T dO - W^T dVn        (W^T dVn = (diag(gam) K)^T dRs)
// and, per chunk again in parallel, from S, dS, Vn and dY:
//   dP = s (dO Vn^T) o M;  dq = s diag(gam) dO S^T + dP K;  dv = dRs;  D = -tril_{-1}(dY Vn^T) o M
//   dk = dP^T Q + diag(lam) Vn dS^T - diag(gam) dRs S^T + (diag(beta) D + (diag(beta) D)^T) K
//   dbeta = rowsum(dY o Rs) + rowsum(D o A),  Rs = V - diag(gam) K S
//   dg_l = sum_{i >= l} (e0_i + sum_{j < l} E_ij), E / e0 the gradients of the decay factors
//   times the factors: E = dP o QK + diag(beta) (D o A) (+ dlam on row n-1), e0 = rowsum of
//   (Q o dQ_S) + (K o dK_Rs) (+ gam_n <S, dS> on row n-1); then the L2-norm backward.
// Every decay factor is exp of a difference of chunk-local log sums (<= 0 exponents).
//
// Kernels (256 threads each; with tensor-core products the walks, grad and the tiled scores
// kernel 512; products by block_product.cuh or block_product_mma.cuh):
//   prep      one block per (head, chunk), over 64-key and 64-value tiles: Ti (diagonal 16 x 16
//             blocks by substitution, then block rows), U, W, P, diag(lam) K, diag(gam) Q,
//             gam_n into a global workspace; with bf16 storage and K, V <= 128 its one-round-trip
//             form (delta_rule_prep_bf16.cu: the rows staged whole in bf16, the norms applied
//             to the products' results)
//   walk      one block per (head, 64 value columns; 32 when that is still one wave), chunks in
//             order: S, Vn = U - W S in place of U, every chunk's incoming state kept for the
//             output and the backward; the next chunk's tiles load (cp.async) under this
//             chunk's products
//   output    one block per (head, chunk, 64 value columns): O
//   walk_back one block per (head, 64 or 32 value columns, as walk), chunks in reverse: dY, the
//             outgoing dS; the next chunk's matrices load under this chunk's products when
//             their buffers fit in shared memory
//   grad      one block per (head, chunk): dq, dk, dv, dbeta, dg, when its buffers fit in shared
//             memory (f32 up to K = V = 64; bf16 heads up to 64 wide in its bf16 form,
//             delta_rule_grad_bf16.cu: every matrix in bf16 shared memory, dq and dk in
//             registers); wider heads run it as three kernels on 64-wide tiles (scores, keys,
//             rows: delta_rule_chunk_tiled.cu)
// A block's matrices live in shared memory when they fit the device's opt-in limit (227 KiB on
// H100 / H200), otherwise in a per-block global scratch with the same layout and a grid of at
// most 2 blocks per SM walking the items; each kernel is compiled for both (its Shared
// parameter), so the shared instance addresses its buffers as shared memory. Rows of shared
// [n][K] buffers are padded (K + 1 entries for FMA products; for TF32 ones 4 mod 32 when read
// along their rows, row_stride, and 8 mod 32 when read only down their columns, col_stride).
// Rows past a partial chunk are zero in every workspace matrix, so the walks need no row count.
// dtypes: f32 (products on FMAs, or on TF32 tensor cores with DeltaRuleArgs::tensor_cores), f64,
// and bf16 storage (every global read and write through value_cast; products on bf16 tensor
// cores; every workspace matrix in bf16 (OperandOf), in shared memory at half_stride and read
// by ldmatrix / ldmatrix.trans, or widened to f32 where sums read it; the walks' state and dS,
// and the backward's sums, in f32, with bf16 copies of the walks' f32 product operands); any
// K, V (sizes < 2^31).
// Outputs are overwritten.
//
// This header holds what the kernels share: the geometry, the workspaces, the tile movers, the
// factor loads, the triangular solve and the launch helpers. The kernels and their launchers
// are split over files so that they compile in parallel: delta_rule_chunk.cu (prep, walk,
// output; the forward), delta_rule_chunk_backward.cu (walk_back, the one-kernel grad; the
// backward), delta_rule_chunk_tiled.cu (the three grad kernels on 64-wide tiles), and the bf16
// forms of prep and grad (delta_rule_prep_bf16.cu, delta_rule_grad_bf16.cu).
#pragma once

#include <algorithm>
#include <type_traits>

#include "kernels/cuda/block_product.cuh"
#include "kernels/cuda/block_product_mma.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/recurrence_cuda.h"

namespace hla::cuda {

using kernels::DeltaRuleArgs;
using kernels::DeltaRuleGrad;
using kernels::DeltaRuleOut;
using kernels::RecDims;

namespace delta_chunk {


constexpr int C = static_cast<int>(kernels::kChunk);  // rows of a full chunk
constexpr int kNt = kProductThreads;  // threads of prep and output (of every kernel with FMAs)
// Value columns per walk block (walk_columns below): 64 (block_product's 4 x 4 register tiles:
// 2 shared loads per 4 FMAs, against 5 with 16 columns and 4 x 1 tiles), or 32 when B*H*V/32
// blocks still fit in one wave of the multiprocessors (the walks are sequential over the
// chunks, so a grid below one wave leaves SMs idle for the whole pass: B = 4, H = 8, V = 128
// has 64 blocks of 64 values for 132 SMs).
constexpr int kWalkColumns = 64;
constexpr int kWalkBlocks = 2;  // walk blocks per SM the registers must allow
// Threads of the walks and grad with TF32 products: 512 (one block per SM either way, their
// shared memory or the walks' grid of one block per head and 64 values: twice the warps to
// hide the staging and fragment-load latencies); 256 with FMA products (block_product's tiles).
__host__ __device__ constexpr int wide_threads(bool tc) {
  return tc ? 2 * kNt : kNt;
}
constexpr int kOutputColumns = 64;  // value columns per output block
constexpr int kSolve = 16;          // diagonal blocks of Ti solved by substitution

// A product operand whose reduction runs along the rows of a buffer: A(m, r) = p[m ld + r]
// (operand_a) or B(r, n) = p[n ld + r] (operand_b). In shared memory with TF32 products
// (InShared: the kernel's Shared, or Staged for a staged state) it is SharedRows, whose
// fragments load by ldmatrix; otherwise an accessor.
// A bf16 buffer (OperandOf) gives Rows16 in shared memory, else an accessor that widens its
// entries to float. Down the buffer's columns (Cols16 for bf16 in shared memory, else an
// accessor): operand_t, A(m, r) = p[r ld + m]; operand_c, B(r, n) = p[r ld + n].
template <class S, bool TC, bool InShared>
__device__ __forceinline__ auto operand_a(const S* p, int ld) {
  if constexpr (TC && InShared && std::is_same_v<S, bf16_dev>) return Rows16{p, ld};
  else if constexpr (TC && InShared) return SharedRows{p, ld};
  else return [=](int m, int r) { return value_cast<compute_t<S>>(p[m * ld + r]); };
}
template <class S, bool TC, bool InShared>
__device__ __forceinline__ auto operand_b(const S* p, int ld) {
  if constexpr (TC && InShared && std::is_same_v<S, bf16_dev>) return Rows16{p, ld};
  else if constexpr (TC && InShared) return SharedRows{p, ld};
  else return [=](int r, int n) { return value_cast<compute_t<S>>(p[n * ld + r]); };
}
template <class S, bool TC, bool InShared>
__device__ __forceinline__ auto operand_t(const S* p, int ld) {
  if constexpr (TC && InShared && std::is_same_v<S, bf16_dev>) return Cols16{p, ld};
  else return [=](int m, int r) { return value_cast<compute_t<S>>(p[r * ld + m]); };
}
template <class S, bool TC, bool InShared>
__device__ __forceinline__ auto operand_c(const S* p, int ld) {
  if constexpr (TC && InShared && std::is_same_v<S, bf16_dev>) return Cols16{p, ld};
  else return [=](int r, int n) { return value_cast<compute_t<S>>(p[r * ld + n]); };
}

// Row stride of a shared [rows][n] buffer. FMA products: n + 1 (odd: distinct banks read either
// way round). TF32 products: the least stride >= n that is 4 mod 32, so that a fragment read
// (8 rows g x 4 columns t, or its transpose) hits 32 distinct banks when the row is g and at
// most 2 lanes a bank when it is t (odd strides put up to 4 lanes on a bank either way).
__host__ __device__ constexpr int row_stride(int n, bool tc) {
  return tc ? n + ((4 - n % 32) % 32 + 32) % 32 : n + 1;
}
// Row stride of a buffer that TF32 products read only down its columns, an element a lane
// (B(r, n) = p[r ld + n] or A(m, r) = p[r ld + m]: lane 4 g + t reads row t, column g): the least
// stride >= n that is 8 mod 32, so that the 4 rows x 8 columns of a fragment fall on 32 distinct
// banks (at 4 mod 32 rows t and t + 1 share half their banks: two wavefronts a load). ldmatrix
// wants 4 mod 32 (row_stride), so a buffer read both ways keeps row_stride. FMA products: n + 1.
__host__ __device__ constexpr int col_stride(int n, bool tc) {
  return tc ? n + ((8 - n % 32) % 32 + 32) % 32 : n + 1;
}
// Row stride of a shared bf16 [rows][n] buffer (Rows16 / Cols16): whole 64-column tiles and 8
// more, so that a block's 8 rows of 16 bytes fall on distinct banks.
__host__ __device__ constexpr int half_stride(int n) {
  return (n + 63) / 64 * 64 + 8;
}
// The walks' state slice [K][cols], read down its columns: unpadded for FMA products (16
// consecutive columns a warp).
__host__ __device__ constexpr int walk_stride(int cols, bool tc) {
  return tc ? col_stride(cols, true) : cols;
}

// A walk's matrix [rows][ld] that its products read as B(r, j) = x[r][j]: the state or dS,
// dVn, dO (sums that must stay f32), Vn (f32, or bf16 in the bf16 path: Vn = U - W S rounded
// once, as the workspace stores it). With Copy (bf16 products in shared memory) an f32 x is
// kept in bf16 as well, x16 [rows][kCopyStride], written with it; with Copy or a bf16 x in
// shared memory (Direct) the products read bf16 by ldmatrix.trans (Cols16: the rounding they
// apply anyway) instead of an element a load.
constexpr int kCopyStride = half_stride(kWalkColumns);
template <class T, bool Copy, bool Direct = false>
struct Kept {
  static_assert(!(Copy && Direct), "a bf16 matrix needs no copy");
  T* x;
  int ld;
  bf16_dev* x16;
  __device__ compute_t<T> at(int r, int j) const { return value_cast<compute_t<T>>(x[r * ld + j]); }
  __device__ void set(int r, int j, compute_t<T> v) const {
    x[r * ld + j] = value_cast<T>(v);
    if constexpr (Copy) x16[r * kCopyStride + j] = value_cast<bf16_dev>(v);
  }
  __device__ auto operand() const {
    if constexpr (Copy) return Cols16{x16, kCopyStride};
    else if constexpr (Direct) return Cols16{x, ld};
    else return [x = x, ld = ld](int r, int j) { return value_cast<compute_t<T>>(x[r * ld + j]); };
  }
  // x[r][j] = f(r, j) for r < rows, j < cols (and the copy).
  template <class F>
  __device__ void stage(int rows, int cols, F f) const {
    stage_rows(x, ld, rows, cols, [&](int r, int j) { return value_cast<T>(f(r, j)); });
    if constexpr (Copy)
      stage_rows(x16, kCopyStride, rows, cols,
                 [&](int r, int j) { return value_cast<bf16_dev>(f(r, j)); });
  }
};

// The tensor cores' rounding of the operands for storage IO: bf16 for bf16, else TF32.
template <class IO>
constexpr Rounding kRoundingOf = std::is_same_v<IO, bf16_dev> ? Rounding::Bf16 : Rounding::Tf32;

// Every product of the kernels: f32 / f64 FMAs (block_product), or with TC the tensor cores
// (block_product_mma; f32 only): TF32 operands for f32 storage, bf16 operands for bf16 storage
// (fla's roundings: its w, u, states and v_new are bf16 tensors; the sums stay f32). All give a
// thread the same entries for the same shape.
template <class S, class IO, bool TC, int W = kNt / 32, class FA, class FB, class FOut>
__device__ __forceinline__ void product(int M, int N, int R, FA a, FB b, FOut out) {
  if constexpr (TC) {
    static_assert(std::is_same_v<S, float>, "tensor-core products: f32");
    block_product_mma<W, kRoundingOf<IO>>(M, N, R, a, b, out);
  } else {
    static_assert(W == kNt / 32, "FMA products: 256 threads");
    block_product<S>(M, N, R, a, b, out);
  }
}

// A C x N sum of products over several calls, acc (+)= A B^T, N <= 64: with tensor-core
// products in registers (one 64 x 64 MmaTile; `out` writes it to buf once), with FMA products
// in buf itself ([C][ld], each entry one thread's; `first` starts the sum). Same values either
// way as product() into buf over the same calls.
template <class S, class IO, bool TC, int W>
struct TileSum {
  S* buf;
  int ld;
  MmaTile<W> tile;  // (unused with FMA products)
  template <class FA, class FB>
  __device__ __forceinline__ void add(int N, int R, FA a, FB b, bool first) {
    if constexpr (TC) {
      static_assert(std::is_same_v<S, float>, "tensor-core products: f32");
      mma_tile_accumulate<W, kRoundingOf<IO>>(tile, 0, 0, C, N, R, a, b);
    } else {
      product<S, IO, TC, W>(C, N, R, a, b, [&](int r, int l, S x) {
        buf[r * ld + l] = first ? x : buf[r * ld + l] + x;
      });
    }
  }
  __device__ __forceinline__ void out(int N) {
    if constexpr (TC)
      mma_tile_out(tile, 0, 0, C, N, [&](int r, int l, float x) { buf[r * ld + l] = x; });
  }
};

// Sizes of one problem and the indexing shared by every kernel.
struct Geo {
  int64_t B, T, H, NC;  // NC chunks per head
  int K, V;
  __device__ int64_t row(int64_t bh, int64_t t) const {  // into [B,T,H]
    return ((bh / H) * T + t) * H + bh % H;
  }
  __device__ int rows(int64_t c) const { return static_cast<int>(min(int64_t(C), T - c * C)); }
};

// The storage of the workspace matrices (all but gam_n): bf16 with bf16 storage, else the
// compute type. Outside the walks, where the state and Vn accumulate in f32 shared memory,
// every use of them but a few row sums (<S, dS>, rowsum(dY o V), rowsum(dY o Rs)) is a product
// operand, which bf16 products round to bf16 anyway; U enters Vn = U - W S rounded (fla's u is
// a bf16 tensor too).
template <class S, class IO>
using OperandOf = std::conditional_t<std::is_same_v<IO, bf16_dev>, bf16_dev, S>;

// The global workspace; item e = head * NC + chunk indexes each per-chunk matrix.
template <class S, class Op = S>
struct Chunks {
  Op* ti;      // [BH, NC, C, C]  (I + L)^{-1}
  Op* p;       // [BH, NC, C, C]  (Q K^T) o M
  Op* u;       // [BH, NC, C, V]  Ti diag(beta) V; the walk overwrites it with Vn
  Op* w;       // [BH, NC, C, K]  Ti diag(beta gam) K
  Op* kl;      // [BH, NC, C, K]  diag(lam) K
  Op* qg;      // [BH, NC, C, K]  diag(gam) Q
  S* gn;       // [BH, NC]        gam_n
  Op* states;  // [BH, NC, K, V]  each chunk's incoming state
  Op* dy;      // [BH, NC, C, V]  backward: dY
  Op* dso;     // [BH, NC, K, V]  backward: the gradient of each chunk's outgoing state
};
template <class S, class IO>
using ChunksOf = Chunks<S, OperandOf<S, IO>>;

// Bump allocation of named buffers (element offsets), the same on host and device.
struct Arena {
  int64_t at = 0;
  __host__ __device__ int64_t take(int64_t n) {
    const int64_t o = at;
    at += n;
    return o;
  }
};

// Rows of one chunk for the one-kernel grad: normalised q, k [C][K+1] and the per-row factors.
template <class S>
struct Rows {
  S *q, *k, *beta, *Gam, *gam, *lam, *rq, *rk;
  int lk;  // row_stride(K)
};
struct RowsLayout {
  int64_t q, k, beta, Gam, gam, lam, rq, rk;
  int lk;
  __host__ __device__ RowsLayout(Arena& ar, int K, bool tc) : lk(row_stride(K, tc)) {
    q = ar.take(int64_t(C) * lk);
    k = ar.take(int64_t(C) * lk);
    beta = ar.take(C);
    Gam = ar.take(C);
    gam = ar.take(C);
    lam = ar.take(C);
    rq = ar.take(C);
    rk = ar.take(C);
  }
  template <class S>
  __device__ Rows<S> bind(S* base) const {
    return {base + q,   base + k,  base + beta, base + Gam, base + gam,
            base + lam, base + rq, base + rk,   lk};
  }
};

// M_rl = exp(Gam_r - Gam_l) for r >= l, else 0 (1 / 0 without a gate).
template <class S>
__device__ inline S decay(const S* Gam, bool gated, int r, int l) {
  if (r < l) return S(0);
  return gated ? exp(Gam[r] - Gam[l]) : S(1);
}

// Gam [C] <- its inclusive prefix sums, the chunk-local cumulative log decays (one warp, two
// rows a lane).
template <class S>
__device__ void scan_decays(S* Gam) {
  static_assert(C == 64, "two rows a lane");
  const int lane = threadIdx.x & 31;
  const S x0 = Gam[2 * lane], x1 = Gam[2 * lane + 1];
  S incl = x0 + x1;
  for (int o = 1; o < 32; o <<= 1) {
    const S y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  S before = __shfl_up_sync(0xffffffffu, incl, 1);
  if (lane == 0) before = S(0);
  Gam[2 * lane] = before + x0;
  Gam[2 * lane + 1] = incl;
}

// Item it of a tile of `words` words a row is word it - r words of row r = it / words: a shift
// when words is a power of two (every head width of a model), else the division (~20
// instructions, more than the word's copy).
struct TileRows {
  int words = 1, shift = 0;  // shift < 0: not a power of two
  TileRows() = default;
  __device__ explicit TileRows(int words_) : words(words_), shift(-1) {
    if ((words & (words - 1)) == 0) shift = __ffs(words) - 1;
  }
  __device__ __forceinline__ int row(int it) const { return shift >= 0 ? it >> shift : it / words; }
};

// One tile to stage: dst[r * ld + c] = src[r * src_ld + c] (times scale[r] unless scale is
// null) for r < rows, c < cols, rows >= n zero.
template <class S, class IO>
struct StageTile {
  S* dst;
  int ld, cols;
  const IO* src;
  int64_t src_ld;
  const S* scale;
};

// N tiles of the same rows at once. bf16 rows that start 16-byte aligned (into 16-byte aligned
// f32 rows) are read 8 elements a load, and every tile's loads of a round are issued before any
// store (4 loads in flight a thread over the tiles, or one a tile past 4: one round trip to
// memory for tiles a block covers in one round, not one a tile); the rows go out as two float4.
// Other sources go through stage_rows a tile at a time, with the same values.
template <class S, class IO, int N>
__device__ void stage_tiles(const StageTile<S, IO> (&t)[N], int rows, int n) {
  static_assert(N >= 1 && N <= 5, "up to 5 tiles at once");
  bool packed = std::is_same_v<IO, bf16_dev> && std::is_same_v<S, float>;
#pragma unroll
  for (int i = 0; i < N; ++i)
    packed = packed && t[i].cols % 8 == 0 && t[i].src_ld % 8 == 0 && t[i].ld % 4 == 0 &&
             (reinterpret_cast<uintptr_t>(t[i].src) | reinterpret_cast<uintptr_t>(t[i].dst)) % 16 == 0;
  if constexpr (std::is_same_v<IO, bf16_dev> && std::is_same_v<S, float>) {
    if (packed) {
      constexpr int kBatch = N < 4 ? 4 / N : 1;  // rounds of loads a tile
      const int nt = blockDim.x;
      TileRows tile[N];  // tile i: t[i].cols / 8 groups of 8 a row
      int items = 0;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        tile[i] = TileRows(t[i].cols / 8);
        items = max(items, rows * tile[i].words);
      }
      for (int i0 = threadIdx.x; i0 < items; i0 += nt * kBatch) {
        uint4 v[N][kBatch];
#pragma unroll
        for (int i = 0; i < N; ++i)
#pragma unroll
          for (int u = 0; u < kBatch; ++u) {
            const int it = i0 + nt * u, r = tile[i].row(it), c8 = it - r * tile[i].words;
            v[i][u] = it < rows * tile[i].words && r < n
                          ? *reinterpret_cast<const uint4*>(t[i].src + r * t[i].src_ld + c8 * 8)
                          : make_uint4(0, 0, 0, 0);
          }
#pragma unroll
        for (int i = 0; i < N; ++i) {
#pragma unroll
          for (int u = 0; u < kBatch; ++u) {
            const int it = i0 + nt * u, r = tile[i].row(it), c8 = it - r * tile[i].words;
            if (it >= rows * tile[i].words) continue;
            bf16_dev h[8];
            memcpy(h, &v[i][u], sizeof(h));
            float o[8];
#pragma unroll
            for (int k = 0; k < 8; ++k) {
              const float x = value_cast<float>(h[k]);
              o[k] = r < n ? (t[i].scale ? x * t[i].scale[r] : x) : 0.0f;
            }
            float4* d = reinterpret_cast<float4*>(t[i].dst + r * t[i].ld + c8 * 8);
            d[0] = make_float4(o[0], o[1], o[2], o[3]);
            d[1] = make_float4(o[4], o[5], o[6], o[7]);
          }
        }
      }
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < N; ++i)
    stage_rows(t[i].dst, t[i].ld, rows, t[i].cols, [&](int r, int c) {
      if (r >= n) return S(0);
      const S x = value_cast<S>(t[i].src[r * t[i].src_ld + c]);
      return t[i].scale ? x * t[i].scale[r] : x;
    });
}

// One tile (stage_tiles' single case).
template <class T>
struct Same {  // T as a parameter type that takes no part in deduction (a null scale)
  using type = T;
};
template <class S, class IO>
__device__ void stage_scaled(S* dst, int ld, int rows, int n, int cols, const IO* src,
                             int64_t src_ld, typename Same<const S*>::type scale) {
  const StageTile<S, IO> one[1] = {{dst, ld, cols, src, src_ld, scale}};
  stage_tiles(one, rows, n);
}

// 1 / |x| of a row from its sum of squares with the norm (the kernels' eps inside the sqrt),
// else 1.
template <class S>
__device__ __forceinline__ S inverse_norm(S sum_sq, bool l2norm) {
  return l2norm ? S(1) / sqrt(sum_sq + S(kernels::kL2Eps)) : S(1);
}

// Loads chunk c of head bh into w: q, k (L2-normalised when asked, rq / rk the factors), beta,
// Gam, gam, lam; rows n..C-1 zero; and the caller's `also` tiles of the chunk's rows, staged with
// q and k. Ends with a barrier.
template <class S, class IO, int M>
__device__ void load_rows(const DeltaRuleArgs<IO>& a, const Geo& g, int64_t bh, int64_t c, int n,
                          const Rows<S>& w, const StageTile<S, IO> (&also)[M]) {
  const int K = g.K, lk = w.lk, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row0 = g.row(bh, c * C), H = g.H;  // row r of the chunk: row0 + r H
  if (tid < C) {  // beta and the log decays of every row at once (rows past n: 0)
    const bool in = tid < n;
    const int64_t row = row0 + tid * H;
    w.beta[tid] = in ? value_cast<S>(a.beta[row]) : S(0);
    w.Gam[tid] = in && a.g ? value_cast<S>(a.g[row]) : S(0);
  }
  StageTile<S, IO> tiles[2 + M] = {{w.q, lk, K, a.q + row0 * K, H * K, nullptr},
                                   {w.k, lk, K, a.k + row0 * K, H * K, nullptr}};
#pragma unroll
  for (int i = 0; i < M; ++i) tiles[2 + i] = also[i];
  stage_tiles(tiles, C, n);
  __syncthreads();
  if (warp == 0) scan_decays(w.Gam);
  __syncthreads();
  for (int r = warp; r < C; r += blockDim.x >> 5) {  // one warp per row
    S rq = S(1), rk = S(1);
    if (a.l2norm_qk) {
      S sq = S(0), sk = S(0);
      for (int i = lane; i < K; i += 32) {
        sq += w.q[r * lk + i] * w.q[r * lk + i];
        sk += w.k[r * lk + i] * w.k[r * lk + i];
      }
      rq = inverse_norm(warp_reduce(sq, SumOp{}), true);
      rk = inverse_norm(warp_reduce(sk, SumOp{}), true);
      for (int i = lane; i < K; i += 32) {
        w.q[r * lk + i] *= rq;
        w.k[r * lk + i] *= rk;
      }
    }
    if (lane == 0) {
      const bool in = r < n;
      w.rq[r] = rq;
      w.rk[r] = rk;
      w.gam[r] = in ? exp(w.Gam[r]) : S(0);
      w.lam[r] = in ? exp(w.Gam[n - 1] - w.Gam[r]) : S(0);
    }
  }
  __syncthreads();
}

// ti = (I + L)^{-1} for strictly lower L ([C][lc] both), by a block of kNt threads: the
// diagonal 16 x 16 blocks by forward substitution, then block row I from the finished rows
// above it: Ti_IJ = -Ti_II sum_{J <= m < I} L_Im Ti_mJ. tmp holds [16][lc]. Ends with a barrier.
// The substitution runs right-looking: kNt / C threads a column, each holding kSolve C / kNt of
// its rows in registers; at step i the owner of row i writes it, and every row below takes its
// term -L_ri ti_i. Each entry sums the terms l = col .. r - 1 in that order, as a thread a
// column would, but the longest chain is 15 steps instead of 120 dependent loads and FMAs.
template <class S>
__device__ void invert_unit_lower(const S* L, S* ti, S* tmp, int lc) {
  static_assert(kNt % C == 0 && kSolve % (kNt / C) == 0, "whole rows per thread");
  constexpr int kSlots = kNt / C, kOwn = kSolve / kSlots;  // threads a column, rows a thread
  const int tid = threadIdx.x;
  const int nt = blockDim.x;
  for (int e = tid; e < C * C; e += nt) ti[(e / C) * lc + e % C] = S(0);
  const int col = tid % C, slot = tid / C;  // local rows slot + kSlots u of the column's block
  const int j = col % kSolve, b0 = col - j;
  S acc[kOwn];
#pragma unroll
  for (int u = 0; u < kOwn; ++u) acc[u] = S(0);
  __syncthreads();
#pragma unroll
  for (int i = 0; i < kSolve; ++i) {
    if (i % kSlots == slot && i >= j) ti[(b0 + i) * lc + col] = i == j ? S(1) : acc[i / kSlots];
    if (i == kSolve - 1) break;
    __syncthreads();
    if (i >= j) {
      const S x = ti[(b0 + i) * lc + col];
#pragma unroll
      for (int u = 0; u < kOwn; ++u) {
        const int k = slot + kSlots * u;
        if (k > i) acc[u] -= L[(b0 + k) * lc + b0 + i] * x;
      }
    }
  }
  __syncthreads();
  // The block rows: every sum runs over all of its block's columns (a compile-time count, so the
  // loads are unrolled and in flight together). The terms added past the triangle are exact
  // zeros of ti (zeroed above, written on and below its diagonal only) and come first (l < col)
  // or last (m > rr), so each entry takes the same roundings as the triangular sum.
#pragma unroll
  for (int b = 1; b < C / kSolve; ++b) {
    const int r0 = b * kSolve;
    for (int e = tid; e < kSolve * r0; e += nt) {
      const int rr = e / r0, col = e - rr * r0;
      S acc = S(0);
#pragma unroll
      for (int l = 0; l < r0; ++l) acc += L[(r0 + rr) * lc + l] * ti[l * lc + col];
      tmp[rr * lc + col] = acc;
    }
    __syncthreads();
    for (int e = tid; e < kSolve * r0; e += nt) {
      const int rr = e / r0, col = e - rr * r0;
      S acc = S(0);
#pragma unroll
      for (int m = 0; m < kSolve; ++m) acc -= ti[(r0 + rr) * lc + r0 + m] * tmp[m * lc + col];
      ti[(r0 + rr) * lc + col] = acc;
    }
    __syncthreads();
  }
}

// invert_unit_lower on the tensor cores (f32, kNt threads, ending with a barrier), for the kernels
// whose products run there. The diagonal 16 x 16 blocks: warp d < 4 solves block d by forward
// substitution, a column a lane in registers (x_i = -sum_{m < i} L_im x_m, x_j = 1 for column j;
// the terms m < j are exact zeros), while the other warps zero the blocks above the diagonal. Then
// block row I = 16 b from the finished rows above it, Ti_IJ = -Ti_II sum_{J <= m < I} L_Im Ti_mJ,
// as two products on the tensor cores (tmp = L_{I,<I} Ti_{<I,<I}, then -Ti_II tmp; an 8-column tile
// a warp): 7 barriers, and ~1,000 shared loads a chunk where FMAs would take ~6,000.
__device__ inline void invert_unit_lower_tc(const float* L, float* ti, float* tmp, int lc) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  constexpr int kBlocks = C / kSolve, kWarps = kNt / 32;
  static_assert(kWarps > kBlocks, "warps left to zero the upper blocks");
  if (warp < kBlocks) {
    const int b0 = kSolve * warp, j = lane % kSolve;
    float x[kSolve];
#pragma unroll
    for (int i = 0; i < kSolve; ++i) {
      float s = 0.f;
#pragma unroll
      for (int m = 0; m < i; ++m) s = fmaf(L[(b0 + i) * lc + b0 + m], x[m], s);
      x[i] = i == j ? 1.f : i < j ? 0.f : -s;
    }
    if (lane < kSolve)
#pragma unroll
      for (int i = 0; i < kSolve; ++i) ti[(b0 + i) * lc + b0 + j] = x[i];
  } else {
    for (int e = threadIdx.x - 32 * kBlocks; e < C * C; e += 32 * (kWarps - kBlocks)) {
      const int r = e / C, col = e - r * C;
      if (col / kSolve > r / kSolve) ti[r * lc + col] = 0.f;
    }
  }
  __syncthreads();
  for (int b = 1; b < kBlocks; ++b) {
    const int r0 = kSolve * b, n0 = 8 * warp;
    const bool active = n0 < r0;  // r0 / 8 tiles of 8 columns
    if (active) {  // tmp = L[r0 .. r0 + 16, 0 .. r0) Ti[0 .. r0, 0 .. r0)
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      const float* La = L + (r0 + g) * lc + t;
      for (int k0 = 0; k0 < r0; k0 += 8) {
        const float a[4] = {La[k0], La[8 * lc + k0], La[k0 + 4], La[8 * lc + k0 + 4]};
        const float bb[2] = {ti[(k0 + t) * lc + n0 + g], ti[(k0 + t + 4) * lc + n0 + g]};
        mma_3xtf32(acc, a, bb);
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) tmp[(g + 8 * (e / 2)) * lc + n0 + 2 * t + e % 2] = acc[e];
    }
    __syncthreads();
    if (active) {  // Ti[r0 .. r0 + 16, 0 .. r0) = -Ti_II tmp
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      const float* Ta = ti + (r0 + g) * lc + r0 + t;
#pragma unroll
      for (int k0 = 0; k0 < kSolve; k0 += 8) {
        const float a[4] = {Ta[k0], Ta[8 * lc + k0], Ta[k0 + 4], Ta[8 * lc + k0 + 4]};
        const float bb[2] = {tmp[(k0 + t) * lc + n0 + g], tmp[(k0 + t + 4) * lc + n0 + g]};
        mma_3xtf32(acc, a, bb);
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) ti[(r0 + g + 8 * (e / 2)) * lc + n0 + 2 * t + e % 2] = -acc[e];
    }
    __syncthreads();
  }
}

// A block's buffers: in shared memory (Shared), or in its slice of a global scratch when they do
// not fit. A compile-time choice, so that in the Shared kernels every buffer is known to be
// shared memory: 32-bit shared loads and address arithmetic instead of 64-bit generic ones.
template <class S, bool Shared>
__device__ __forceinline__ S* block_base(S* scratch, int64_t total) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  if constexpr (Shared) return reinterpret_cast<S*>(smem_raw);
  else return scratch + static_cast<int64_t>(blockIdx.x) * total;
}

// ---- 64-wide tiles of keys and values: the row factors of a chunk, its normalised q, k columns

constexpr int kTile = 64;  // keys or values of a tile

// Per-row factors of a chunk, [7][C] in shared memory and in the scratch alike: beta, Gam, gam,
// lam, rq, rk (Rows' meanings) and rowsum(dY o V).
template <class S>
struct Factors {
  S *beta, *Gam, *gam, *lam, *rq, *rk, *yv;
  __device__ explicit Factors(S* f)
      : beta(f), Gam(f + C), gam(f + 2 * C), lam(f + 3 * C), rq(f + 4 * C), rk(f + 5 * C),
        yv(f + 6 * C) {}
};
constexpr int kFactors = 7 * C;
// f.beta and f.Gam (the log decays, before their scan) of the chunk's rows from row0, a row every
// H (rows n..C-1 zero), by threads 0..C-1; the caller's barrier publishes them.
template <class S, class IO>
__device__ __forceinline__ void load_decays(const DeltaRuleArgs<IO>& a, const Factors<S>& f,
                                            int64_t row0, int64_t H, int n) {
  const int tid = threadIdx.x;
  if (tid < C) {
    const bool in = tid < n;
    f.beta[tid] = in ? value_cast<S>(a.beta[row0 + tid * H]) : S(0);
    f.Gam[tid] = in && a.g ? value_cast<S>(a.g[row0 + tid * H]) : S(0);
  }
}
// The factors of chunk c of head bh (rows n..C-1 zero), the norms read from global memory.
// Ends with a barrier.
template <class S, class IO>
__device__ void load_factors(const DeltaRuleArgs<IO>& a, const Geo& g, int64_t bh, int64_t c,
                             int n, const Factors<S>& f) {
  const int K = g.K, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row0 = g.row(bh, c * C), H = g.H;
  load_decays(a, f, row0, H, n);
  __syncthreads();
  if (warp == 0) scan_decays(f.Gam);
  __syncthreads();
  // Row r's factors from its sums of squares q2, k2 (unused without the norm).
  auto finish = [&](int r, S q2, S k2) {
    const bool in = r < n;
    f.rq[r] = inverse_norm(q2, a.l2norm_qk);
    f.rk[r] = inverse_norm(k2, a.l2norm_qk);
    f.gam[r] = in ? exp(f.Gam[r]) : S(0);
    f.lam[r] = in ? exp(f.Gam[n - 1] - f.Gam[r]) : S(0);
    f.yv[r] = S(0);
  };
  const int warps = blockDim.x >> 5;
  if constexpr (std::is_same_v<IO, bf16_dev> && std::is_same_v<S, float>) {
    // bf16 rows of whole 16-byte words: a lane sums 8 elements a load, K / 8 lanes a row (up to
    // 32), so that a warp's loads cover whole rows and every load of the chunk is in flight
    // before the sums (one round trip; 8 x 64 loads for K = 64).
    const int lanes = K / 8;
    if (a.l2norm_qk && K % 8 == 0 && (lanes >= 32 ? K % 256 == 0 : 32 % lanes == 0) &&
        (reinterpret_cast<uintptr_t>(a.q) | reinterpret_cast<uintptr_t>(a.k)) % 16 == 0) {
      const int lpr = min(lanes, 32), rpw = 32 / lpr, sub = lane / lpr, part = lane - sub * lpr;
      constexpr int kLoads = 4;  // rows a lane at once
      for (int r0 = warp * rpw + sub; r0 < C; r0 += warps * rpw * kLoads) {
        float sq[kLoads], sk[kLoads];
#pragma unroll
        for (int u = 0; u < kLoads; ++u) sq[u] = sk[u] = 0.0f;
        for (int i = 8 * part; i < K; i += 256) {
          uint4 x[kLoads], y[kLoads];
#pragma unroll
          for (int u = 0; u < kLoads; ++u) {
            const int r = r0 + u * warps * rpw;
            const bool in = r < n;  // n <= C
            const int64_t at = (row0 + r * H) * K + i;
            x[u] = in ? *reinterpret_cast<const uint4*>(a.q + at) : make_uint4(0, 0, 0, 0);
            y[u] = in ? *reinterpret_cast<const uint4*>(a.k + at) : make_uint4(0, 0, 0, 0);
          }
#pragma unroll
          for (int u = 0; u < kLoads; ++u) {
            bf16_dev hx[8], hy[8];
            memcpy(hx, &x[u], sizeof(hx));
            memcpy(hy, &y[u], sizeof(hy));
#pragma unroll
            for (int j = 0; j < 8; ++j) {
              const float xq = value_cast<float>(hx[j]), xk = value_cast<float>(hy[j]);
              sq[u] += xq * xq;
              sk[u] += xk * xk;
            }
          }
        }
#pragma unroll
        for (int u = 0; u < kLoads; ++u) {
          for (int o = lpr / 2; o > 0; o /= 2) {  // within the row's lanes
            sq[u] += __shfl_xor_sync(0xffffffffu, sq[u], o);
            sk[u] += __shfl_xor_sync(0xffffffffu, sk[u], o);
          }
          const int r = r0 + u * warps * rpw;
          if (part == 0 && r < C) finish(r, sq[u], sk[u]);
        }
      }
      __syncthreads();
      return;
    }
  }
  // A warp per row, kRows rows a warp at once: their loads are all in flight before the sums
  // (one round trip to memory for them, not one a row). Each row's sum runs as with one row.
  constexpr int kRows = 4;
  for (int r0 = warp; r0 < C; r0 += warps * kRows) {
    S sq[kRows], sk[kRows];
#pragma unroll
    for (int u = 0; u < kRows; ++u) sq[u] = sk[u] = S(0);
    if (a.l2norm_qk)
      for (int i = lane; i < K; i += 32) {
        S x[kRows], y[kRows];
#pragma unroll
        for (int u = 0; u < kRows; ++u) {
          const int r = r0 + u * warps;
          const bool in = r < n;  // n <= C
          x[u] = in ? value_cast<S>(a.q[(row0 + r * H) * K + i]) : S(0);
          y[u] = in ? value_cast<S>(a.k[(row0 + r * H) * K + i]) : S(0);
        }
#pragma unroll
        for (int u = 0; u < kRows; ++u) {
          sq[u] += x[u] * x[u];
          sk[u] += y[u] * y[u];
        }
      }
#pragma unroll
    for (int u = 0; u < kRows; ++u) {
      const int r = r0 + u * warps;
      const S q2 = warp_reduce(sq[u], SumOp{}), k2 = warp_reduce(sk[u], SumOp{});
      if (lane == 0 && r < C) finish(r, q2, k2);
    }
  }
  __syncthreads();
}

// Columns k0 .. k0 + nk of the chunk's normalised q (or k) rows into t [C][lt] (rows >= n zero).
template <class S, class IO>
__device__ void stage_keys(S* t, int lt, const IO* x, const S* r_norm, const Geo& g, int64_t bh,
                           int64_t c, int n, int k0, int nk) {
  stage_scaled(t, lt, C, n, nk, x + g.row(bh, c * C) * g.K + k0, g.H * g.K, r_norm);
}
// The same columns of q into tq and of k into tk, their loads together.
template <class S, class IO>
__device__ void stage_keys(S* tq, S* tk, int lt, const DeltaRuleArgs<IO>& a, const S* rq,
                           const S* rk, const Geo& g, int64_t bh, int64_t c, int n, int k0, int nk) {
  const int64_t at = g.row(bh, c * C) * g.K + k0, ld = g.H * g.K;
  const StageTile<S, IO> tiles[2] = {{tq, lt, nk, a.q + at, ld, rq}, {tk, lt, nk, a.k + at, ld, rk}};
  stage_tiles(tiles, C, n);
}

// acc = A B^T on the first tile of a sum, acc += A B^T after it: A [C][R] and B [N][R] one tile
// of R columns (row stride lab; in shared memory when InShared; f32, f64 or bf16 entries T),
// acc [C][N] (row stride lacc). Each entry has one owner thread for a given (C, N), so the sum
// over tiles needs no barrier of its own.
template <class S, class IO, bool TC, bool InShared, int W = kNt / 32, class T>
__device__ __forceinline__ void accumulate_abt(S* acc, int lacc, const T* A, const T* B, int lab,
                                               int N, int R, bool first) {
  product<S, IO, TC, W>(
      C, N, R, operand_a<T, TC, InShared>(A, lab), operand_b<T, TC, InShared>(B, lab),
      [&](int r, int l, S x) { acc[r * lacc + l] = first ? x : acc[r * lacc + l] + x; });
}

// True when p is 16-byte aligned and the row strides and width are whole 16-byte words of S:
// then every row of a tile starts and ends on a word, and a tile moves a word a copy.
template <class S>
__device__ __forceinline__ bool word_rows(const S* p, const S* q, int64_t ld_p, int64_t ld_q,
                                          int cols) {
  constexpr int w = 16 / sizeof(S);
  return cols % w == 0 && ld_p % w == 0 && ld_q % w == 0 &&
         (reinterpret_cast<uintptr_t>(p) | reinterpret_cast<uintptr_t>(q)) % 16 == 0;
}

// dst[r * ld + c] = src[r * src_ld + c] for r < rows, c < cols: cp.async copies into shared
// memory (no registers; the caller commits and waits), 16 bytes a copy when word_rows holds,
// else an element a copy; or loads and stores when dst is the block's global scratch
// (async = false: cp.async writes shared memory only).
template <class S>
__device__ void copy_rows(S* dst, int ld, const S* src, int64_t src_ld, int rows, int cols,
                          bool async) {
  // cp.async moves 4, 8 or 16 bytes: 2-byte entries off whole words go through registers
  if (!async || (sizeof(S) == 2 && !word_rows(dst, src, ld, src_ld, cols))) {
    stage_rows(dst, ld, rows, cols, [&](int r, int c) { return src[r * src_ld + c]; });
    return;
  }
  if (word_rows(dst, src, ld, src_ld, cols)) {
    constexpr int w = 16 / sizeof(S);
    const int words = cols / w, items = rows * words, sld = static_cast<int>(src_ld);
    const TileRows tile(words);
    for (int it = threadIdx.x; it < items; it += blockDim.x) {
      const int r = tile.row(it), c = (it - r * words) * w;
      cp_async_16(dst + r * ld + c, src + (r * sld + c), true);
    }
    return;
  }
  const int warps = blockDim.x >> 5, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r = warp; r < rows; r += warps)
    for (int c = lane; c < cols; c += 32) {
      if constexpr (sizeof(S) == 4)
        cp_async_4(dst + r * ld + c, src + r * src_ld + c, true);
      else if constexpr (sizeof(S) == 8)
        cp_async_8(dst + r * ld + c, src + r * src_ld + c, true);
    }
}

// dst[r][:] = rows r < n of bf16 src (a row every ld_src entries, width a multiple of 8, rows
// 16-byte aligned) for the C rows of a chunk: cp.async copies of 16 bytes (the caller commits
// and waits), rows n..C-1 zero-filled.
__device__ __forceinline__ void fetch_rows(bf16_dev* dst, int ld, const bf16_dev* src,
                                           int64_t ld_src, int width, int n) {
  const TileRows tile(width / 8);
  for (int it = threadIdx.x; it < C * tile.words; it += blockDim.x) {
    const int r = tile.row(it), c = (it - r * tile.words) * 8;
    cp_async_16(dst + r * ld + c, r < n ? src + r * ld_src + c : src, r < n);
  }
}

// dst[r * dst_ld + c] = scale[r] * src[r * ld + c] (no scale: the value itself) for r < rows,
// c < cols, rounded to dst's type: a shared tile out to a global workspace (or into another
// shared tile), a float4 a load and a store when word_rows holds (f32; for a bf16 dst four
// entries a store of 8 bytes), else an element a store.
template <class D, class S>
__device__ void store_rows(D* dst, int64_t dst_ld, const S* src, int ld, int rows, int cols,
                           const S* scale = nullptr) {
  if constexpr (std::is_same_v<D, bf16_dev> && std::is_same_v<S, float>) {
    if (cols % 4 == 0 && dst_ld % 4 == 0 && ld % 4 == 0 &&
        reinterpret_cast<uintptr_t>(dst) % 8 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
      const int words = cols / 4, items = rows * words, dld = static_cast<int>(dst_ld);
      const TileRows tile(words);
      for (int it = threadIdx.x; it < items; it += blockDim.x) {
        const int r = tile.row(it), c = (it - r * words) * 4;
        float4 x = *reinterpret_cast<const float4*>(src + r * ld + c);
        const float f = scale ? scale[r] : 1.f;
        *reinterpret_cast<uint2*>(dst + (r * dld + c)) =
            make_uint2(pack_bf16(f * x.x, f * x.y), pack_bf16(f * x.z, f * x.w));
      }
      return;
    }
  }
  if constexpr (std::is_same_v<D, S> && std::is_same_v<S, float>) {
    if (word_rows(dst, src, dst_ld, ld, cols)) {
      const int words = cols / 4, items = rows * words, dld = static_cast<int>(dst_ld);
      const TileRows tile(words);
      for (int it = threadIdx.x; it < items; it += blockDim.x) {
        const int r = tile.row(it), c = (it - r * words) * 4;
        float4 x = *reinterpret_cast<const float4*>(src + r * ld + c);
        if (scale) {
          const float f = scale[r];
          x = make_float4(f * x.x, f * x.y, f * x.z, f * x.w);
        }
        *reinterpret_cast<float4*>(dst + (r * dld + c)) = x;
      }
      return;
    }
  }
  if constexpr (std::is_same_v<D, S> && std::is_same_v<S, bf16_dev>) {  // unscaled: 8 a word
    if (!scale && word_rows(dst, src, dst_ld, ld, cols)) {
      const int words = cols / 8, items = rows * words, dld = static_cast<int>(dst_ld);
      const TileRows tile(words);
      for (int it = threadIdx.x; it < items; it += blockDim.x) {
        const int r = tile.row(it), c = (it - r * words) * 8;
        *reinterpret_cast<uint4*>(dst + (r * dld + c)) =
            *reinterpret_cast<const uint4*>(src + r * ld + c);
      }
      return;
    }
  }
  unstage_rows(src, ld, rows, cols, [&](int r, int c, S x) {
    dst[r * dst_ld + c] = value_cast<D>(scale ? scale[r] * x : x);
  });
}

// ---- the decay gradients of a chunk (the one-kernel grad and the tiled rows kernel)

// dg of chunk c of head bh from its C x C matrices (row stride lc) and row terms: E = dP o QK
// + diag(beta) (D o A) (+ dlam on the last row), strictly lower, in place of dP; then
// dg_l = sum_{i >= l} (e0_i + sum_{j < l} E_ij), one warp per l. NT threads; the caller's
// writes of dPE, e0 and dlam are behind a barrier.
template <int NT, class S, class IO>
__device__ void decay_gradients(S* dPE, const S* QK, const S* D, const S* A, int lc,
                                const S* beta, const S* e0, const S* dlam, int n, IO* dg,
                                const Geo& g, int64_t bh, int64_t c) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int x = tid; x < n * n; x += NT) {
    const int r = x / n, l = x - r * n;
    dPE[r * lc + l] = r > l ? dPE[r * lc + l] * QK[r * lc + l] +
                                  beta[r] * (D[r * lc + l] * A[r * lc + l]) +
                                  (r == n - 1 ? dlam[l] : S(0))
                            : S(0);
  }
  __syncthreads();
  for (int l = warp; l < n; l += NT / 32) {
    S acc = S(0);
    for (int i = l + lane; i < n; i += 32) {
      S span = e0[i];
      for (int j = 0; j < l; ++j) span += dPE[i * lc + j];
      acc += span;
    }
    acc = warp_reduce(acc, SumOp{});
    if (lane == 0) dg[g.row(bh, c * C + l)] = value_cast<IO>(acc);
  }
}

// ---- launchers

template <class S>
void check_args(const DeltaRuleArgs<S>& a, const char* op) {
  kernels::check_rec_args(a, op);
  const RecDims& d = a.d;
  const int64_t blocks =
      d.B * d.H * ((d.T + C - 1) / C) * ((d.V + kOutputColumns - 1) / kOutputColumns);
  if (blocks >= (int64_t(1) << 31))
    throw Error(op, "B*H*chunks*(V/64) < 2^31 (thread blocks per head, chunk and 64 values)",
                std::to_string(blocks), "split the batch");
  if (d.K * d.V >= (int64_t(1) << 31) || d.K * C >= (int64_t(1) << 31) ||
      d.V * C >= (int64_t(1) << 31))
    throw Error(op, "K*V < 2^31 (32-bit indices within one head)",
                "K=" + std::to_string(d.K) + ", V=" + std::to_string(d.V), "use smaller heads");
}

inline Geo geo_of(const RecDims& d) {
  return {d.B, d.T, d.H, (d.T + C - 1) / C, static_cast<int>(d.K), static_cast<int>(d.V)};
}

template <class S>
Tensor scratch_of(int64_t n) {
  return Tensor::empty({n}, std::is_same_v<S, double> ? DType::f64 : DType::f32, Device::CUDA);
}

// The global workspace of one call (one allocation); the backward adds dY and the dS's.
template <class S, class IO>
struct Workspace {
  using Op = OperandOf<S, IO>;
  Tensor buf;
  ChunksOf<S, IO> ptrs{};
  Workspace(const Geo& g, bool backward) {
    const int64_t items = g.B * g.H * g.NC, K = g.K, V = g.V;
    constexpr int64_t per = sizeof(S) / sizeof(Op);  // Op entries an S entry holds
    Arena ar;
    // n Op entries in whole 16-byte words of S entries, so that every matrix starts aligned
    auto take = [&](int64_t n) { return ar.take(((n + per - 1) / per + 3) / 4 * 4); };
    const int64_t ti = take(items * C * C), p = take(items * C * C), u = take(items * C * V);
    const int64_t w = take(items * C * K), kl = take(items * C * K), qg = take(items * C * K);
    const int64_t st = take(items * K * V);
    const int64_t dy = backward ? take(items * C * V) : 0;
    const int64_t dso = backward ? take(items * K * V) : 0;
    const int64_t gn = ar.take(items);
    buf = scratch_of<S>(ar.at);
    S* b = static_cast<S*>(buf.raw_data());
    auto op = [&](int64_t at) { return reinterpret_cast<Op*>(b + at); };
    ptrs = {op(ti),
            op(p),
            op(u),
            op(w),
            op(kl),
            op(qg),
            b + gn,
            op(st),
            backward ? op(dy) : nullptr,
            backward ? op(dso) : nullptr};
  }
};

// Launches a kernel over `items` blocks with `total` elements of block workspace: its Shared
// instance when that fits in shared memory, else its global one over a scratch for a grid of at
// most 2 blocks per SM.
template <class S, class Kernel, class... Args>
void launch_items(Kernel* shared_kernel, Kernel* global_kernel, int threads, int64_t items,
                  int64_t total, const char* op, Args... args) {
  const size_t bytes = static_cast<size_t>(total) * sizeof(S);
  if (bytes <= shared_memory_limit()) {
    allow_shared_memory(shared_kernel, bytes, op);
    shared_kernel<<<static_cast<unsigned>(items), threads, bytes, stream()>>>(args..., nullptr);
  } else {
    const int64_t grid =
        std::min<int64_t>(items, 2 * int64_t(Context::get().props().multiProcessorCount));
    Tensor scratch = scratch_of<S>(grid * total);
    global_kernel<<<static_cast<unsigned>(grid), threads, 0, stream()>>>(
        args..., static_cast<S*>(scratch.raw_data()));
  }
  CUDA_CHECK(cudaGetLastError());
}

// Value columns per walk block: 32 when the narrower slices still make at most one wave of
// blocks (one block an SM: the TF32 walks' registers), else 64.
inline int walk_columns(const Geo& g) {
  const int64_t narrow = g.B * g.H * ((g.V + kWalkColumns / 2 - 1) / (kWalkColumns / 2));
  return g.V > kWalkColumns / 2 && narrow <= Context::get().props().multiProcessorCount
             ? kWalkColumns / 2
             : kWalkColumns;
}

// The bf16 structs with the device's bf16 type (the same bits).
inline DeltaRuleArgs<bf16_dev> device_view(const DeltaRuleArgs<bf16>& a) {
  auto d = [](const bf16* p) { return reinterpret_cast<const bf16_dev*>(p); };
  DeltaRuleArgs<bf16_dev> r;
  r.d = a.d;
  r.q = d(a.q);
  r.k = d(a.k);
  r.v = d(a.v);
  r.beta = d(a.beta);
  r.g = d(a.g);
  r.h0 = d(a.h0);
  r.scale = a.scale;
  r.l2norm_qk = a.l2norm_qk;
  r.tensor_cores = true;
  return r;
}
inline DeltaRuleOut<bf16_dev> device_view(const DeltaRuleOut<bf16>& o) {
  return {reinterpret_cast<bf16_dev*>(o.o), reinterpret_cast<bf16_dev*>(o.hT)};
}
inline DeltaRuleGrad<bf16_dev> device_view(const DeltaRuleGrad<bf16>& g) {
  auto c = [](const bf16* p) { return reinterpret_cast<const bf16_dev*>(p); };
  auto m = [](bf16* p) { return reinterpret_cast<bf16_dev*>(p); };
  return {c(g.dout), c(g.dhT), m(g.dq), m(g.dk), m(g.dv), m(g.dbeta), m(g.dg), m(g.dh0)};
}

// Calls run.template operator()<C, IO, TC>(a, r) with the kernels' compute type C, storage type
// IO and product flag TC for inputs of type S: f32 and f64 compute in their own type (f32 with
// TF32 products when asked); bf16 reads and writes bf16 and computes in f32 with bf16 products.
template <class S, class Results, class Run>
void with_kernel_types(const DeltaRuleArgs<S>& a, const Results& r, Run&& run) {
  if constexpr (std::is_same_v<S, bf16>) {
    run.template operator()<float, bf16_dev, true>(device_view(a), device_view(r));
  } else if constexpr (std::is_same_v<S, float>) {
    if (a.tensor_cores) return run.template operator()<S, S, true>(a, r);
    run.template operator()<S, S, false>(a, r);
  } else {
    run.template operator()<S, S, false>(a, r);
  }
}

// prep and walk (delta_rule_chunk.cu): the chunks' matrices and states (Vn in ws.u), hT when
// asked.
template <class S, class IO, bool TC>
void forward_states(const DeltaRuleArgs<IO>& a, const Geo& g, const ChunksOf<S, IO>& ws,
                    IO* hT, const char* op);

// prep for bf16 storage with K, V <= 128, multiples of 8 (delta_rule_prep_bf16.cu): false,
// launching nothing, for other heads or when its buffers exceed shared memory.
bool prep_bf16(const DeltaRuleArgs<bf16_dev>& a, const Geo& g,
               const ChunksOf<float, bf16_dev>& ws, const char* op);

// dq, dk, dv, dbeta, dg for bf16 storage with K, V <= 64, multiples of 8, from the backward's
// workspace (delta_rule_grad_bf16.cu): false, launching nothing, for other heads or unaligned
// rows.
bool grad_bf16(const DeltaRuleArgs<bf16_dev>& a, const DeltaRuleGrad<bf16_dev>& gr, const Geo& g,
               const ChunksOf<float, bf16_dev>& ws, const char* op);

// dq, dk, dv, dbeta, dg by the three kernels on 64-wide tiles (delta_rule_chunk_tiled.cu), for
// heads whose one-kernel grad buffers exceed shared memory; ws holds the forward's matrices,
// the states, dY and the outgoing dS's.
template <class S, class IO, bool TC>
void tiled_gradients(const DeltaRuleArgs<IO>& a, const DeltaRuleGrad<IO>& gr, const Geo& g,
                     const ChunksOf<S, IO>& ws, const char* op);

// The instantiations each file provides: f32 (FMA or TF32 products), f64, and bf16 storage
// computing in f32 on bf16 tensor cores (with_kernel_types).
#define HLA_DELTA_CHUNK_INSTANTIATE(F)       \
  F(float, float, false)                    \
  F(float, float, true)                     \
  F(double, double, false)                  \
  F(float, bf16_dev, true)

}  // namespace delta_chunk
}  // namespace hla::cuda
