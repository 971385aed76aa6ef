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
// Kernels (256 threads each; with TF32 products the walks and grad 512; products by
// block_product.cuh or block_product_tf32.cuh):
//   prep      one block per (head, chunk), over 64-key and 64-value tiles: Ti (diagonal 16 x 16
//             blocks by substitution, then block rows), U, W, P, diag(lam) K, diag(gam) Q,
//             gam_n into a global workspace
//   walk      one block per (head, 64 value columns; 32 when that is still one wave), chunks in
//             order: S, Vn = U - W S in place of U, every chunk's incoming state kept for the
//             output and the backward; the next chunk's tiles load (cp.async) under this
//             chunk's products
//   output    one block per (head, chunk, 64 value columns): O
//   walk_back one block per (head, 64 or 32 value columns, as walk), chunks in reverse: dY, the
//             outgoing dS
//   grad      one block per (head, chunk): dq, dk, dv, dbeta, dg, when its buffers fit in shared
//             memory (f32 up to K = V = 64); wider heads run it as three kernels on 64-wide
//             tiles (scores, keys, rows: see "grad for heads whose ..." below)
// A block's matrices live in shared memory when they fit the device's opt-in limit (227 KiB on
// H100 / H200), otherwise in a per-block global scratch with the same layout and a grid of at
// most 2 blocks per SM walking the items; each kernel is compiled for both (its Shared
// parameter), so the shared instance addresses its buffers as shared memory. Rows of shared [n][K] buffers are padded (row_stride:
// K + 1 entries for FMA products, 4 mod 32 for TF32 ones). Rows past a partial chunk are zero in
// every workspace matrix, so the walks need no row count. dtypes: f32 (products on FMAs, or on
// TF32 tensor cores with DeltaRuleArgs::tensor_cores), f64, and bf16 storage (f32 workspaces,
// TF32 products: every global read and write through value_cast); any K, V (sizes < 2^31).
// Outputs are overwritten.
#include <type_traits>

#include "kernels/cuda/block_product.cuh"
#include "kernels/cuda/block_product_tf32.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/recurrence_cuda.h"

namespace hla::cuda {

using kernels::DeltaRuleArgs;
using kernels::DeltaRuleGrad;
using kernels::DeltaRuleOut;
using kernels::RecDims;

namespace {

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

// Row stride of a shared [rows][n] buffer. FMA products: n + 1 (odd: distinct banks read either
// way round). TF32 products: the least stride >= n that is 4 mod 32, so that a fragment read
// (8 rows g x 4 columns t, or its transpose) hits 32 distinct banks when the row is g and at
// most 2 lanes a bank when it is t (odd strides put up to 4 lanes on a bank either way).
__host__ __device__ constexpr int row_stride(int n, bool tc) {
  return tc ? n + ((4 - n % 32) % 32 + 32) % 32 : n + 1;
}
// The walks' state slice [K][cols]: unpadded for FMA products (16 consecutive columns a warp).
__host__ __device__ constexpr int walk_stride(int cols, bool tc) {
  return tc ? row_stride(cols, true) : cols;
}

// Every product of the kernels: f32 / f64 FMAs (block_product), or with TC the TF32 tensor
// cores (block_product_tf32; f32 only). Both give a thread the same entries for the same shape.
template <class S, bool TC, int W = kNt / 32, class FA, class FB, class FOut>
__device__ __forceinline__ void product(int M, int N, int R, FA a, FB b, FOut out) {
  if constexpr (TC) {
    static_assert(std::is_same_v<S, float>, "TF32 products: f32");
    block_product_tf32<W>(M, N, R, a, b, out);
  } else {
    static_assert(W == kNt / 32, "FMA products: 256 threads");
    block_product<S>(M, N, R, a, b, out);
  }
}

// Sizes of one problem and the indexing shared by every kernel.
struct Geo {
  int64_t B, T, H, NC;  // NC chunks per head
  int K, V;
  __device__ int64_t row(int64_t bh, int64_t t) const {  // into [B,T,H]
    return ((bh / H) * T + t) * H + bh % H;
  }
  __device__ int rows(int64_t c) const { return static_cast<int>(min(int64_t(C), T - c * C)); }
};

// The global workspace; item e = head * NC + chunk indexes each per-chunk matrix.
template <class S>
struct Chunks {
  S* ti;      // [BH, NC, C, C]  (I + L)^{-1}
  S* p;       // [BH, NC, C, C]  (Q K^T) o M
  S* u;       // [BH, NC, C, V]  Ti diag(beta) V; the walk overwrites it with Vn
  S* w;       // [BH, NC, C, K]  Ti diag(beta gam) K
  S* kl;      // [BH, NC, C, K]  diag(lam) K
  S* qg;      // [BH, NC, C, K]  diag(gam) Q
  S* gn;      // [BH, NC]        gam_n
  S* states;  // [BH, NC, K, V]  each chunk's incoming state
  S* dy;      // [BH, NC, C, V]  backward: dY
  S* dso;     // [BH, NC, K, V]  backward: the gradient of each chunk's outgoing state
};

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

// dst[r * ld + c] = src[r * src_ld + c] (times scale[r] unless scale is null) for r < rows,
// c < cols, rows >= n zero. bf16 rows that start 16-byte aligned (into 16-byte aligned f32 rows)
// are read 8 elements a load, 4 loads in flight a thread, and written as two float4; other
// sources go through stage_rows, with the same values.
template <class T>
struct Same {  // T as a parameter type that takes no part in deduction (a null scale)
  using type = T;
};
template <class S, class IO>
__device__ void stage_scaled(S* dst, int ld, int rows, int n, int cols, const IO* src,
                             int64_t src_ld, typename Same<const S*>::type scale) {
  if constexpr (std::is_same_v<IO, bf16_dev> && std::is_same_v<S, float>) {
    if (cols % 8 == 0 && src_ld % 8 == 0 && ld % 4 == 0 &&
        reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
      constexpr int kBatch = 4;
      const int groups = cols / 8, items = rows * groups, nt = blockDim.x;
      for (int i0 = threadIdx.x; i0 < items; i0 += nt * kBatch) {
        uint4 v[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int it = i0 + nt * u, r = it / groups, c8 = it - r * groups;
          v[u] = it < items && r < n
                     ? *reinterpret_cast<const uint4*>(src + r * src_ld + c8 * 8)
                     : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int it = i0 + nt * u, r = it / groups, c8 = it - r * groups;
          if (it >= items) continue;
          bf16_dev h[8];
          memcpy(h, &v[u], sizeof(h));
          float o[8];
#pragma unroll
          for (int k = 0; k < 8; ++k) {
            const float x = value_cast<float>(h[k]);
            o[k] = r < n ? (scale ? x * scale[r] : x) : 0.0f;
          }
          float4* d = reinterpret_cast<float4*>(dst + r * ld + c8 * 8);
          d[0] = make_float4(o[0], o[1], o[2], o[3]);
          d[1] = make_float4(o[4], o[5], o[6], o[7]);
        }
      }
      return;
    }
  }
  stage_rows(dst, ld, rows, cols, [&](int r, int c) {
    if (r >= n) return S(0);
    const S x = value_cast<S>(src[r * src_ld + c]);
    return scale ? x * scale[r] : x;
  });
}

// Loads chunk c of head bh into w: q, k (L2-normalised when asked, rq / rk the factors), beta,
// Gam, gam, lam; rows n..C-1 zero. Ends with a barrier.
template <class S, class IO>
__device__ void load_rows(const DeltaRuleArgs<IO>& a, const Geo& g, int64_t bh, int64_t c, int n,
                          const Rows<S>& w) {
  const int K = g.K, lk = w.lk, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row0 = g.row(bh, c * C), H = g.H;  // row r of the chunk: row0 + r H
  if (tid < C) {  // beta and the log decays of every row at once (rows past n: 0)
    const bool in = tid < n;
    const int64_t row = row0 + tid * H;
    w.beta[tid] = in ? value_cast<S>(a.beta[row]) : S(0);
    w.Gam[tid] = in && a.g ? value_cast<S>(a.g[row]) : S(0);
  }
  stage_scaled(w.q, lk, C, n, K, a.q + row0 * K, H * K, nullptr);
  stage_scaled(w.k, lk, C, n, K, a.k + row0 * K, H * K, nullptr);
  __syncthreads();
  if (warp == 0) scan_decays(w.Gam);
  __syncthreads();
  for (int r = warp; r < C; r += blockDim.x >> 5) {  // one warp per row
    S sq = S(0), sk = S(0);
    if (a.l2norm_qk)
      for (int i = lane; i < K; i += 32) {
        sq += w.q[r * lk + i] * w.q[r * lk + i];
        sk += w.k[r * lk + i] * w.k[r * lk + i];
      }
    sq = warp_reduce(sq, SumOp{});
    sk = warp_reduce(sk, SumOp{});
    const S rq = a.l2norm_qk ? S(1) / sqrt(sq + S(kernels::kL2Eps)) : S(1);
    const S rk = a.l2norm_qk ? S(1) / sqrt(sk + S(kernels::kL2Eps)) : S(1);
    if (a.l2norm_qk)
      for (int i = lane; i < K; i += 32) {
        w.q[r * lk + i] *= rq;
        w.k[r * lk + i] *= rk;
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
  for (int r0 = kSolve; r0 < C; r0 += kSolve) {
    for (int e = tid; e < kSolve * r0; e += nt) {
      const int rr = e / r0, col = e - rr * r0;
      S acc = S(0);
      for (int l = col; l < r0; ++l) acc += L[(r0 + rr) * lc + l] * ti[l * lc + col];
      tmp[rr * lc + col] = acc;
    }
    __syncthreads();
    for (int e = tid; e < kSolve * r0; e += nt) {
      const int rr = e / r0, col = e - rr * r0;
      S acc = S(0);
      for (int m = 0; m <= rr; ++m) acc -= ti[(r0 + rr) * lc + r0 + m] * tmp[m * lc + col];
      ti[(r0 + rr) * lc + col] = acc;
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
// The factors of chunk c of head bh (rows n..C-1 zero), the norms read from global memory.
// Ends with a barrier.
template <class S, class IO>
__device__ void load_factors(const DeltaRuleArgs<IO>& a, const Geo& g, int64_t bh, int64_t c,
                             int n, const Factors<S>& f) {
  const int K = g.K, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row0 = g.row(bh, c * C), H = g.H;
  if (tid < C) {
    const bool in = tid < n;
    f.beta[tid] = in ? value_cast<S>(a.beta[row0 + tid * H]) : S(0);
    f.Gam[tid] = in && a.g ? value_cast<S>(a.g[row0 + tid * H]) : S(0);
  }
  __syncthreads();
  if (warp == 0) scan_decays(f.Gam);
  __syncthreads();
  // A warp per row, kRows rows a warp at once: their loads are all in flight before the sums
  // (one round trip to memory for them, not one a row). Each row's sum runs as with one row.
  constexpr int kRows = 4;
  const int warps = blockDim.x >> 5;
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
      if (lane == 0 && r < C) {
        const bool in = r < n;
        f.rq[r] = a.l2norm_qk ? S(1) / sqrt(q2 + S(kernels::kL2Eps)) : S(1);
        f.rk[r] = a.l2norm_qk ? S(1) / sqrt(k2 + S(kernels::kL2Eps)) : S(1);
        f.gam[r] = in ? exp(f.Gam[r]) : S(0);
        f.lam[r] = in ? exp(f.Gam[n - 1] - f.Gam[r]) : S(0);
        f.yv[r] = S(0);
      }
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

// acc = A B^T on the first tile of a sum, acc += A B^T after it: A [C][R] and B [N][R] one tile
// of R columns (row stride lab, shared memory), acc [C][N] (row stride lacc). Each entry has
// one owner thread for a given (C, N), so the sum over tiles needs no barrier of its own.
template <class S, bool TC, int W = kNt / 32>
__device__ __forceinline__ void accumulate_abt(S* acc, int lacc, const S* A, const S* B, int lab,
                                               int N, int R, bool first) {
  product<S, TC, W>(
      C, N, R, [&](int r, int i) { return A[r * lab + i]; },
      [&](int i, int l) { return B[l * lab + i]; },
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
  if (!async) {
    stage_rows(dst, ld, rows, cols, [&](int r, int c) { return src[r * src_ld + c]; });
    return;
  }
  if (word_rows(dst, src, ld, src_ld, cols)) {
    constexpr int w = 16 / sizeof(S);
    const int words = cols / w, items = rows * words, sld = static_cast<int>(src_ld);
    for (int it = threadIdx.x; it < items; it += blockDim.x) {
      const int r = it / words, c = (it - r * words) * w;
      cp_async_16(dst + r * ld + c, src + (r * sld + c), true);
    }
    return;
  }
  const int warps = blockDim.x >> 5, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r = warp; r < rows; r += warps)
    for (int c = lane; c < cols; c += 32) {
      if constexpr (sizeof(S) == 4)
        cp_async_4(dst + r * ld + c, src + r * src_ld + c, true);
      else
        cp_async_8(dst + r * ld + c, src + r * src_ld + c, true);
    }
}

// dst[r * dst_ld + c] = scale[r] * src[r * ld + c] (no scale: the value itself) for r < rows,
// c < cols: a shared tile out to a global workspace, a float4 a load and a store when
// word_rows holds (f32), else an element a store.
template <class S>
__device__ void store_rows(S* dst, int64_t dst_ld, const S* src, int ld, int rows, int cols,
                           const S* scale = nullptr) {
  if constexpr (std::is_same_v<S, float>) {
    if (word_rows(dst, src, dst_ld, ld, cols)) {
      const int words = cols / 4, items = rows * words, dld = static_cast<int>(dst_ld);
      for (int it = threadIdx.x; it < items; it += blockDim.x) {
        const int r = it / words, c = (it - r * words) * 4;
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
  unstage_rows(src, ld, rows, cols,
               [&](int r, int c, S x) { dst[r * dst_ld + c] = scale ? scale[r] * x : x; });
}

// ---- prep: Ti, U, W, P, diag(lam) K, diag(gam) Q, gam_n of every chunk
// Over 64-key tiles (K K^T and Q K^T summed, diag(lam) K and diag(gam) Q out), then
// Ti = (I + L)^{-1}, U = Ti diag(beta) V over 64-value tiles and W = Ti diag(beta gam) K over
// 64-key tiles: no buffer wider than 64 columns (about 93 KiB in f32, two blocks an SM).

struct PrepLayout {
  int64_t f, t0, t1, L, P, ti, tmp, total;
  PrepLayout(Arena ar, bool tc) {
    const int lt = row_stride(kTile, tc), lc = row_stride(C, tc);
    f = ar.take(kFactors);
    t0 = ar.take(int64_t(C) * lt);
    t1 = ar.take(int64_t(C) * lt);
    L = ar.take(int64_t(C) * lc);
    P = ar.take(int64_t(C) * lc);
    ti = ar.take(int64_t(C) * lc);
    tmp = ar.take(int64_t(kSolve) * lc);
    total = ar.at;
  }
};

template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(kNt)
    delta_prep_kernel(DeltaRuleArgs<IO> a, Geo g, Chunks<S> ws, PrepLayout lay, S* scratch) {
  S* base = block_base<S, Shared>(scratch, lay.total);
  const Factors<S> f(base + lay.f);
  S *t0 = base + lay.t0, *t1 = base + lay.t1, *L = base + lay.L, *P = base + lay.P;
  S *ti = base + lay.ti, *tmp = base + lay.tmp;
  constexpr int lt = row_stride(kTile, TC), lc = row_stride(C, TC);
  const int K = g.K, V = g.V;
  const bool gated = a.g != nullptr;
  for (int64_t e = blockIdx.x; e < g.B * g.H * g.NC; e += gridDim.x) {
    const int64_t bh = e / g.NC, c = e - bh * g.NC;
    const int n = g.rows(c);
    load_factors(a, g, bh, c, n, f);
    for (int k0 = 0; k0 < K; k0 += kTile) {  // K K^T and Q K^T; diag(lam) K, diag(gam) Q out
      const int nk = min(kTile, K - k0);
      const bool first = k0 == 0;
      stage_keys(t0, lt, a.q, f.rq, g, bh, c, n, k0, nk);
      stage_keys(t1, lt, a.k, f.rk, g, bh, c, n, k0, nk);
      __syncthreads();
      accumulate_abt<S, TC>(L, lc, t1, t1, lt, C, nk, first);
      accumulate_abt<S, TC>(P, lc, t0, t1, lt, C, nk, first);
      store_rows(ws.kl + e * C * K + k0, K, t1, lt, C, nk, f.lam);
      store_rows(ws.qg + e * C * K + k0, K, t0, lt, C, nk, f.gam);
      __syncthreads();
    }
    // L = tril_{-1}(diag(beta)(K K^T o M)) in place; P = (Q K^T) o M out, four columns of a
    // row a thread (one 16-byte store of P in f32).
    static_assert(C % 4 == 0, "four columns in one row");
    for (int x = 4 * threadIdx.x; x < C * C; x += 4 * blockDim.x) {
      const int r = x / C, l0 = x - r * C;
      S p[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int l = l0 + u;
        const S m = decay(f.Gam, gated, r, l);
        L[r * lc + l] = r > l ? f.beta[r] * (L[r * lc + l] * m) : S(0);
        p[u] = P[r * lc + l] * m;
      }
      S* out = ws.p + e * C * C + x;  // 16-byte aligned: whole C x C blocks from an aligned base
      if constexpr (std::is_same_v<S, float>) {
        *reinterpret_cast<float4*>(out) = make_float4(p[0], p[1], p[2], p[3]);
      } else {
#pragma unroll
        for (int u = 0; u < 4; ++u) out[u] = p[u];
      }
    }
    if (threadIdx.x == 0) ws.gn[e] = f.gam[n - 1];
    __syncthreads();
    invert_unit_lower(L, ti, tmp, lc);
    store_rows(ws.ti + e * C * C, C, ti, lc, C, C);
    const int64_t row0 = g.row(bh, c * C);
    for (int j0 = 0; j0 < V; j0 += kTile) {  // U = Ti diag(beta) V
      const int nv = min(kTile, V - j0);
      stage_scaled(t0, lt, C, n, nv, a.v + row0 * V + j0, g.H * V, f.beta);
      __syncthreads();
      product<S, TC>(
          C, nv, C, [&](int r, int l) { return ti[r * lc + l]; },
          [&](int l, int j) { return t0[l * lt + j]; },
          [&](int r, int j, S x) { ws.u[e * C * V + r * V + j0 + j] = x; });
      __syncthreads();
    }
    for (int k0 = 0; k0 < K; k0 += kTile) {  // W = Ti diag(beta gam) K
      const int nk = min(kTile, K - k0);
      if (K > kTile) {  // else t1 still holds the one key tile from the first loop
        stage_keys(t1, lt, a.k, f.rk, g, bh, c, n, k0, nk);
        __syncthreads();
      }
      product<S, TC>(
          C, nk, C, [&](int r, int l) { return ti[r * lc + l]; },
          [&](int l, int i) { return (f.beta[l] * f.gam[l]) * t1[l * lt + i]; },
          [&](int r, int i, S x) { ws.w[e * C * K + r * K + k0 + i] = x; });
      __syncthreads();
    }
  }
}

// ---- walk: the states and Vn = U - W S, chunks in order, 64 value columns per block

// The walk's state slice St [K][lw] and `buffers` sets of a chunk's tiles: W [C][lk] and
// diag(lam) K [C][lk] (at +C lk), U / Vn [C][lv] (at +2 C lk). Two sets when they fit in
// shared memory: the next chunk's tiles then load under this chunk's products.
struct WalkLayout {
  int64_t S_, sets, set_size, total;
  int buffers, cols;
  WalkLayout(Arena ar, int K, bool tc, int buffers_, int cols_) : buffers(buffers_), cols(cols_) {
    S_ = ar.take(int64_t(K) * walk_stride(cols, tc));
    set_size = 2 * int64_t(C) * row_stride(K, tc) + int64_t(C) * row_stride(cols, tc);
    sets = ar.take(buffers * set_size);
    total = ar.at;
  }
};

template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(wide_threads(TC), TC ? 1 : kWalkBlocks)
    delta_walk_kernel(const IO* __restrict__ h0, IO* __restrict__ hT, Geo g, Chunks<S> ws,
                      WalkLayout lay, S* scratch) {
  S* base = block_base<S, Shared>(scratch, lay.total);
  S* St = base + lay.S_;
  const bool async = Shared, ahead = lay.buffers == 2;
  const int K = g.K, V = g.V, cols = lay.cols, lk = row_stride(K, TC), lv = row_stride(cols, TC);
  const int lw = walk_stride(cols, TC), n_slices = (V + cols - 1) / cols;
  for (int64_t item = blockIdx.x; item < g.B * g.H * n_slices; item += gridDim.x) {
    const int64_t bh = item / n_slices;
    const int j0 = static_cast<int>(item - bh * n_slices) * cols;
    const int nv = min(cols, V - j0);
    const int64_t state = bh * K * V;
    // Chunk c's tiles into set b, two commit groups: W and U, then diag(lam) K.
    auto fetch = [&](int64_t c, int b) {
      const int64_t e = bh * g.NC + c;
      S* set = base + lay.sets + b * lay.set_size;
      copy_rows(set, lk, ws.w + e * C * K, K, C, K, async);
      copy_rows(set + 2 * C * lk, lv, ws.u + e * C * V + j0, V, C, nv, async);
      cp_async_commit();
      copy_rows(set + C * lk, lk, ws.kl + e * C * K, K, C, K, async);
      cp_async_commit();
    };
    stage_rows(St, lw, K, nv,
               [&](int i, int j) { return h0 ? value_cast<S>(h0[state + i * V + j0 + j]) : S(0); });
    if (ahead) fetch(0, 0);
    for (int64_t c = 0; c < g.NC; ++c) {
      const int64_t e = bh * g.NC + c;
      const int b = ahead ? static_cast<int>(c & 1) : 0;
      S* X = base + lay.sets + b * lay.set_size;  // W, then diag(lam) K at X + C lk
      S* vn = X + 2 * C * lk;
      __syncthreads();  // the previous chunk's products are done: St final, their set free
      if (!ahead)
        fetch(c, 0);
      else if (c + 1 < g.NC)
        fetch(c + 1, b ^ 1);
      else {  // empty groups, so that the waits below count alike on the last chunk
        cp_async_commit();
        cp_async_commit();
      }
      store_rows(ws.states + e * K * V + j0, V, St, lw, K, nv);
      if (ahead)  // chunk c's first group has landed; its second and the next chunk's may not
        cp_async_wait<3>();
      else
        cp_async_wait<1>();
      __syncthreads();
      product<S, TC, wide_threads(TC) / 32>(
          C, nv, K, [&](int r, int i) { return X[r * lk + i]; },
          [&](int i, int j) { return St[i * lw + j]; },
          [&](int r, int j, S ws_) { vn[r * lv + j] -= ws_; });
      if (ahead)  // and its second: diag(lam) K
        cp_async_wait<2>();
      else
        cp_async_wait<0>();
      __syncthreads();
      store_rows(ws.u + e * C * V + j0, V, vn, lv, C, nv);
      const S gn = ws.gn[e];
      const S* Xk = X + C * lk;
      product<S, TC, wide_threads(TC) / 32>(
          K, nv, C, [&](int i, int r) { return Xk[r * lk + i]; },
          [&](int r, int j) { return vn[r * lv + j]; },
          [&](int i, int j, S kv) { St[i * lw + j] = gn * St[i * lw + j] + kv; });
    }
    __syncthreads();
    if (hT)
      unstage_rows(St, lw, K, nv,
                   [&](int i, int j, S x) { hT[state + i * V + j0 + j] = value_cast<IO>(x); });
    __syncthreads();  // St is read before the next item rewrites it
  }
}

// ---- output: O = s [diag(gam) Q S + P Vn], 64 value columns per block

struct OutputLayout {
  int64_t qg, St, P, vn, qs, total;
  OutputLayout(Arena ar, int K, bool tc) {
    const int lo = row_stride(kOutputColumns, tc);
    qg = ar.take(int64_t(C) * row_stride(K, tc));
    St = ar.take(int64_t(K) * lo);
    P = ar.take(int64_t(C) * row_stride(C, tc));
    vn = ar.take(int64_t(C) * lo);
    qs = ar.take(int64_t(C) * lo);
    total = ar.at;
  }
};

template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(kNt)
    delta_output_kernel(Geo g, Chunks<S> ws, S scale, IO* __restrict__ o, OutputLayout lay,
                        S* scratch) {
  S* base = block_base<S, Shared>(scratch, lay.total);
  S *qg = base + lay.qg, *St = base + lay.St, *P = base + lay.P, *vn = base + lay.vn;
  S* qs = base + lay.qs;  // diag(gam) Q S
  const bool async = Shared;
  constexpr int lo = row_stride(kOutputColumns, TC), lc = row_stride(C, TC);
  const int K = g.K, V = g.V, lk = row_stride(K, TC);
  const int n_slices = (V + kOutputColumns - 1) / kOutputColumns;
  for (int64_t item = blockIdx.x; item < g.B * g.H * g.NC * n_slices; item += gridDim.x) {
    const int64_t e = item / n_slices, bh = e / g.NC, c = e - bh * g.NC;
    const int j0 = static_cast<int>(item - e * n_slices) * kOutputColumns;
    const int nv = min(kOutputColumns, V - j0), n = g.rows(c);
    const int64_t row0 = g.row(bh, c * C);
    copy_rows(qg, lk, ws.qg + e * C * K, K, C, K, async);  // the four tiles in one round trip
    copy_rows(St, lo, ws.states + e * K * V + j0, V, K, nv, async);
    copy_rows(P, lc, ws.p + e * C * C, C, C, C, async);
    copy_rows(vn, lo, ws.u + e * C * V + j0, V, C, nv, async);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    product<S, TC>(
        C, nv, K, [&](int r, int i) { return qg[r * lk + i]; },
        [&](int i, int j) { return St[i * lo + j]; },
        [&](int r, int j, S x) { qs[r * lo + j] = x; });
    product<S, TC>(  // same shape: each thread reads back only its own qs entries
        C, nv, C, [&](int r, int l) { return P[r * lc + l]; },
        [&](int l, int j) { return vn[l * lo + j]; },
        [&](int r, int j, S x) {
          if (r < n)
            o[(row0 + r * g.H) * V + j0 + j] = value_cast<IO>(scale * (qs[r * lo + j] + x));
        });
    __syncthreads();  // the buffers are read before the next item rewrites them
  }
}

// ---- walk_back: dVn, dY and the outgoing dS of every chunk, chunks in reverse

struct WalkBackLayout {
  int64_t dS, X, CC, dO, dVn, total;
  int cols;
  WalkBackLayout(Arena ar, int K, bool tc, int cols_) : cols(cols_) {
    dS = ar.take(int64_t(K) * walk_stride(cols, tc));
    X = ar.take(int64_t(C) * row_stride(K, tc));
    CC = ar.take(int64_t(C) * row_stride(C, tc));
    dO = ar.take(int64_t(C) * row_stride(cols, tc));
    dVn = ar.take(int64_t(C) * row_stride(cols, tc));
    total = ar.at;
  }
};

template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(wide_threads(TC), TC ? 1 : kWalkBlocks)
    delta_walk_back_kernel(DeltaRuleGrad<IO> gr, S scale, Geo g, Chunks<S> ws, WalkBackLayout lay,
                           S* scratch) {
  S* base = block_base<S, Shared>(scratch, lay.total);
  S *dS = base + lay.dS, *X = base + lay.X, *CC = base + lay.CC, *dO = base + lay.dO;
  S* dVn = base + lay.dVn;
  const int K = g.K, V = g.V, lk = row_stride(K, TC), lc = row_stride(C, TC);
  const int cols = lay.cols, lv = row_stride(cols, TC), lw = walk_stride(cols, TC);
  const int n_slices = (V + cols - 1) / cols;
  const bool async = Shared;
  for (int64_t item = blockIdx.x; item < g.B * g.H * n_slices; item += gridDim.x) {
    const int64_t bh = item / n_slices;
    const int j0 = static_cast<int>(item - bh * n_slices) * cols;
    const int nv = min(cols, V - j0);
    const int64_t state = bh * K * V;
    stage_rows(dS, lw, K, nv, [&](int i, int j) {
      return gr.dhT ? value_cast<S>(gr.dhT[state + i * V + j0 + j]) : S(0);
    });
    for (int64_t c = g.NC - 1; c >= 0; --c) {
      const int64_t e = bh * g.NC + c;
      const int n = g.rows(c);
      __syncthreads();  // dS is final, the buffers free
      store_rows(ws.dso + e * K * V + j0, V, dS, lw, K, nv);
      copy_rows(CC, lc, ws.p + e * C * C, C, C, C, async);  // under the staging of dO
      copy_rows(X, lk, ws.kl + e * C * K, K, C, K, async);
      cp_async_commit();
      const int64_t row0 = g.row(bh, c * C);
      stage_scaled(dO, lv, C, n, nv, gr.dout + row0 * V + j0, g.H * V, nullptr);
      cp_async_wait<0>();
      __syncthreads();
      product<S, TC, wide_threads(TC) / 32>(  // dVn = s P^T dO + diag(lam) K dS (same shape twice)
          C, nv, C, [&](int l, int r) { return CC[r * lc + l]; },
          [&](int r, int j) { return dO[r * lv + j]; },
          [&](int l, int j, S x) { dVn[l * lv + j] = scale * x; });
      product<S, TC, wide_threads(TC) / 32>(
          C, nv, K, [&](int l, int i) { return X[l * lk + i]; },
          [&](int i, int j) { return dS[i * lw + j]; },
          [&](int l, int j, S x) { dVn[l * lv + j] += x; });
      __syncthreads();
      copy_rows(CC, lc, ws.ti + e * C * C, C, C, C, async);
      copy_rows(X, lk, ws.qg + e * C * K, K, C, K, async);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
      const S gn = ws.gn[e];
      product<S, TC, wide_threads(TC) / 32>(  // dY = Ti^T dVn
          C, nv, C, [&](int l, int r) { return CC[r * lc + l]; },
          [&](int r, int j) { return dVn[r * lv + j]; },
          [&](int l, int j, S x) { ws.dy[e * C * V + l * V + j0 + j] = x; });
      product<S, TC, wide_threads(TC) / 32>(  // dS <- gam_n dS + s (diag(gam) Q)^T dO - W^T dVn
          K, nv, C, [&](int i, int r) { return X[r * lk + i]; },
          [&](int r, int j) { return dO[r * lv + j]; },
          [&](int i, int j, S x) { dS[i * lw + j] = gn * dS[i * lw + j] + scale * x; });
      __syncthreads();
      copy_rows(X, lk, ws.w + e * C * K, K, C, K, async);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
      product<S, TC, wide_threads(TC) / 32>(
          K, nv, C, [&](int i, int r) { return X[r * lk + i]; },
          [&](int r, int j) { return dVn[r * lv + j]; },
          [&](int i, int j, S x) { dS[i * lw + j] -= x; });
    }
    __syncthreads();
    if (gr.dh0)
      unstage_rows(dS, lw, K, nv,
                   [&](int i, int j, S x) { gr.dh0[state + i * V + j0 + j] = value_cast<IO>(x); });
    __syncthreads();  // dS is read before the next item rewrites it
  }
}

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

// ---- grad: dq, dk, dv, dbeta, dg of every chunk from S, the outgoing dS, Vn and dY

struct GradLayout {
  RowsLayout rows;
  int64_t dq, dk, vn, dy, ks, dO, A, QK, dPE, D, e0, dlam, dbeta, red, X, total;
  bool stage_states;  // X [K][V+1] holds S or dS for the products (else they read global memory)
  GradLayout(Arena ar, int K, int V, bool stage, bool tc) : rows(ar, K, tc), stage_states(stage) {
    const int lk = row_stride(K, tc), lv = row_stride(V, tc), lc = row_stride(C, tc);
    dq = ar.take(int64_t(C) * lk);
    dk = ar.take(int64_t(C) * lk);
    vn = ar.take(int64_t(C) * lv);
    dy = ar.take(int64_t(C) * lv);
    ks = ar.take(int64_t(C) * lv);
    dO = ar.take(int64_t(C) * lv);
    A = ar.take(int64_t(C) * lc);
    QK = ar.take(int64_t(C) * lc);
    dPE = ar.take(int64_t(C) * lc);
    D = ar.take(int64_t(C) * lc);
    e0 = ar.take(C);
    dlam = ar.take(C);
    dbeta = ar.take(C);
    red = ar.take(32);
    X = stage ? ar.take(int64_t(K) * lv) : 0;
    total = ar.at;
  }
};

// Staged (with Shared only): S and dS staged in X, as the layout's stage_states; a compile-time
// choice, so that the products read the state from a known memory.
template <class S, class IO, bool TC, bool Shared, bool Staged = false>
__global__ void __launch_bounds__(wide_threads(TC))
    delta_grad_kernel(DeltaRuleArgs<IO> a, DeltaRuleGrad<IO> gr, Geo g, Chunks<S> ws,
                      GradLayout lay, S* scratch) {
  S* base = block_base<S, Shared>(scratch, lay.total);
  const Rows<S> w = lay.rows.bind(base);
  S *dq = base + lay.dq, *dk = base + lay.dk, *vn = base + lay.vn, *dy = base + lay.dy;
  S *ks = base + lay.ks, *dO = base + lay.dO, *A = base + lay.A, *QK = base + lay.QK;
  S *dPE = base + lay.dPE, *D = base + lay.D, *e0 = base + lay.e0, *dlam = base + lay.dlam;
  S *dbeta = base + lay.dbeta, *red = base + lay.red;
  static_assert(Shared || !Staged, "the states are staged in shared memory only");
  S* X = Staged ? base + lay.X : nullptr;
  const int K = g.K, V = g.V, lk = row_stride(K, TC), lv = row_stride(V, TC);
  const int lc = row_stride(C, TC), ls = Staged ? lv : V;
  // A state [K,V] (S or the outgoing dS) for the products: staged in X (row stride ls), or read
  // from global memory where X does not fit.
  // (as cp.async copies, committed and waited for by the caller)
  const bool async = Shared;
  auto state_view = [&](const S* src) -> const S* {
    if constexpr (Staged) {
      copy_rows(X, ls, src, V, K, V, async);
      return X;
    } else {
      return src;
    }
  };
  constexpr int nt = wide_threads(TC), nw = nt / 32;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const S s = static_cast<S>(a.scale);
  const bool gated = a.g != nullptr;
  const S *q = w.q, *k = w.k;
  for (int64_t e = blockIdx.x; e < g.B * g.H * g.NC; e += gridDim.x) {
    const int64_t bh = e / g.NC, c = e - bh * g.NC;
    const int n = g.rows(c);
    const S *Sc = ws.states + e * K * V, *dSo = ws.dso + e * K * V;
    // Vn, dY and S load (cp.async) under load_rows and the staging of dO.
    copy_rows(vn, lv, ws.u + e * C * V, V, C, V, async);
    copy_rows(dy, lv, ws.dy + e * C * V, V, C, V, async);
    const S* St = state_view(Sc);
    cp_async_commit();
    load_rows(a, g, bh, c, n, w);
    const int64_t row0 = g.row(bh, c * C);
    stage_scaled(dO, lv, C, n, V, gr.dout + row0 * V, g.H * V, nullptr);
    cp_async_wait<0>();
    __syncthreads();

    // Products of the loaded rows, S, then the outgoing dS (no two write the same buffer).
    product<S, TC, nw>(
        C, C, K, [&](int r, int i) { return k[r * lk + i]; },
        [&](int i, int l) { return k[l * lk + i]; }, [&](int r, int l, S x) { A[r * lc + l] = x; });
    product<S, TC, nw>(
        C, C, K, [&](int r, int i) { return q[r * lk + i]; },
        [&](int i, int l) { return k[l * lk + i]; },
        [&](int r, int l, S x) { QK[r * lc + l] = x; });
    product<S, TC, nw>(  // K S
        C, V, K, [&](int r, int i) { return k[r * lk + i]; },
        [&](int i, int j) { return St[i * ls + j]; },
        [&](int r, int j, S x) { ks[r * lv + j] = x; });
    product<S, TC, nw>(  // dq = s diag(gam) dO S^T
        C, K, V, [&](int r, int j) { return dO[r * lv + j]; },
        [&](int j, int i) { return St[i * ls + j]; },
        [&](int r, int i, S x) { dq[r * lk + i] = (s * w.gam[r]) * x; });
    product<S, TC, nw>(  // dP = s (dO Vn^T) o M
        C, C, V, [&](int r, int j) { return dO[r * lv + j]; },
        [&](int j, int l) { return vn[l * lv + j]; },
        [&](int r, int l, S x) { dPE[r * lc + l] = (s * x) * decay(w.Gam, gated, r, l); });
    product<S, TC, nw>(  // D = -tril_{-1}(dY Vn^T) o M
        C, C, V, [&](int r, int j) { return dy[r * lv + j]; },
        [&](int j, int l) { return vn[l * lv + j]; },
        [&](int r, int l, S x) { D[r * lc + l] = r > l ? -x * decay(w.Gam, gated, r, l) : S(0); });
    __syncthreads();
    // dO is done with: the chunk's v rows take its place for the row sums below (staged with
    // their loads batched, not read a row at a time there), under the copy of dS.
    const S* dSt = state_view(dSo);
    cp_async_commit();
    S* vr = dO;
    stage_rows(vr, lv, C, V, [&](int r, int j) {
      return r < n ? value_cast<S>(a.v[(row0 + r * g.H) * V + j]) : S(0);
    });
    cp_async_wait<0>();
    __syncthreads();
    product<S, TC, nw>(  // dk = diag(lam) Vn dS^T
        C, K, V, [&](int r, int j) { return vn[r * lv + j]; },
        [&](int j, int i) { return dSt[i * ls + j]; },
        [&](int r, int i, S x) { dk[r * lk + i] = w.lam[r] * x; });
    S sds = S(0);  // <S, dS> for the gate of the state carry
    if (gated) {   // S from global memory: kStageBatch loads in flight a thread
      for (int x0 = tid; x0 < K * V; x0 += nt * kStageBatch) {
        S sv[kStageBatch];
#pragma unroll
        for (int u = 0; u < kStageBatch; ++u) {
          const int x = x0 + nt * u;
          sv[u] = x < K * V ? Sc[x] : S(0);
        }
#pragma unroll
        for (int u = 0; u < kStageBatch; ++u) {
          const int x = x0 + nt * u, i = x / V;
          if (x < K * V) sds += sv[u] * dSt[i * ls + x - i * V];
        }
      }
      sds = block_reduce(sds, SumOp{}, S(0), red);
    }
    __syncthreads();
    St = state_view(Sc);  // S again, in place of dS, under the row sums
    cp_async_commit();

    // Per row, one warp each: e0 = rowsum(Q o dQ_S) (+ gam_n <S, dS> on the last row)
    // - gam_r sum_j dRs_rj (K S)_rj;  dlam = rowsum(K o dK_lam);  dv = dRs = diag(beta) dY;
    // dbeta = rowsum(dY o Rs) + rowsum(D o A), Rs = V - diag(gam) K S.
    for (int r = warp; r < n; r += nw) {
      S eq = S(0), el = S(0), er = S(0), db = S(0);
      for (int i = lane; i < K; i += 32) {
        eq += q[r * lk + i] * dq[r * lk + i];
        el += k[r * lk + i] * dk[r * lk + i];
      }
      const int64_t row = g.row(bh, c * C + r);
      for (int j = lane; j < V; j += 32) {
        const S y = dy[r * lv + j], kS = ks[r * lv + j];
        db += y * (vr[r * lv + j] - w.gam[r] * kS);
        er += (w.beta[r] * y) * kS;
        gr.dv[row * V + j] = value_cast<IO>(w.beta[r] * y);
      }
      for (int l = lane; l < r; l += 32) db += D[r * lc + l] * A[r * lc + l];
      eq = warp_reduce(eq, SumOp{});
      el = warp_reduce(el, SumOp{});
      er = warp_reduce(er, SumOp{});
      db = warp_reduce(db, SumOp{});
      if (lane == 0) {
        e0[r] = eq + (r == n - 1 ? w.gam[n - 1] * sds : S(0)) - w.gam[r] * er;
        dlam[r] = el;
        dbeta[r] = db;
      }
    }
    cp_async_wait<0>();
    __syncthreads();

    // dq += dP K;  dk += dP^T Q + (diag(beta) D + (diag(beta) D)^T) K - diag(gam) dRs S^T.
    product<S, TC, nw>(
        C, K, C, [&](int r, int l) { return dPE[r * lc + l]; },
        [&](int l, int i) { return k[l * lk + i]; },
        [&](int r, int i, S x) { dq[r * lk + i] += x; });
    product<S, TC, nw>(
        C, K, C, [&](int r, int l) { return dPE[l * lc + r]; },
        [&](int l, int i) { return q[l * lk + i]; },
        [&](int r, int i, S x) { dk[r * lk + i] += x; });
    product<S, TC, nw>(  // D is strictly lower: one of the two terms is zero
        C, K, C,
        [&](int r, int l) { return w.beta[r] * D[r * lc + l] + w.beta[l] * D[l * lc + r]; },
        [&](int l, int i) { return k[l * lk + i]; },
        [&](int r, int i, S x) { dk[r * lk + i] += x; });
    product<S, TC, nw>(
        C, K, V, [&](int r, int j) { return w.beta[r] * dy[r * lv + j]; },
        [&](int j, int i) { return St[i * ls + j]; },
        [&](int r, int i, S x) { dk[r * lk + i] -= w.gam[r] * x; });
    __syncthreads();

    if (gated) decay_gradients<nt>(dPE, QK, D, A, lc, w.beta, e0, dlam, n, gr.dg, g, bh, c);

    // The L2-norm backward of q and k (x = u / |u|: du = (dx - <dx, x> x) / |u|), rows out.
    for (int r = warp; r < n; r += nw) {
      S pq = S(0), pk = S(0);
      if (a.l2norm_qk) {
        for (int i = lane; i < K; i += 32) {
          pq += q[r * lk + i] * dq[r * lk + i];
          pk += k[r * lk + i] * dk[r * lk + i];
        }
        pq = warp_reduce(pq, SumOp{});
        pk = warp_reduce(pk, SumOp{});
      }
      const int64_t row = g.row(bh, c * C + r);
      for (int i = lane; i < K; i += 32) {
        gr.dq[row * K + i] = value_cast<IO>(w.rq[r] * (dq[r * lk + i] - pq * q[r * lk + i]));
        gr.dk[row * K + i] = value_cast<IO>(w.rk[r] * (dk[r * lk + i] - pk * k[r * lk + i]));
      }
      if (lane == 0) gr.dbeta[row] = value_cast<IO>(dbeta[r]);
    }
    __syncthreads();  // the buffers are read before the next item rewrites them
  }
}

// ---- grad for heads whose grad buffers exceed shared memory: three kernels on 64-wide tiles
//
// The single grad kernel holds q, k, dq, dk [C][K] and Vn, dY, K S, dO [C][V] at once (over
// 227 KiB from K = V = 128 in f32). Here no buffer is wider than 64 columns, and K S is not
// formed: with X = dY S^T [C][K],
//   sum_j (dRs o K S)_rj = beta_r rowsum(K o X)_r,
//   rowsum(dY o Rs) = rowsum(dY o V) - gam o rowsum(K o X).
//   scores  one block per (head, chunk): the row factors, A = K K^T and QK = Q K^T over 64-key
//           tiles, dP and D over 64-value tiles, rowsum(dY o V), dv
//   keys    one block per (head, chunk, 64 keys): over 64-value tiles dO S^T, Vn dS^T, dY S^T
//           and <S, dS> for its keys, then its columns of dq and dk (before the L2-norm
//           backward) and their row sums
//   rows    one block per (head, chunk): the key tiles' row sums added in order, dbeta, dg, the
//           L2-norm backward, dq and dk out

constexpr int kRowSums = 5;  // a key tile's row sums: eq, el, ek, pq, pk

// The split backward's global scratch, item e = head * NC + chunk, KT = ceil(K / 64) key tiles.
template <class S>
struct GradScratch {
  S* cc;       // [items, 4, C, C]    A, QK, dP = s (dO Vn^T) o M, D = -tril_{-1}(dY Vn^T) o M
  S* factors;  // [items, kFactors]
  S* dqk;      // [items, 2, C, K]    dq, dk before the L2-norm backward
  S* sums;     // [items, KT, kRowSums, C]
  S* sds;      // [items, KT]         <S, dS> over the tile's keys
};

// Three operand tiles and two accumulators (about 88 KiB in f32 with TF32 padding: two blocks
// an SM): A and QK over the key tiles, written out, then dP and D over the value tiles.
struct ScoresLayout {
  int64_t f, T0, T1, T2, M0, M1, total;
  ScoresLayout(Arena ar, bool tc) {
    const int lt = row_stride(kTile, tc);
    f = ar.take(kFactors);
    for (int64_t* t : {&T0, &T1, &T2, &M0, &M1}) *t = ar.take(int64_t(C) * lt);
    total = ar.at;
  }
};

template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(wide_threads(TC), TC ? 2 : 1)
    delta_grad_scores_kernel(DeltaRuleArgs<IO> a, DeltaRuleGrad<IO> gr, Geo g, Chunks<S> ws,
                             GradScratch<S> gs, ScoresLayout lay, S* scratch) {
  static_assert(kTile == C, "a C x C matrix takes a tile's place");
  S* base = block_base<S, Shared>(scratch, lay.total);
  const Factors<S> f(base + lay.f);
  S *T0 = base + lay.T0, *T1 = base + lay.T1, *T2 = base + lay.T2, *M0 = base + lay.M0;
  S* M1 = base + lay.M1;
  constexpr int nw = wide_threads(TC) / 32, lt = row_stride(kTile, TC);
  const int K = g.K, V = g.V, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool async = Shared, gated = a.g != nullptr;
  const S s = static_cast<S>(a.scale);
  for (int64_t e = blockIdx.x; e < g.B * g.H * g.NC; e += gridDim.x) {
    const int64_t bh = e / g.NC, c = e - bh * g.NC, row0 = g.row(bh, c * C);
    const int n = g.rows(c);
    S* cc = gs.cc + e * 4 * C * C;
    load_factors(a, g, bh, c, n, f);
    for (int k0 = 0; k0 < K; k0 += kTile) {  // A = K K^T in M0, QK = Q K^T in M1 (q, k in T0, T1)
      const int nk = min(kTile, K - k0);
      const bool first = k0 == 0;
      stage_keys(T0, lt, a.q, f.rq, g, bh, c, n, k0, nk);
      stage_keys(T1, lt, a.k, f.rk, g, bh, c, n, k0, nk);
      __syncthreads();
      accumulate_abt<S, TC, nw>(M0, lt, T1, T1, lt, C, nk, first);
      accumulate_abt<S, TC, nw>(M1, lt, T0, T1, lt, C, nk, first);
      __syncthreads();
    }
    for (int x = threadIdx.x; x < C * C; x += blockDim.x) {
      const int r = x / C, l = x - r * C;
      cc[x] = M0[r * lt + l];
      cc[C * C + x] = M1[r * lt + l];
    }
    __syncthreads();
    for (int j0 = 0; j0 < V; j0 += kTile) {  // dO Vn^T in M0, dY Vn^T in M1; rowsum(dY o V), dv
      const int nv = min(kTile, V - j0);
      const bool first = j0 == 0;
      copy_rows(T1, lt, ws.u + e * C * V + j0, V, C, nv, async);
      copy_rows(T2, lt, ws.dy + e * C * V + j0, V, C, nv, async);
      cp_async_commit();
      stage_scaled(T0, lt, C, n, nv, gr.dout + row0 * V + j0, g.H * V, nullptr);
      cp_async_wait<0>();
      __syncthreads();
      accumulate_abt<S, TC, nw>(M0, lt, T0, T1, lt, C, nv, first);
      accumulate_abt<S, TC, nw>(M1, lt, T2, T1, lt, C, nv, first);
      for (int r = warp; r < n; r += nw) {  // one warp per row
        const int64_t row = row0 + r * g.H;
        S yv = S(0);
        for (int j = lane; j < nv; j += 32) {
          const S y = T2[r * lt + j];
          yv += y * value_cast<S>(a.v[row * V + j0 + j]);
          gr.dv[row * V + j0 + j] = value_cast<IO>(f.beta[r] * y);
        }
        yv = warp_reduce(yv, SumOp{});
        if (lane == 0) f.yv[r] += yv;
      }
      __syncthreads();
    }
    for (int x = threadIdx.x; x < C * C; x += blockDim.x) {
      const int r = x / C, l = x - r * C;
      const S m = decay(f.Gam, gated, r, l);
      cc[2 * C * C + x] = (s * M0[r * lt + l]) * m;
      cc[3 * C * C + x] = r > l ? -M1[r * lt + l] * m : S(0);
    }
    for (int x = threadIdx.x; x < kFactors; x += blockDim.x)
      gs.factors[e * kFactors + x] = f.beta[x];
    __syncthreads();  // the buffers are read before the next item rewrites them
  }
}

// Three operand tiles, three accumulators and the factors (about 106 KiB in f32 with TF32
// padding: two blocks an SM). The value tiles in two passes: dO, dY with S, then Vn with dS.
struct KeysLayout {
  int64_t f, T0, T1, T2, dq, dk, X, red, total;
  KeysLayout(Arena ar, bool tc) {
    const int lt = row_stride(kTile, tc);
    f = ar.take(kFactors);
    for (int64_t* t : {&T0, &T1, &T2, &dq, &dk, &X}) *t = ar.take(int64_t(C) * lt);
    red = ar.take(32);
    total = ar.at;
  }
};

template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(wide_threads(TC), TC ? 2 : 1)
    delta_grad_keys_kernel(DeltaRuleArgs<IO> a, DeltaRuleGrad<IO> gr, Geo g, Chunks<S> ws,
                           GradScratch<S> gs, KeysLayout lay, S* scratch) {
  static_assert(kTile == C, "a C x C matrix takes a tile's place");
  S* base = block_base<S, Shared>(scratch, lay.total);
  const Factors<S> f(base + lay.f);
  S *T0 = base + lay.T0, *T1 = base + lay.T1, *T2 = base + lay.T2, *dq = base + lay.dq;
  S *dk = base + lay.dk, *X = base + lay.X, *red = base + lay.red;
  constexpr int nw = wide_threads(TC) / 32, lt = row_stride(kTile, TC);
  const int K = g.K, V = g.V, KT = (K + kTile - 1) / kTile;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool async = Shared, gated = a.g != nullptr;
  const S s = static_cast<S>(a.scale);
  for (int64_t item = blockIdx.x; item < g.B * g.H * g.NC * KT; item += gridDim.x) {
    const int64_t e = item / KT, bh = e / g.NC, c = e - bh * g.NC, row0 = g.row(bh, c * C);
    const int kti = static_cast<int>(item - e * KT), k0 = kti * kTile, nk = min(kTile, K - k0);
    const int n = g.rows(c);
    copy_rows(f.beta, kFactors, gs.factors + e * kFactors, kFactors, 1, kFactors, async);
    cp_async_commit();
    const S *Sg = ws.states + e * K * V + k0 * V, *dSg = ws.dso + e * K * V + k0 * V;
    // Pass 1: dq_S = dO S^T and X = dY S^T over this tile's keys (dO in T0, dY in T1, S in T2).
    for (int j0 = 0; j0 < V; j0 += kTile) {
      const int nv = min(kTile, V - j0);
      const bool first = j0 == 0;
      copy_rows(T1, lt, ws.dy + e * C * V + j0, V, C, nv, async);
      copy_rows(T2, lt, Sg + j0, V, nk, nv, async);
      cp_async_commit();
      stage_scaled(T0, lt, C, n, nv, gr.dout + row0 * V + j0, g.H * V, nullptr);
      cp_async_wait<0>();
      __syncthreads();
      accumulate_abt<S, TC, nw>(dq, lt, T0, T2, lt, nk, nv, first);
      accumulate_abt<S, TC, nw>(X, lt, T1, T2, lt, nk, nv, first);
      __syncthreads();
    }
    // Pass 2: dk_lam = Vn dS^T (Vn in T0, dS in T1) and <S, dS> (S from global memory).
    S sds = S(0);
    for (int j0 = 0; j0 < V; j0 += kTile) {
      const int nv = min(kTile, V - j0);
      const bool first = j0 == 0;
      copy_rows(T0, lt, ws.u + e * C * V + j0, V, C, nv, async);
      copy_rows(T1, lt, dSg + j0, V, nk, nv, async);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
      accumulate_abt<S, TC, nw>(dk, lt, T0, T1, lt, nk, nv, first);
      if (gated)
        for (int x = threadIdx.x; x < nk * nv; x += blockDim.x) {
          const int i = x / nv, j = x - i * nv;
          sds += Sg[int64_t(i) * V + j0 + j] * T1[i * lt + j];
        }
      __syncthreads();
    }
    if (gated) sds = block_reduce(sds, SumOp{}, S(0), red);
    copy_rows(T2, lt, gs.cc + (e * 4 + 2) * C * C, C, C, C, async);  // dP, under the rest
    cp_async_commit();
    stage_keys(T0, lt, a.q, f.rq, g, bh, c, n, k0, nk);  // q and k of the tile's keys
    stage_keys(T1, lt, a.k, f.rk, g, bh, c, n, k0, nk);
    __syncthreads();
    // The tile's row sums of the V products: eq = rowsum(Q o s gam dO S^T), el = rowsum(K o
    // lam Vn dS^T), ek = rowsum(K o X).
    S* sums = gs.sums + (e * KT + kti) * kRowSums * C;
    for (int r = warp; r < C; r += nw) {
      S eq = S(0), el = S(0), ek = S(0);
      for (int i = lane; i < nk; i += 32) {
        eq += T0[r * lt + i] * dq[r * lt + i];
        el += T1[r * lt + i] * dk[r * lt + i];
        ek += T1[r * lt + i] * X[r * lt + i];
      }
      eq = warp_reduce(eq, SumOp{});
      el = warp_reduce(el, SumOp{});
      ek = warp_reduce(ek, SumOp{});
      if (lane == 0) {
        sums[r] = s * f.gam[r] * eq;
        sums[C + r] = f.lam[r] * el;
        sums[2 * C + r] = ek;
      }
    }
    if (threadIdx.x == 0) gs.sds[e * KT + kti] = sds;
    __syncthreads();
    // dq = s diag(gam) dO S^T + dP K;  dk = diag(lam) Vn dS^T - diag(gam beta) X + dP^T Q
    // + (diag(beta) D + (diag(beta) D)^T) K  (this tile's columns). X folds into dk, then
    // holds D.
    for (int x = threadIdx.x; x < C * nk; x += blockDim.x) {
      const int r = x / nk, i = x - r * nk;
      dq[r * lt + i] = (s * f.gam[r]) * dq[r * lt + i];
      dk[r * lt + i] = f.lam[r] * dk[r * lt + i] - (f.gam[r] * f.beta[r]) * X[r * lt + i];
    }
    cp_async_wait<0>();
    __syncthreads();
    copy_rows(X, lt, gs.cc + (e * 4 + 3) * C * C, C, C, C, async);
    cp_async_commit();
    product<S, TC, nw>(
        C, nk, C, [&](int r, int l) { return T2[r * lt + l]; },
        [&](int l, int i) { return T1[l * lt + i]; },
        [&](int r, int i, S x) { dq[r * lt + i] += x; });
    product<S, TC, nw>(
        C, nk, C, [&](int r, int l) { return T2[l * lt + r]; },
        [&](int l, int i) { return T0[l * lt + i]; },
        [&](int r, int i, S x) { dk[r * lt + i] += x; });
    cp_async_wait<0>();
    __syncthreads();
    product<S, TC, nw>(  // D is strictly lower: one of the two terms is zero
        C, nk, C,
        [&](int r, int l) { return f.beta[r] * X[r * lt + l] + f.beta[l] * X[l * lt + r]; },
        [&](int l, int i) { return T1[l * lt + i]; },
        [&](int r, int i, S x) { dk[r * lt + i] += x; });
    __syncthreads();
    S* dqg = gs.dqk + e * 2 * C * K + k0;
    for (int r = warp; r < C; r += nw) {  // the L2-norm backward's row sums, the columns out
      S pq = S(0), pk = S(0);
      for (int i = lane; i < nk; i += 32) {
        pq += T0[r * lt + i] * dq[r * lt + i];
        pk += T1[r * lt + i] * dk[r * lt + i];
        dqg[r * K + i] = dq[r * lt + i];
        dqg[C * K + r * K + i] = dk[r * lt + i];
      }
      pq = warp_reduce(pq, SumOp{});
      pk = warp_reduce(pk, SumOp{});
      if (lane == 0) {
        sums[3 * C + r] = pq;
        sums[4 * C + r] = pk;
      }
    }
    __syncthreads();  // the buffers are read before the next item rewrites them
  }
}

struct RowsSumLayout {
  int64_t f, A, QK, dPE, D, e0, dlam, sums, total;
  RowsSumLayout(Arena ar, bool tc) {
    const int lc = row_stride(C, tc);
    f = ar.take(kFactors);
    for (int64_t* t : {&A, &QK, &dPE, &D}) *t = ar.take(int64_t(C) * lc);
    e0 = ar.take(C);
    dlam = ar.take(C);
    sums = ar.take(kRowSums * C + 1);  // the sums over key tiles, then <S, dS>
    total = ar.at;
  }
};

template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(kNt)
    delta_grad_rows_kernel(DeltaRuleArgs<IO> a, DeltaRuleGrad<IO> gr, Geo g, GradScratch<S> gs,
                           RowsSumLayout lay, S* scratch) {
  S* base = block_base<S, Shared>(scratch, lay.total);
  const Factors<S> f(base + lay.f);
  S *A = base + lay.A, *QK = base + lay.QK, *dPE = base + lay.dPE, *D = base + lay.D;
  S *e0 = base + lay.e0, *dlam = base + lay.dlam, *sums = base + lay.sums;
  constexpr int nw = kNt / 32, lc = row_stride(C, TC);
  const int K = g.K, KT = (K + kTile - 1) / kTile, tid = threadIdx.x, lane = tid & 31;
  const int warp = tid >> 5;
  const bool async = Shared, gated = a.g != nullptr;
  for (int64_t e = blockIdx.x; e < g.B * g.H * g.NC; e += gridDim.x) {
    const int64_t bh = e / g.NC, c = e - bh * g.NC;
    const int n = g.rows(c);
    copy_rows(f.beta, kFactors, gs.factors + e * kFactors, kFactors, 1, kFactors, async);
    S* mats[4] = {A, QK, dPE, D};
    for (int m = 0; m < 4; ++m) copy_rows(mats[m], lc, gs.cc + (e * 4 + m) * C * C, C, C, C, async);
    cp_async_commit();
    for (int x = tid; x <= kRowSums * C; x += kNt) {  // the key tiles in order
      const S* src = x < kRowSums * C ? gs.sums + e * KT * kRowSums * C + x : gs.sds + e * KT;
      const int64_t step = x < kRowSums * C ? kRowSums * C : 1;
      S acc = S(0);
      for (int t = 0; t < KT; ++t) acc += src[t * step];
      sums[x] = acc;
    }
    cp_async_wait<0>();
    __syncthreads();
    const S *eq = sums, *el = sums + C, *ek = sums + 2 * C, *pq = sums + 3 * C;
    const S* pk = sums + 4 * C;
    const S sds = sums[kRowSums * C];
    // e0 = rowsum(Q o dQ_S) (+ gam_n <S, dS> on the last row) - gam beta rowsum(K o X);
    // dbeta = rowsum(dY o V) - gam rowsum(K o X) + rowsum(D o A).
    for (int r = warp; r < n; r += nw) {
      S da = S(0);
      for (int l = lane; l < r; l += 32) da += D[r * lc + l] * A[r * lc + l];
      da = warp_reduce(da, SumOp{});
      if (lane == 0) {
        e0[r] = eq[r] + (r == n - 1 ? f.gam[n - 1] * sds : S(0)) - (f.gam[r] * f.beta[r]) * ek[r];
        dlam[r] = el[r];
        gr.dbeta[g.row(bh, c * C + r)] = value_cast<IO>(f.yv[r] - f.gam[r] * ek[r] + da);
      }
    }
    __syncthreads();
    if (gated) decay_gradients<kNt>(dPE, QK, D, A, lc, f.beta, e0, dlam, n, gr.dg, g, bh, c);
    // The L2-norm backward (du = (dx - <dx, x> x) / |u|), rows out.
    const S* dqs = gs.dqk + e * 2 * C * K;
    for (int r = warp; r < n; r += nw) {
      const int64_t row = g.row(bh, c * C + r);
      const S sq = a.l2norm_qk ? pq[r] : S(0), sk = a.l2norm_qk ? pk[r] : S(0);
      for (int i = lane; i < K; i += 32) {
        const S qn = value_cast<S>(a.q[row * K + i]) * f.rq[r];
        const S kn = value_cast<S>(a.k[row * K + i]) * f.rk[r];
        gr.dq[row * K + i] = value_cast<IO>(f.rq[r] * (dqs[r * K + i] - sq * qn));
        gr.dk[row * K + i] = value_cast<IO>(f.rk[r] * (dqs[C * K + r * K + i] - sk * kn));
      }
    }
    __syncthreads();  // the buffers are read before the next item rewrites them
  }
}

// ---- launchers

template <class S>
void check_args(const DeltaRuleArgs<S>& a, const char* op) {
  const RecDims& d = a.d;
  HLA_CHECK(d.B > 0 && d.T > 0 && d.H > 0 && d.K > 0 && d.V > 0,
            op << ": B,T,H,K,V = " << d.B << "," << d.T << "," << d.H << "," << d.K << "," << d.V);
  HLA_CHECK(a.q && a.k && a.v && a.beta, op << ": q, k, v and beta are required");
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

Geo geo_of(const RecDims& d) {
  return {d.B, d.T, d.H, (d.T + C - 1) / C, static_cast<int>(d.K), static_cast<int>(d.V)};
}

template <class S>
Tensor scratch_of(int64_t n) {
  return Tensor::empty({n}, std::is_same_v<S, double> ? DType::f64 : DType::f32, Device::CUDA);
}

// The global workspace of one call (one allocation); the backward adds dY and the dS's.
template <class S>
struct Workspace {
  Tensor buf;
  Chunks<S> ptrs{};
  Workspace(const Geo& g, bool backward) {
    const int64_t items = g.B * g.H * g.NC, K = g.K, V = g.V;
    Arena ar;
    const int64_t ti = ar.take(items * C * C), p = ar.take(items * C * C);
    const int64_t u = ar.take(items * C * V), w = ar.take(items * C * K);
    const int64_t kl = ar.take(items * C * K), qg = ar.take(items * C * K);
    const int64_t gn = ar.take(items), st = ar.take(items * K * V);
    const int64_t dy = backward ? ar.take(items * C * V) : 0;
    const int64_t dso = backward ? ar.take(items * K * V) : 0;
    buf = scratch_of<S>(ar.at);
    S* b = static_cast<S*>(buf.raw_data());
    ptrs = {b + ti,
            b + p,
            b + u,
            b + w,
            b + kl,
            b + qg,
            b + gn,
            b + st,
            backward ? b + dy : nullptr,
            backward ? b + dso : nullptr};
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
int walk_columns(const Geo& g) {
  const int64_t narrow = g.B * g.H * ((g.V + kWalkColumns / 2 - 1) / (kWalkColumns / 2));
  return g.V > kWalkColumns / 2 && narrow <= Context::get().props().multiProcessorCount
             ? kWalkColumns / 2
             : kWalkColumns;
}

// prep and walk: the chunks' matrices and states (Vn in ws.u), hT when asked.
template <class S, class IO, bool TC>
void forward_states(const DeltaRuleArgs<IO>& a, const Geo& g, const Chunks<S>& ws, IO* hT,
                    const char* op) {
  const PrepLayout prep(Arena{}, TC);
  launch_items<S>(delta_prep_kernel<S, IO, TC, true>, delta_prep_kernel<S, IO, TC, false>, kNt,
                  g.B * g.H * g.NC, prep.total, op, a, g, ws, prep);
  const int cols = walk_columns(g);
  const int64_t slices = (g.V + cols - 1) / cols;
  const WalkLayout two(Arena{}, g.K, TC, 2, cols), one(Arena{}, g.K, TC, 1, cols);
  const WalkLayout& walk = size_t(two.total) * sizeof(S) <= shared_memory_limit() ? two : one;
  launch_items<S>(delta_walk_kernel<S, IO, TC, true>, delta_walk_kernel<S, IO, TC, false>,
                  wide_threads(TC), g.B * g.H * slices, walk.total, op, a.h0, hT, g, ws, walk);
}

template <class S, class IO, bool TC>
void chunk_forward(const DeltaRuleArgs<IO>& a, const DeltaRuleOut<IO>& out, const char* op) {
  const Geo g = geo_of(a.d);
  Workspace<S> ws(g, false);
  forward_states<S, IO, TC>(a, g, ws.ptrs, out.hT, op);
  const int64_t slices = (g.V + kOutputColumns - 1) / kOutputColumns;
  const OutputLayout lay(Arena{}, g.K, TC);
  launch_items<S>(delta_output_kernel<S, IO, TC, true>, delta_output_kernel<S, IO, TC, false>, kNt,
                  g.B * g.H * g.NC * slices, lay.total, op, g, ws.ptrs, static_cast<S>(a.scale),
                  out.o, lay);
}

template <class S, class IO, bool TC>
void chunk_backward(const DeltaRuleArgs<IO>& a, const DeltaRuleGrad<IO>& gr, const char* op) {
  const Geo g = geo_of(a.d);
  Workspace<S> ws(g, true);
  forward_states<S, IO, TC>(a, g, ws.ptrs, static_cast<IO*>(nullptr), op);
  const int cols = walk_columns(g);
  const int64_t slices = (g.V + cols - 1) / cols;
  const WalkBackLayout back(Arena{}, g.K, TC, cols);
  launch_items<S>(delta_walk_back_kernel<S, IO, TC, true>, delta_walk_back_kernel<S, IO, TC, false>,
                  wide_threads(TC), g.B * g.H * slices, back.total, op, gr, static_cast<S>(a.scale),
                  g, ws.ptrs, back);
  // One grad kernel when its buffers fit in shared memory (S and dS staged too when they still
  // fit), else the three kernels on 64-wide tiles.
  const GradLayout staged(Arena{}, g.K, g.V, true, TC), plain(Arena{}, g.K, g.V, false, TC);
  const size_t limit = shared_memory_limit();
  if (size_t(plain.total) * sizeof(S) <= limit) {
    const GradLayout& lay = size_t(staged.total) * sizeof(S) <= limit ? staged : plain;
    launch_items<S>(lay.stage_states ? delta_grad_kernel<S, IO, TC, true, true>
                                     : delta_grad_kernel<S, IO, TC, true, false>,
                    delta_grad_kernel<S, IO, TC, false>, wide_threads(TC), g.B * g.H * g.NC,
                    lay.total, op, a, gr, g, ws.ptrs, lay);
    return;
  }
  const int64_t items = g.B * g.H * g.NC, KT = (g.K + kTile - 1) / kTile;
  Arena ar;
  const int64_t cc = ar.take(items * 4 * C * C), factors = ar.take(items * kFactors);
  const int64_t dqk = ar.take(items * 2 * C * g.K), sums = ar.take(items * KT * kRowSums * C);
  const int64_t sds = ar.take(items * KT);
  Tensor buf = scratch_of<S>(ar.at);
  S* b = static_cast<S*>(buf.raw_data());
  const GradScratch<S> gs{b + cc, b + factors, b + dqk, b + sums, b + sds};
  const ScoresLayout scores(Arena{}, TC);
  launch_items<S>(delta_grad_scores_kernel<S, IO, TC, true>,
                  delta_grad_scores_kernel<S, IO, TC, false>, wide_threads(TC), items, scores.total,
                  op, a, gr, g, ws.ptrs, gs, scores);
  const KeysLayout keys(Arena{}, TC);
  launch_items<S>(delta_grad_keys_kernel<S, IO, TC, true>, delta_grad_keys_kernel<S, IO, TC, false>,
                  wide_threads(TC), items * KT, keys.total, op, a, gr, g, ws.ptrs, gs, keys);
  const RowsSumLayout rows(Arena{}, TC);
  launch_items<S>(delta_grad_rows_kernel<S, IO, TC, true>, delta_grad_rows_kernel<S, IO, TC, false>,
                  kNt, items, rows.total, op, a, gr, g, gs, rows);
}

// The bf16 structs with the device's bf16 type (the same bits).
DeltaRuleArgs<bf16_dev> device_view(const DeltaRuleArgs<bf16>& a) {
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
DeltaRuleOut<bf16_dev> device_view(const DeltaRuleOut<bf16>& o) {
  return {reinterpret_cast<bf16_dev*>(o.o), reinterpret_cast<bf16_dev*>(o.hT)};
}
DeltaRuleGrad<bf16_dev> device_view(const DeltaRuleGrad<bf16>& g) {
  auto c = [](const bf16* p) { return reinterpret_cast<const bf16_dev*>(p); };
  auto m = [](bf16* p) { return reinterpret_cast<bf16_dev*>(p); };
  return {c(g.dout), c(g.dhT), m(g.dq), m(g.dk), m(g.dv), m(g.dbeta), m(g.dg), m(g.dh0)};
}

// Calls run.template operator()<C, IO, TC>(a, r) with the kernels' compute type C, storage type
// IO and product flag TC for inputs of type S: f32 and f64 compute in their own type (f32 with
// TF32 products when asked); bf16 reads and writes bf16 and computes in f32 with TF32 products.
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

// The two runs of with_kernel_types (C++17 .cu files: no templated lambdas).
struct RunForward {
  const char* op;
  template <class C, class IO, bool TC, class Args, class Out>
  void operator()(const Args& args, const Out& o) const {
    chunk_forward<C, IO, TC>(args, o, op);
  }
};
struct RunBackward {
  const char* op;
  template <class C, class IO, bool TC, class Args, class Grad>
  void operator()(const Args& args, const Grad& g) const {
    chunk_backward<C, IO, TC>(args, g, op);
  }
};

}  // namespace

template <class S>
void delta_rule_chunk_forward(const DeltaRuleArgs<S>& a, const DeltaRuleOut<S>& out) {
  const char* op = "delta_rule_chunk_forward (cuda)";
  check_args(a, op);
  HLA_CHECK(out.o, "o is required");
  with_kernel_types(a, out, RunForward{op});
}

template <class S>
void delta_rule_chunk_backward(const DeltaRuleArgs<S>& a, const DeltaRuleGrad<S>& gr) {
  const char* op = "delta_rule_chunk_backward (cuda)";
  check_args(a, op);
  HLA_CHECK(gr.dout && gr.dq && gr.dk && gr.dv && gr.dbeta,
            "dout, dq, dk, dv and dbeta are required");
  HLA_CHECK(!a.g || gr.dg, "dg is required when g is given");
  with_kernel_types(a, gr, RunBackward{op});
}

template void delta_rule_chunk_forward<float>(const DeltaRuleArgs<float>&,
                                              const DeltaRuleOut<float>&);
template void delta_rule_chunk_forward<double>(const DeltaRuleArgs<double>&,
                                               const DeltaRuleOut<double>&);
template void delta_rule_chunk_backward<float>(const DeltaRuleArgs<float>&,
                                               const DeltaRuleGrad<float>&);
template void delta_rule_chunk_backward<double>(const DeltaRuleArgs<double>&,
                                                const DeltaRuleGrad<double>&);
template void delta_rule_chunk_forward<bf16>(const DeltaRuleArgs<bf16>&, const DeltaRuleOut<bf16>&);
template void delta_rule_chunk_backward<bf16>(const DeltaRuleArgs<bf16>&,
                                              const DeltaRuleGrad<bf16>&);

}  // namespace hla::cuda
