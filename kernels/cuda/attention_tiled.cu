// defines: hla::cuda::softmax_attention_tiled_forward / _backward (float, double)
//
// Flash-attention-2 on CUDA in fp32 / fp64 SIMT arithmetic: the function of
// kernels/reference/softmax_attention.cpp (which states the maths) computed like the CPU kernel
// kernels/cpu/recurrence/softmax_attention_tiled.cpp, on tiles of Br queries x Bc keys with an
// online softmax; no T x T matrix ever reaches global memory.
// Layouts (device pointers, row-major, contiguous):
//   q [B,T,H,K]   k [B,T,Hkv,K]   v [B,T,Hkv,V]   o, dout [B,T,H,V]   lse [B,H,T]
// Key j is allowed for query i iff j <= i (causal) and j >= i - W + 1 (window W > 0).
// GQA: query head h reads kv head h / (H / Hkv).
//
// Forward, one block per (b, h, query tile), over the key tiles holding allowed keys:
//   S = scale Q K^T (masked: -inf)      m' = max(m, rowmax S)      P = exp(S - m')
//   l = exp(m - m') l + rowsum P        acc = diag(exp(m - m')) acc + P V
//   o = acc / l,  lse = m + log l       (a row without allowed keys: o = 0, lse = -inf)
// Backward, with D_i = dO_i . O_i (one warp per row), P = exp(scale Q K^T - lse) recomputed:
//   dV = sum P^T dO,   dP = dO V^T,   dS = P o (dP - D),
//   dK = scale sum dS^T Q,   dQ = scale sum dS K
// in two kernels, so that every output element has one owner and no float atomics are needed
// (deterministic): one block per (b, kv head, key tile) sums dK and dV over the query tiles of
// every query head of its group; one block per (b, h, query tile) sums dQ over its key tiles.
//
// Thread mapping: 256 threads as a 16 x 16 grid (ty, tx). A tile of logits is 16 RM x 16 RM; a
// thread owns rows ty + 16 i and columns tx + 16 j (i, j < RM), so the 16 threads of one row are
// one half warp and row maxima and sums are shuffles. Accumulators over a head dimension
// (o, dq, dk, dv) are register tiles of RM rows x NC columns tx + 16 j: head sizes up to 16 NC.
// Shared memory (elements of S; ld = the size rounded up to odd, so the 16 rows a warp reads at
// one column fall in distinct banks; Br = Bc = 16 RM, ldp = Bc + 1):
//   forward  Q, K [*][ldk]; V [Bc][ldv]; P [Br][ldp]
//   dK, dV   K, Q [*][ldk]; V, dO [*][ldv]; P, dS [Br][ldp]; lse, D [Br]
//   dQ       Q, K [*][ldk]; dO, V [*][ldv]; dS [Br][ldp]; lse, D [Br]
// Head sizes K, V up to 256. The head-size class (max(K, V) <= 64, 128, 256 -> NC = 4, 8, 16)
// and the dtype fix RM so that the largest head size of the class fits the 227 KiB of an sm_90
// block: f32 RM = 4, 4, 2; f64 RM = 4, 2, 1 (dK/dV kernel, f32, K = V = 128: 162 KiB).
#include <limits>
#include <type_traits>

#include "kernels/cuda/attention_mask.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/recurrence_cuda.h"

namespace hla::cuda {

using kernels::AttentionArgs;
using kernels::AttentionGrad;
using kernels::AttentionOut;
using kernels::AttnDims;

namespace {

constexpr int kAttnThreads = 256;  // 16 x 16
constexpr int kGrid = 16;          // threads per tile row and per tile column
constexpr int64_t kMaxHeadDim = 256;

// Rows (and logit columns) per thread: the largest tile whose shared memory fits an sm_90 block
// at the largest head size of the class NC (see the header).
template <class S, int NC>
constexpr int rows_per_thread() {
  if (sizeof(S) == 4) return NC <= 8 ? 4 : 2;
  return NC == 4 ? 4 : (NC == 8 ? 2 : 1);
}

__host__ __device__ inline int odd_ld(int n) { return n | 1; }

__device__ inline int64_t row_offset(int64_t b, int64_t t, int64_t T, int64_t heads, int64_t hd,
                                     int64_t D) {
  return ((b * T + t) * heads + hd) * D;
}

// dst[r][x] = mul * src row t0 + r (head hd of a [B,T,heads,D] tensor), for r < n; zero for
// n <= r < rows.
template <class S>
__device__ inline void load_rows(S* dst, int rows, int ld, const S* __restrict__ src, int64_t b,
                                 int64_t t0, int n, int64_t T, int64_t heads, int64_t hd, int D,
                                 S mul) {
  for (int e = threadIdx.x; e < rows * D; e += blockDim.x) {
    const int r = e / D, x = e - r * D;
    dst[r * ld + x] = r < n ? mul * src[row_offset(b, t0 + r, T, heads, hd, D) + x] : S(0);
  }
}

// dst[r] = src[r] for r < n, zero for n <= r < rows.
template <class S>
__device__ inline void load_vec(S* dst, int rows, const S* __restrict__ src, int n) {
  for (int r = threadIdx.x; r < rows; r += blockDim.x) dst[r] = r < n ? src[r] : S(0);
}

template <class S>
__device__ inline MaskRule mask_of(const AttentionArgs<S>& a) {
  return {a.d.T, a.causal, a.window};
}

// Reduces over the 16 threads of a tile row (a half warp); every one of them gets the same value.
template <class A, class Op>
__device__ inline A row_reduce(A v, Op op) {
  for (int o = kGrid / 2; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// acc[i][j] = sum_{x < n} A[(ty + 16 i) lda + x] B[(tx + 16 j) ldb + x]: the thread's entries of
// a tile of A B^T (logits or dP).
template <class S, int RM>
__device__ inline void dot_tile(S (&acc)[RM][RM], const S* A, int lda, const S* Bm, int ldb, int n,
                                int tx, int ty) {
#pragma unroll
  for (int i = 0; i < RM; ++i)
#pragma unroll
    for (int j = 0; j < RM; ++j) acc[i][j] = S(0);
#pragma unroll 4
  for (int x = 0; x < n; ++x) {
    S av[RM], bv[RM];
#pragma unroll
    for (int i = 0; i < RM; ++i) av[i] = A[(ty + kGrid * i) * lda + x];
#pragma unroll
    for (int j = 0; j < RM; ++j) bv[j] = Bm[(tx + kGrid * j) * ldb + x];
#pragma unroll
    for (int i = 0; i < RM; ++i)
#pragma unroll
      for (int j = 0; j < RM; ++j) acc[i][j] += av[i] * bv[j];
  }
}

// acc[i][j] += sum_{c < n} W(ty + 16 i, c) X[c ldx + tx + 16 j] for columns tx + 16 j < D, where
// W(r, c) = W[r w_row + c w_col] (w_col = 1: W as stored; w_row = 1: its transpose).
template <class S, int RM, int NC>
__device__ inline void accumulate_tile(S (&acc)[RM][NC], const S* W, int w_row, int w_col,
                                       const S* X, int ldx, int n, int D, int tx, int ty) {
#pragma unroll 2
  for (int c = 0; c < n; ++c) {
    S wv[RM];
#pragma unroll
    for (int i = 0; i < RM; ++i) wv[i] = W[(ty + kGrid * i) * w_row + c * w_col];
#pragma unroll
    for (int j = 0; j < NC; ++j) {
      const int col = tx + kGrid * j;
      const S x = col < D ? X[c * ldx + col] : S(0);
#pragma unroll
      for (int i = 0; i < RM; ++i) acc[i][j] += wv[i] * x;
    }
  }
}

// The thread's entries of P = exp(scale Q K^T - lse) (masked: 0) and dS = P o (dO V^T - D) of the
// tile at queries i0.., keys j0.., written to Ps and dSs ([Br][ldp]; Ps may be null).
template <class S, int RM>
__device__ inline void softmax_grad_tile(const MaskRule& mask, S scale, int64_t i0, int64_t j0,
                                         const S* Qs, const S* Ks, int ldk, int K, const S* dOs,
                                         const S* Vs, int ldv, int V, const S* lse_s,
                                         const S* D_s, S* Ps, S* dSs, int ldp, int tx, int ty) {
  S s[RM][RM], dp[RM][RM];
  dot_tile<S, RM>(s, Qs, ldk, Ks, ldk, K, tx, ty);
  dot_tile<S, RM>(dp, dOs, ldv, Vs, ldv, V, tx, ty);
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    const int r = ty + kGrid * i;
#pragma unroll
    for (int j = 0; j < RM; ++j) {
      const int col = tx + kGrid * j;
      const S p = mask.allowed(i0 + r, j0 + col) ? exp(scale * s[i][j] - lse_s[r]) : S(0);
      if (Ps) Ps[r * ldp + col] = p;
      dSs[r * ldp + col] = p * (dp[i][j] - D_s[r]);
    }
  }
}

// ---- kernels

template <class S, int RM, int NC>
__global__ void __launch_bounds__(kAttnThreads)
    attention_fwd_kernel(AttentionArgs<S> a,     // device pointers, see header
                         S* __restrict__ o,      // [B,T,H,V] overwritten
                         S* __restrict__ lse,    // [B,H,T] overwritten, or null
                         int n_tiles) {          // query tiles per (b, h)
  constexpr int Br = kGrid * RM, Bc = kGrid * RM, ldp = Bc + 1;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const AttnDims d = a.d;
  const int K = static_cast<int>(d.K), V = static_cast<int>(d.V), ldk = odd_ld(K), ldv = odd_ld(V);
  S* Qs = reinterpret_cast<S*>(smem_raw);  // [Br][ldk] scale * q
  S* Ks = Qs + Br * ldk;                   // [Bc][ldk]
  S* Vs = Ks + Bc * ldk;                   // [Bc][ldv]
  S* Ps = Vs + Bc * ldv;                   // [Br][ldp]
  const int tx = threadIdx.x % kGrid, ty = threadIdx.x / kGrid;
  // The last query tiles see the most keys under causality: they go first.
  const int tile = n_tiles - 1 - static_cast<int>(blockIdx.x % n_tiles);
  const int64_t bh = blockIdx.x / n_tiles, b = bh / d.H, h = bh % d.H, c = h / (d.H / d.Hkv);
  const int64_t T = d.T, i0 = static_cast<int64_t>(tile) * Br;
  const int nq = static_cast<int>(T - i0 < Br ? T - i0 : Br);
  const MaskRule mask = mask_of(a);
  const S neg_inf = -std::numeric_limits<S>::infinity();

  load_rows(Qs, Br, ldk, a.q, b, i0, nq, T, d.H, h, K, static_cast<S>(a.scale));
  S m[RM], l[RM], acc[RM][NC];  // l: this thread's share of the row sum
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    m[i] = neg_inf;
    l[i] = S(0);
#pragma unroll
    for (int j = 0; j < NC; ++j) acc[i][j] = S(0);
  }
  const int64_t first = mask.first_key(i0), last = mask.last_key(i0 + nq);
  for (int64_t j0 = first - first % Bc; j0 <= last; j0 += Bc) {
    const int nk = static_cast<int>(T - j0 < Bc ? T - j0 : Bc);
    __syncthreads();  // the previous tile's reads of Ks, Vs, Ps are done
    load_rows(Ks, Bc, ldk, a.k, b, j0, nk, T, d.Hkv, c, K, S(1));
    load_rows(Vs, Bc, ldv, a.v, b, j0, nk, T, d.Hkv, c, V, S(1));
    __syncthreads();
    S s[RM][RM];
    dot_tile<S, RM>(s, Qs, ldk, Ks, ldk, K, tx, ty);
#pragma unroll
    for (int i = 0; i < RM; ++i) {
      const int r = ty + kGrid * i;
      S mx = neg_inf;
#pragma unroll
      for (int j = 0; j < RM; ++j) {
        if (!mask.allowed(i0 + r, j0 + tx + kGrid * j)) s[i][j] = neg_inf;
        mx = s[i][j] > mx ? s[i][j] : mx;
      }
      mx = row_reduce(mx, MaxOp());
      const S m_new = m[i] > mx ? m[i] : mx;
      // a row with no allowed key yet keeps m = -inf: shift it by 0 instead (no inf - inf)
      const S shift = m_new == neg_inf ? S(0) : m_new;
      const S correction = exp(m[i] - shift);
      S row_sum = S(0);
#pragma unroll
      for (int j = 0; j < RM; ++j) {
        const S p = exp(s[i][j] - shift);
        Ps[r * ldp + tx + kGrid * j] = p;
        row_sum += p;
      }
      l[i] = correction * l[i] + row_sum;
#pragma unroll
      for (int j = 0; j < NC; ++j) acc[i][j] *= correction;
      m[i] = m_new;
    }
    __syncthreads();  // Ps complete
    accumulate_tile<S, RM, NC>(acc, Ps, ldp, 1, Vs, ldv, nk, V, tx, ty);
  }
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    const S l_row = row_reduce(l[i], SumOp());
    const int r = ty + kGrid * i;
    if (r >= nq) continue;
    const S inv = l_row > S(0) ? S(1) / l_row : S(0);
    S* o_row = o + row_offset(b, i0 + r, T, d.H, h, V);
#pragma unroll
    for (int j = 0; j < NC; ++j) {
      const int col = tx + kGrid * j;
      if (col < V) o_row[col] = acc[i][j] * inv;
    }
    if (lse && tx == 0) lse[bh * T + i0 + r] = l_row > S(0) ? m[i] + log(l_row) : neg_inf;
  }
}

// D[b,h,t] = dout[b,t,h,:] . o[b,t,h,:], one warp per (b, t, h) row.
template <class S>
__global__ void attention_delta_kernel(AttnDims d, const S* __restrict__ dout,
                                       const S* __restrict__ o, S* __restrict__ D) {
  const int64_t rows = d.B * d.T * d.H, V = d.V;
  const int lane = threadIdx.x % 32;
  const int64_t n_warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
       row < rows; row += n_warps) {
    S sum = S(0);
    for (int64_t x = lane; x < V; x += 32) sum += dout[row * V + x] * o[row * V + x];
    sum = warp_reduce(sum, SumOp());
    if (lane == 0) {
      const int64_t h = row % d.H, bt = row / d.H, t = bt % d.T, b = bt / d.T;
      D[(b * d.H + h) * d.T + t] = sum;
    }
  }
}

template <class S, int RM, int NC>
__global__ void __launch_bounds__(kAttnThreads)
    attention_bwd_dkdv_kernel(AttentionArgs<S> a, AttentionGrad<S> g,
                              const S* __restrict__ D,  // [B,H,T] dO . O
                              int n_tiles) {            // key tiles per (b, kv head)
  constexpr int Br = kGrid * RM, Bc = kGrid * RM, ldp = Bc + 1;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const AttnDims d = a.d;
  const int K = static_cast<int>(d.K), V = static_cast<int>(d.V), ldk = odd_ld(K), ldv = odd_ld(V);
  S* Ks = reinterpret_cast<S*>(smem_raw);  // [Bc][ldk]
  S* Vs = Ks + Bc * ldk;                   // [Bc][ldv]
  S* Qs = Vs + Bc * ldv;                   // [Br][ldk]
  S* dOs = Qs + Br * ldk;                  // [Br][ldv]
  S* Ps = dOs + Br * ldv;                  // [Br][ldp]
  S* dSs = Ps + Br * ldp;                  // [Br][ldp]
  S* lse_s = dSs + Br * ldp;               // [Br]
  S* D_s = lse_s + Br;                     // [Br]
  const int tx = threadIdx.x % kGrid, ty = threadIdx.x / kGrid;
  const int tile = static_cast<int>(blockIdx.x % n_tiles);
  const int64_t bc = blockIdx.x / n_tiles, b = bc / d.Hkv, c = bc % d.Hkv, group = d.H / d.Hkv;
  const int64_t T = d.T, j0 = static_cast<int64_t>(tile) * Bc;
  const int nk = static_cast<int>(T - j0 < Bc ? T - j0 : Bc);
  const MaskRule mask = mask_of(a);
  const S scale = static_cast<S>(a.scale);

  load_rows(Ks, Bc, ldk, a.k, b, j0, nk, T, d.Hkv, c, K, S(1));
  load_rows(Vs, Bc, ldv, a.v, b, j0, nk, T, d.Hkv, c, V, S(1));
  S dk[RM][NC], dv[RM][NC];  // rows: keys ty + 16 i
#pragma unroll
  for (int i = 0; i < RM; ++i)
#pragma unroll
    for (int j = 0; j < NC; ++j) dk[i][j] = dv[i][j] = S(0);
  const int64_t first = mask.first_query(j0), last = mask.last_query(j0 + nk);
  for (int64_t h = c * group; h < (c + 1) * group; ++h)
    for (int64_t i0 = first - first % Br; i0 <= last; i0 += Br) {
      const int nq = static_cast<int>(T - i0 < Br ? T - i0 : Br);
      __syncthreads();  // the previous tile's reads of Qs, dOs, Ps, dSs are done
      load_rows(Qs, Br, ldk, a.q, b, i0, nq, T, d.H, h, K, S(1));
      load_rows(dOs, Br, ldv, g.dout, b, i0, nq, T, d.H, h, V, S(1));
      load_vec(lse_s, Br, g.lse + (b * d.H + h) * T + i0, nq);
      load_vec(D_s, Br, D + (b * d.H + h) * T + i0, nq);
      __syncthreads();
      softmax_grad_tile<S, RM>(mask, scale, i0, j0, Qs, Ks, ldk, K, dOs, Vs, ldv, V, lse_s, D_s,
                               Ps, dSs, ldp, tx, ty);
      __syncthreads();  // Ps, dSs complete
      accumulate_tile<S, RM, NC>(dv, Ps, 1, ldp, dOs, ldv, nq, V, tx, ty);
      accumulate_tile<S, RM, NC>(dk, dSs, 1, ldp, Qs, ldk, nq, K, tx, ty);
    }
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    const int r = ty + kGrid * i;
    if (r >= nk) continue;
    S* dk_row = g.dk + row_offset(b, j0 + r, T, d.Hkv, c, K);
    S* dv_row = g.dv + row_offset(b, j0 + r, T, d.Hkv, c, V);
#pragma unroll
    for (int j = 0; j < NC; ++j) {
      const int col = tx + kGrid * j;
      if (col < K) dk_row[col] = scale * dk[i][j];
      if (col < V) dv_row[col] = dv[i][j];
    }
  }
}

template <class S, int RM, int NC>
__global__ void __launch_bounds__(kAttnThreads)
    attention_bwd_dq_kernel(AttentionArgs<S> a, AttentionGrad<S> g,
                            const S* __restrict__ D,  // [B,H,T] dO . O
                            int n_tiles) {            // query tiles per (b, h)
  constexpr int Br = kGrid * RM, Bc = kGrid * RM, ldp = Bc + 1;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const AttnDims d = a.d;
  const int K = static_cast<int>(d.K), V = static_cast<int>(d.V), ldk = odd_ld(K), ldv = odd_ld(V);
  S* Qs = reinterpret_cast<S*>(smem_raw);  // [Br][ldk]
  S* dOs = Qs + Br * ldk;                  // [Br][ldv]
  S* Ks = dOs + Br * ldv;                  // [Bc][ldk]
  S* Vs = Ks + Bc * ldk;                   // [Bc][ldv]
  S* dSs = Vs + Bc * ldv;                  // [Br][ldp]
  S* lse_s = dSs + Br * ldp;               // [Br]
  S* D_s = lse_s + Br;                     // [Br]
  const int tx = threadIdx.x % kGrid, ty = threadIdx.x / kGrid;
  const int tile = n_tiles - 1 - static_cast<int>(blockIdx.x % n_tiles);
  const int64_t bh = blockIdx.x / n_tiles, b = bh / d.H, h = bh % d.H, c = h / (d.H / d.Hkv);
  const int64_t T = d.T, i0 = static_cast<int64_t>(tile) * Br;
  const int nq = static_cast<int>(T - i0 < Br ? T - i0 : Br);
  const MaskRule mask = mask_of(a);
  const S scale = static_cast<S>(a.scale);

  load_rows(Qs, Br, ldk, a.q, b, i0, nq, T, d.H, h, K, S(1));
  load_rows(dOs, Br, ldv, g.dout, b, i0, nq, T, d.H, h, V, S(1));
  load_vec(lse_s, Br, g.lse + bh * T + i0, nq);
  load_vec(D_s, Br, D + bh * T + i0, nq);
  S dq[RM][NC];
#pragma unroll
  for (int i = 0; i < RM; ++i)
#pragma unroll
    for (int j = 0; j < NC; ++j) dq[i][j] = S(0);
  const int64_t first = mask.first_key(i0), last = mask.last_key(i0 + nq);
  for (int64_t j0 = first - first % Bc; j0 <= last; j0 += Bc) {
    const int nk = static_cast<int>(T - j0 < Bc ? T - j0 : Bc);
    __syncthreads();  // the previous tile's reads of Ks, Vs, dSs are done
    load_rows(Ks, Bc, ldk, a.k, b, j0, nk, T, d.Hkv, c, K, S(1));
    load_rows(Vs, Bc, ldv, a.v, b, j0, nk, T, d.Hkv, c, V, S(1));
    __syncthreads();
    softmax_grad_tile<S, RM>(mask, scale, i0, j0, Qs, Ks, ldk, K, dOs, Vs, ldv, V, lse_s, D_s,
                             static_cast<S*>(nullptr), dSs, ldp, tx, ty);
    __syncthreads();  // dSs complete
    accumulate_tile<S, RM, NC>(dq, dSs, ldp, 1, Ks, ldk, nk, K, tx, ty);
  }
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    const int r = ty + kGrid * i;
    if (r >= nq) continue;
    S* dq_row = g.dq + row_offset(b, i0 + r, T, d.H, h, K);
#pragma unroll
    for (int j = 0; j < NC; ++j) {
      const int col = tx + kGrid * j;
      if (col < K) dq_row[col] = scale * dq[i][j];
    }
  }
}

// ---- launchers

template <class S>
void check_args(const AttentionArgs<S>& a, const char* op) {
  const AttnDims& d = a.d;
  HLA_CHECK(d.B > 0 && d.T > 0 && d.H > 0 && d.Hkv > 0 && d.K > 0 && d.V > 0,
            op << ": B,T,H,Hkv,K,V = " << d.B << "," << d.T << "," << d.H << "," << d.Hkv << ","
               << d.K << "," << d.V);
  HLA_CHECK(d.H % d.Hkv == 0, op << ": H=" << d.H << " must be a multiple of Hkv=" << d.Hkv);
  HLA_CHECK(a.window >= 0, op << ": window=" << a.window);
  HLA_CHECK(a.q && a.k && a.v, op << ": q, k and v are required");
  if (d.K > kMaxHeadDim || d.V > kMaxHeadDim)
    throw Error(op, "head sizes K, V <= " + std::to_string(kMaxHeadDim),
                "K=" + std::to_string(d.K) + ", V=" + std::to_string(d.V),
                "use more heads of a smaller size");
  // blocks are numbered (b, head, tile) in one int32 grid dimension
  HLA_CHECK(d.B * d.H * (d.T / kGrid + 1) < (int64_t(1) << 31),
            op << ": too many (batch, head, tile) blocks: B=" << d.B << ", H=" << d.H
               << ", T=" << d.T);
}

// Calls f(std::integral_constant<int, NC>) for the head-size class of max(K, V).
template <class F>
void visit_head_class(int64_t head_dim, F&& f) {
  if (head_dim <= 4 * kGrid) return f(std::integral_constant<int, 4>{});
  if (head_dim <= 8 * kGrid) return f(std::integral_constant<int, 8>{});
  f(std::integral_constant<int, 16>{});
}

int tiles_of(int64_t T, int tile) { return static_cast<int>((T + tile - 1) / tile); }

template <class S>
Tensor scratch_of(int64_t n) {
  return Tensor::empty({n}, std::is_same_v<S, double> ? DType::f64 : DType::f32, Device::CUDA);
}

}  // namespace

template <class S>
void softmax_attention_tiled_forward(const AttentionArgs<S>& a, const AttentionOut<S>& out) {
  const char* op = "softmax_attention_tiled_forward (cuda)";
  check_args(a, op);
  HLA_CHECK(out.o, op << ": o is required");
  const AttnDims& d = a.d;
  visit_head_class(d.K > d.V ? d.K : d.V, [&](auto nc) {
    constexpr int NC = decltype(nc)::value, RM = rows_per_thread<S, NC>(), tile = kGrid * RM;
    const size_t ldk = odd_ld(static_cast<int>(d.K)), ldv = odd_ld(static_cast<int>(d.V));
    const size_t smem = (2 * tile * ldk + tile * ldv + tile * (tile + 1)) * sizeof(S);
    const int n_tiles = tiles_of(d.T, tile);
    auto* kernel = attention_fwd_kernel<S, RM, NC>;
    allow_shared_memory(kernel, smem, op);
    kernel<<<static_cast<unsigned>(d.B * d.H * n_tiles), kAttnThreads, smem, stream()>>>(
        a, out.o, out.lse, n_tiles);
    CUDA_CHECK(cudaGetLastError());
  });
}

template <class S>
void softmax_attention_tiled_backward(const AttentionArgs<S>& a, const AttentionGrad<S>& g) {
  const char* op = "softmax_attention_tiled_backward (cuda)";
  check_args(a, op);
  HLA_CHECK(g.dout && g.o && g.lse && g.dq && g.dk && g.dv,
            op << ": dout, o, lse, dq, dk and dv are required");
  const AttnDims& d = a.d;
  const Tensor D = scratch_of<S>(d.B * d.H * d.T);
  S* D_ptr = static_cast<S*>(const_cast<void*>(D.raw_data()));
  attention_delta_kernel<S><<<grid_for(d.B * d.H * d.T * 32), kThreads, 0, stream()>>>(
      d, g.dout, g.o, D_ptr);
  CUDA_CHECK(cudaGetLastError());
  visit_head_class(d.K > d.V ? d.K : d.V, [&](auto nc) {
    constexpr int NC = decltype(nc)::value, RM = rows_per_thread<S, NC>(), tile = kGrid * RM;
    const size_t ldk = odd_ld(static_cast<int>(d.K)), ldv = odd_ld(static_cast<int>(d.V));
    const int n_tiles = tiles_of(d.T, tile);

    const size_t smem_dkdv =
        (2 * tile * (ldk + ldv) + 2 * tile * (tile + 1) + 2 * tile) * sizeof(S);
    auto* dkdv = attention_bwd_dkdv_kernel<S, RM, NC>;
    allow_shared_memory(dkdv, smem_dkdv, op);
    dkdv<<<static_cast<unsigned>(d.B * d.Hkv * n_tiles), kAttnThreads, smem_dkdv, stream()>>>(
        a, g, D_ptr, n_tiles);
    CUDA_CHECK(cudaGetLastError());

    const size_t smem_dq = (2 * tile * (ldk + ldv) + tile * (tile + 1) + 2 * tile) * sizeof(S);
    auto* dq = attention_bwd_dq_kernel<S, RM, NC>;
    allow_shared_memory(dq, smem_dq, op);
    dq<<<static_cast<unsigned>(d.B * d.H * n_tiles), kAttnThreads, smem_dq, stream()>>>(
        a, g, D_ptr, n_tiles);
    CUDA_CHECK(cudaGetLastError());
  });
}

template void softmax_attention_tiled_forward<float>(const AttentionArgs<float>&,
                                                     const AttentionOut<float>&);
template void softmax_attention_tiled_forward<double>(const AttentionArgs<double>&,
                                                      const AttentionOut<double>&);
template void softmax_attention_tiled_backward<float>(const AttentionArgs<float>&,
                                                      const AttentionGrad<float>&);
template void softmax_attention_tiled_backward<double>(const AttentionArgs<double>&,
                                                       const AttentionGrad<double>&);

}  // namespace hla::cuda
