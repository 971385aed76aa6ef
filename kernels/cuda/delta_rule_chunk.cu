// The chunked tier of DeltaNet / Gated DeltaNet on CUDA: the UT-transform algorithm of
// kernels/cpu/recurrence/delta_rule_chunk.cpp (whose header derives every equation), chunk size
// C = kernels::kChunk = 64, any T (partial last chunk). Layouts (row-major, contiguous, device
// pointers in the structs of kernels/recurrence.h):
//   q, k [B,T,H,K]  v, o [B,T,H,V]  beta, g [B,T,H]  h0, hT [B,H,K,V].
//
// Forward, per chunk of n <= C rows (Q, K, V, beta, g its rows; S the incoming state [K,V]):
//   Gam_r = sum_{i<=r} g_i (chunk-local; 0 for DeltaNet);  gam = exp(Gam);  lam = exp(Gam_n - Gam)
//   M_ij = exp(Gam_i - Gam_j) for i >= j, else 0;  A = K K^T;  L = tril_{-1}(diag(beta)(A o M))
//   Rs = V - diag(gam) K S;   Vn = (I + L)^{-1} diag(beta) Rs   (forward substitution)
//   O  = s [diag(gam) Q S + P Vn],  P = (Q K^T) o M;   S <- gam_n S + (diag(lam) K)^T Vn
// Backward, chunk by chunk in reverse, dS the gradient of the outgoing state:
//   dP = s (dO Vn^T) o M;  dVn = s P^T dO + diag(lam) K dS;  dY = (I + L)^{-T} dVn (back subst.)
//   dq = s diag(gam) dO S^T + dP K;  dv = dRs = diag(beta) dY;  D = -tril_{-1}(dY Vn^T) o M
//   dk = dP^T Q + diag(lam) Vn dS^T - diag(gam) dRs S^T + (diag(beta) D + (diag(beta) D)^T) K
//   dbeta = rowsum(dY o Rs) + rowsum(D o A)
//   dS <- gam_n dS + s (diag(gam) Q)^T dO - (diag(gam) K)^T dRs
//   dg_l = sum_{i >= l} (e0_i + sum_{j < l} E_ij), E / e0 the gradients of the decay factors
//   times the factors: E = dP o QK + diag(beta) (D o A) (+ dlam on row n-1), e0 = rowsum of
//   (Q o dQ_S) + (K o dK_Rs) (+ gam_n <S, dS> on row n-1); then the L2-norm backward.
// Every decay factor is exp of a difference of chunk-local log sums (<= 0 exponents).
//
// One thread block per (b, h) (1024 threads forward, 512 backward) walks the chunks in order
// (reverse for the backward). A chunk's matrices live in one block workspace (struct Layout):
// shared memory when it fits the device's opt-in limit (227 KiB on H100 / H200: f32 forward up
// to K = V = 128, f32 backward up to K = V = 64, f64 for small heads), otherwise a per-block
// global scratch (L2-resident) with the same layout. Rows of the [C,K] / [C,V] buffers are
// padded to K + 1 / V + 1 entries so that a warp reading one entry of 32 different rows hits 32
// different banks. Products are computed one output entry per thread and block-strided loop
// (one warp per entry, lanes over the reduced index, where the operand is the global state);
// the triangular solves run one thread per value column (a column's substitution does not
// depend on the others). The backward first re-walks the forward, storing each chunk's incoming
// state in a global scratch [B*H, chunks, K, V], then recomputes each chunk's factors from its
// state. Any K, V (K*V < 2^31). dtypes: f32, f64. Outputs are overwritten.
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/recurrence_cuda.h"

namespace hla::cuda {

using kernels::DeltaRuleArgs;
using kernels::DeltaRuleGrad;
using kernels::DeltaRuleOut;
using kernels::RecDims;

namespace {

// Threads per block: every loop strides over the block, so more warps only hide more latency
// (one block per head leaves most of each SM idle); bounded by the registers of the kernels.
constexpr int kFwdThreads = 1024;
constexpr int kBwdThreads = 512;
constexpr int C = static_cast<int>(kernels::kChunk);  // rows of a full chunk
constexpr int kReduceSlots = 32;                      // shared scratch of block_reduce

// Offsets (in elements) of the buffers of one block's workspace; every buffer is sized for a
// full chunk. The forward uses the first group and the state; the backward all but the state
// (its states live in a separate scratch) and adds its gradient buffers.
struct Layout {
  int K = 0, V = 0;
  int lk = 0, lv = 0;  // row strides K + 1, V + 1: rows start in different shared-memory banks
  bool backward = false;
  int64_t q = 0, k = 0, rs = 0, vn = 0, L = 0, P = 0;  // [C,lk] [C,lk] [C,lv] [C,lv] [C,C] [C,C]
  int64_t beta = 0, Gam = 0, gam = 0, lam = 0, rq = 0, rk = 0;  // [C] each
  int64_t S = 0;                                                // forward: [K,V] running state
  int64_t A = 0, QK = 0, dPE = 0;                               // backward: [C,C] each
  int64_t dq = 0, dk = 0, dy = 0, dS = 0;  // backward: [C,lk] [C,lk] [C,lv] [K,lv]
  int64_t e0 = 0, dlam = 0, dbeta = 0;     // backward: [C] each
  int64_t red = 0;                         // [kReduceSlots]
  int64_t total = 0;

  Layout(int K_, int V_, bool backward_)
      : K(K_), V(V_), lk(K_ + 1), lv(V_ + 1), backward(backward_) {
    int64_t at = 0;
    auto take = [&](int64_t n) {
      const int64_t o = at;
      at += n;
      return o;
    };
    q = take(int64_t(C) * lk);
    k = take(int64_t(C) * lk);
    rs = take(int64_t(C) * lv);
    vn = take(int64_t(C) * lv);
    L = take(int64_t(C) * C);
    P = take(int64_t(C) * C);
    beta = take(C);
    Gam = take(C);
    gam = take(C);
    lam = take(C);
    rq = take(C);
    rk = take(C);
    if (!backward) {
      S = take(int64_t(K) * V);
    } else {
      A = take(int64_t(C) * C);
      QK = take(int64_t(C) * C);
      dPE = take(int64_t(C) * C);
      dq = take(int64_t(C) * lk);
      dk = take(int64_t(C) * lk);
      dy = take(int64_t(C) * lv);
      dS = take(int64_t(K) * lv);
      e0 = take(C);
      dlam = take(C);
      dbeta = take(C);
    }
    red = take(kReduceSlots);
    total = at;
  }
};

// Pointers into one block's workspace (see Layout); null where the pass has no such buffer.
template <class S>
struct Work {
  S *q, *k, *rs, *vn, *L, *P, *beta, *Gam, *gam, *lam, *rq, *rk, *S_, *A, *QK, *dPE;
  S *dq, *dk, *dy, *dS, *e0, *dlam, *dbeta, *red;
  int lk, lv;  // row strides of q, k, dq, dk and of rs, vn, dy, dS
};

template <class S>
__device__ Work<S> bind(const Layout& l, S* base) {
  Work<S> w;
  w.q = base + l.q;
  w.k = base + l.k;
  w.rs = base + l.rs;
  w.vn = base + l.vn;
  w.L = base + l.L;
  w.P = base + l.P;
  w.beta = base + l.beta;
  w.Gam = base + l.Gam;
  w.gam = base + l.gam;
  w.lam = base + l.lam;
  w.rq = base + l.rq;
  w.rk = base + l.rk;
  w.S_ = l.backward ? nullptr : base + l.S;
  w.A = l.backward ? base + l.A : nullptr;
  w.QK = l.backward ? base + l.QK : nullptr;
  w.dPE = l.backward ? base + l.dPE : nullptr;
  w.dq = l.backward ? base + l.dq : nullptr;
  w.dk = l.backward ? base + l.dk : nullptr;
  w.dy = l.backward ? base + l.dy : nullptr;
  w.dS = l.backward ? base + l.dS : nullptr;
  w.e0 = l.backward ? base + l.e0 : nullptr;
  w.dlam = l.backward ? base + l.dlam : nullptr;
  w.dbeta = l.backward ? base + l.dbeta : nullptr;
  w.red = base + l.red;
  w.lk = l.lk;
  w.lv = l.lv;
  return w;
}

// Head (b, h) of this block: row indices into [B,T,H] tensors and the offset of its state.
struct Head {
  int64_t b, h, T, H;
  int K, V;
  __device__ int64_t row(int64_t t) const { return (b * T + t) * H + h; }  // into [B,T,H]
  __device__ int64_t state() const { return (b * H + h) * K * V; }
};

__device__ inline Head head_of(const RecDims& d) {
  return {static_cast<int64_t>(blockIdx.x) / d.H,
          static_cast<int64_t>(blockIdx.x) % d.H,
          d.T,
          d.H,
          static_cast<int>(d.K),
          static_cast<int>(d.V)};
}

// M_rl = exp(Gam_r - Gam_l) for r >= l, else 0 (1 / 0 without a gate).
template <class S>
__device__ inline S decay(const S* Gam, bool gated, int r, int l) {
  if (r < l) return S(0);
  return gated ? exp(Gam[r] - Gam[l]) : S(1);
}

// Loads the chunk [t0, t0 + n) of head hd: q, k (L2-normalised when asked, rq / rk the
// factors), v into rs, beta, the decays Gam, gam, lam, and L, P (plus A, QK when the workspace
// has them). Ends with a barrier.
template <class S>
__device__ void load_chunk(const DeltaRuleArgs<S>& a, const Head& hd, int64_t t0, int n,
                           const Work<S>& w) {
  const int K = hd.K, V = hd.V, tid = threadIdx.x, nt = blockDim.x, lk = w.lk, lv = w.lv;
  for (int e = tid; e < n * K; e += nt) {
    const int r = e / K, i = e - r * K;
    w.q[r * lk + i] = a.q[hd.row(t0 + r) * K + i];
    w.k[r * lk + i] = a.k[hd.row(t0 + r) * K + i];
  }
  for (int e = tid; e < n * V; e += nt) {
    const int r = e / V, j = e - r * V;
    w.rs[r * lv + j] = a.v[hd.row(t0 + r) * V + j];
  }
  if (tid == 0) {  // chunk-local cumulative log decay: a short serial scan
    S acc = S(0);
    for (int r = 0; r < n; ++r) {
      if (a.g) acc += a.g[hd.row(t0 + r)];
      w.Gam[r] = acc;
    }
  }
  __syncthreads();
  for (int r = tid; r < n; r += nt) {
    w.beta[r] = a.beta[hd.row(t0 + r)];
    w.gam[r] = exp(w.Gam[r]);
    w.lam[r] = exp(w.Gam[n - 1] - w.Gam[r]);
    S rq = S(1), rk = S(1);
    if (a.l2norm_qk) {  // one thread per row
      S sq = S(0), sk = S(0);
      for (int i = 0; i < K; ++i) {
        sq += w.q[r * lk + i] * w.q[r * lk + i];
        sk += w.k[r * lk + i] * w.k[r * lk + i];
      }
      rq = S(1) / sqrt(sq + S(kernels::kL2Eps));
      rk = S(1) / sqrt(sk + S(kernels::kL2Eps));
      for (int i = 0; i < K; ++i) {
        w.q[r * lk + i] *= rq;
        w.k[r * lk + i] *= rk;
      }
    }
    w.rq[r] = rq;
    w.rk[r] = rk;
  }
  __syncthreads();
  for (int e = tid; e < n * n; e += nt) {
    const int r = e / n, l = e - r * n;
    S qk = S(0), kk = S(0);
    for (int i = 0; i < K; ++i) {
      qk += w.q[r * lk + i] * w.k[l * lk + i];
      kk += w.k[r * lk + i] * w.k[l * lk + i];
    }
    const S m = decay(w.Gam, a.g != nullptr, r, l);
    w.P[r * C + l] = qk * m;
    w.L[r * C + l] = r > l ? w.beta[r] * (kk * m) : S(0);
    if (w.A) w.A[r * C + l] = kk;
    if (w.QK) w.QK[r * C + l] = qk;
  }
  __syncthreads();
}

// Rs = V - diag(gam) K S (in place of v), then Vn = (I + L)^{-1} diag(beta) Rs. Ends with a
// barrier.
template <class S>
__device__ void corrected_values(const Head& hd, int n, const S* St, const Work<S>& w) {
  const int K = hd.K, V = hd.V, tid = threadIdx.x, nt = blockDim.x, lk = w.lk, lv = w.lv;
  for (int e = tid; e < n * V; e += nt) {
    const int r = e / V, j = e - r * V;
    S ks = S(0);
    for (int i = 0; i < K; ++i) ks += w.k[r * lk + i] * St[i * V + j];
    w.rs[r * lv + j] -= w.gam[r] * ks;
  }
  __syncthreads();
  for (int j = tid; j < V; j += nt)  // one column per thread: forward substitution
    for (int r = 0; r < n; ++r) {
      S acc = w.beta[r] * w.rs[r * lv + j];
      for (int l = 0; l < r; ++l) acc -= w.L[r * C + l] * w.vn[l * lv + j];
      w.vn[r * lv + j] = acc;
    }
  __syncthreads();
}

// S_out = gam_n S_in + (diag(lam) K)^T Vn, entry by entry (S_out may equal S_in). Ends with a
// barrier.
template <class S>
__device__ void next_state(const Head& hd, int n, const S* S_in, S* S_out, const Work<S>& w) {
  const int K = hd.K, V = hd.V, lk = w.lk, lv = w.lv;
  for (int e = threadIdx.x; e < K * V; e += blockDim.x) {
    const int i = e / V, j = e - i * V;
    S acc = S(0);
    for (int r = 0; r < n; ++r) acc += (w.lam[r] * w.k[r * lk + i]) * w.vn[r * lv + j];
    S_out[e] = w.gam[n - 1] * S_in[e] + acc;
  }
  __syncthreads();
}

// ---- kernels

template <class S>
__global__ void __launch_bounds__(kFwdThreads)
    delta_chunk_fwd_kernel(DeltaRuleArgs<S> a,  // device pointers, see header
                           S* __restrict__ o,   // [B,T,H,V] overwritten
                           S* __restrict__ hT,  // [B,H,K,V] overwritten, or null
                           Layout lay,
                           S* __restrict__ scratch) {  // [B*H, lay.total] or null
  extern __shared__ __align__(16) unsigned char smem_raw[];
  S* base = scratch ? scratch + static_cast<int64_t>(blockIdx.x) * lay.total
                    : reinterpret_cast<S*>(smem_raw);
  const Work<S> w = bind(lay, base);
  const Head hd = head_of(a.d);
  const int K = hd.K, V = hd.V, lk = w.lk, lv = w.lv;
  const S scale = static_cast<S>(a.scale);
  for (int e = threadIdx.x; e < K * V; e += blockDim.x)
    w.S_[e] = a.h0 ? a.h0[hd.state() + e] : S(0);  // published by load_chunk's barriers
  for (int64_t t0 = 0; t0 < hd.T; t0 += C) {
    const int n = static_cast<int>(min(int64_t(C), hd.T - t0));
    load_chunk(a, hd, t0, n, w);
    corrected_values(hd, n, w.S_, w);
    for (int e = threadIdx.x; e < n * V; e += blockDim.x) {
      const int r = e / V, j = e - r * V;
      S qs = S(0), pv = S(0);
      for (int i = 0; i < K; ++i) qs += w.q[r * lk + i] * w.S_[i * V + j];
      for (int l = 0; l <= r; ++l) pv += w.P[r * C + l] * w.vn[l * lv + j];
      o[hd.row(t0 + r) * V + j] = scale * (w.gam[r] * qs + pv);
    }
    __syncthreads();  // the state is read before it is updated in place
    next_state(hd, n, w.S_, w.S_, w);
  }
  if (hT)
    for (int e = threadIdx.x; e < K * V; e += blockDim.x) hT[hd.state() + e] = w.S_[e];
}

template <class S>
__global__ void __launch_bounds__(kBwdThreads)
    delta_chunk_bwd_kernel(DeltaRuleArgs<S> a, DeltaRuleGrad<S> g, Layout lay,
                           S* __restrict__ scratch,   // [B*H, lay.total] or null
                           S* __restrict__ states) {  // [B*H, chunks, K*V]
  extern __shared__ __align__(16) unsigned char smem_raw[];
  S* base = scratch ? scratch + static_cast<int64_t>(blockIdx.x) * lay.total
                    : reinterpret_cast<S*>(smem_raw);
  const Work<S> w = bind(lay, base);
  const Head hd = head_of(a.d);
  const int K = hd.K, V = hd.V, tid = threadIdx.x, nt = blockDim.x, lk = w.lk, lv = w.lv;
  const int lane = tid & 31, warp = tid >> 5, n_warps = nt >> 5;
  const int64_t KV = int64_t(K) * V, n_chunks = (hd.T + C - 1) / C;
  const S s = static_cast<S>(a.scale);
  const bool gated = a.g != nullptr;
  S* st = states + static_cast<int64_t>(blockIdx.x) * n_chunks * KV;

  // Forward re-walk: st[c] = incoming state of chunk c.
  for (int e = tid; e < KV; e += nt) {
    const int i = static_cast<int>(e / V), j = static_cast<int>(e - int64_t(i) * V);
    st[e] = a.h0 ? a.h0[hd.state() + e] : S(0);
    w.dS[i * lv + j] = g.dhT ? g.dhT[hd.state() + e] : S(0);
  }
  for (int64_t c = 0; c + 1 < n_chunks; ++c) {
    load_chunk(a, hd, c * C, C, w);  // every chunk but the last is full
    corrected_values(hd, C, st + c * KV, w);
    next_state(hd, C, st + c * KV, st + (c + 1) * KV, w);
  }

  for (int64_t c = n_chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * C;
    const int n = static_cast<int>(min(int64_t(C), hd.T - t0));
    const S* Sc = st + c * KV;  // incoming state
    const S* dO = g.dout;       // row r, column j at dO[hd.row(t0 + r) * V + j]
    load_chunk(a, hd, t0, n, w);
    corrected_values(hd, n, Sc, w);

    // dq = s diag(gam) dO S^T;  dP = s (dO Vn^T) o M;  dVn = s P^T dO + diag(lam) K dS;
    // dk = diag(lam) Vn dS^T;  <S, dS> for the gate of the state carry.
    for (int e = warp; e < n * K; e += n_warps) {  // one warp per entry: coalesced state rows
      const int r = e / K, i = e - r * K;
      S acc = S(0);
      for (int j = lane; j < V; j += 32) acc += dO[hd.row(t0 + r) * V + j] * Sc[i * V + j];
      acc = warp_reduce(acc, SumOp{});
      if (lane == 0) w.dq[r * lk + i] = (s * w.gam[r]) * acc;
    }
    for (int e = tid; e < n * n; e += nt) {
      const int r = e / n, l = e - r * n;
      S acc = S(0);
      if (r >= l)
        for (int j = 0; j < V; ++j) acc += dO[hd.row(t0 + r) * V + j] * w.vn[l * lv + j];
      w.dPE[r * C + l] = (s * acc) * decay(w.Gam, gated, r, l);
    }
    for (int e = tid; e < n * V; e += nt) {
      const int l = e / V, j = e - l * V;
      S po = S(0), kd = S(0);
      for (int r = l; r < n; ++r) po += w.P[r * C + l] * dO[hd.row(t0 + r) * V + j];
      for (int i = 0; i < K; ++i) kd += w.k[l * lk + i] * w.dS[i * lv + j];
      w.dy[l * lv + j] = s * po + w.lam[l] * kd;
    }
    for (int e = tid; e < n * K; e += nt) {
      const int l = e / K, i = e - l * K;
      S acc = S(0);
      for (int j = 0; j < V; ++j) acc += w.vn[l * lv + j] * w.dS[i * lv + j];
      w.dk[l * lk + i] = w.lam[l] * acc;
    }
    S sds = S(0);
    if (gated) {
      for (int e = tid; e < KV; e += nt) {
        const int i = static_cast<int>(e / V), j = static_cast<int>(e - int64_t(i) * V);
        sds += Sc[e] * w.dS[i * lv + j];
      }
      sds = block_reduce(sds, SumOp{}, S(0), w.red);
    }
    __syncthreads();

    // Gate factors so far: e0 = rowsum(Q o dQ_S) (+ gam_n <S, dS> on the last row);
    // dlam = rowsum(K o dK_lam) (lam_{n-1} = 1 has no gate dependence).
    if (gated)
      for (int r = tid; r < n; r += nt) {
        S eq = S(0), el = S(0);
        for (int i = 0; i < K; ++i) {
          eq += w.q[r * lk + i] * w.dq[r * lk + i];
          el += w.k[r * lk + i] * w.dk[r * lk + i];
        }
        w.e0[r] = eq + (r == n - 1 ? w.gam[n - 1] * sds : S(0));
        w.dlam[r] = el;
      }
    __syncthreads();

    // dq += dP K;  dk += dP^T Q.
    for (int e = tid; e < n * K; e += nt) {
      const int r = e / K, i = e - r * K;
      S pk = S(0), pq = S(0);
      for (int l = 0; l <= r; ++l) pk += w.dPE[r * C + l] * w.k[l * lk + i];
      for (int l = r; l < n; ++l) pq += w.dPE[l * C + r] * w.q[l * lk + i];
      w.dq[r * lk + i] += pk;
      w.dk[r * lk + i] += pq;
    }
    __syncthreads();

    // E = dP o QK (+ dlam on the last row), strictly lower, in place of dP;
    // dY = (I + L)^{-T} dVn, one column per thread (back substitution).
    if (gated)
      for (int e = tid; e < n * n; e += nt) {
        const int r = e / n, l = e - r * n;
        w.dPE[r * C + l] =
            r > l ? w.dPE[r * C + l] * w.QK[r * C + l] + (r == n - 1 ? w.dlam[l] : S(0)) : S(0);
      }
    for (int j = tid; j < V; j += nt)
      for (int r = n - 2; r >= 0; --r) {
        S acc = w.dy[r * lv + j];
        for (int l = r + 1; l < n; ++l) acc -= w.L[l * C + r] * w.dy[l * lv + j];
        w.dy[r * lv + j] = acc;
      }
    __syncthreads();

    // dv = dRs = diag(beta) dY;  dbeta = rowsum(dY o Rs);  D = -tril_{-1}(dY Vn^T) o M in
    // place of L;  dk -= diag(gam) dRs S^T;  e0 += rowsum(K o (-diag(gam) dRs S^T));
    // dS <- gam_n dS + s (diag(gam) Q)^T dO - (diag(gam) K)^T dRs.
    for (int e = tid; e < n * V; e += nt) {
      const int r = e / V, j = e - r * V;
      g.dv[hd.row(t0 + r) * V + j] = w.beta[r] * w.dy[r * lv + j];
    }
    for (int r = tid; r < n; r += nt) {
      S acc = S(0);
      for (int j = 0; j < V; ++j) acc += w.dy[r * lv + j] * w.rs[r * lv + j];
      w.dbeta[r] = acc;
    }
    for (int e = tid; e < n * n; e += nt) {
      const int r = e / n, l = e - r * n;
      S acc = S(0);
      if (r > l)
        for (int j = 0; j < V; ++j) acc += w.dy[r * lv + j] * w.vn[l * lv + j];
      w.L[r * C + l] = r > l ? -acc * decay(w.Gam, gated, r, l) : S(0);
    }
    for (int e = warp; e < n * K; e += n_warps) {  // one warp per entry: coalesced state rows
      const int r = e / K, i = e - r * K;
      S acc = S(0);
      for (int j = lane; j < V; j += 32) acc += (w.beta[r] * w.dy[r * lv + j]) * Sc[i * V + j];
      acc = warp_reduce(acc, SumOp{});
      if (lane == 0) w.dk[r * lk + i] += -w.gam[r] * acc;
    }
    if (gated) {  // one warp per row: e0_r -= gam_r sum_j dRs_rj (K S)_rj
      for (int r = warp; r < n; r += n_warps) {
        S acc = S(0);
        for (int j = lane; j < V; j += 32) {
          S ks = S(0);
          for (int i = 0; i < K; ++i) ks += w.k[r * lk + i] * Sc[i * V + j];
          acc += (w.beta[r] * w.dy[r * lv + j]) * ks;
        }
        acc = warp_reduce(acc, SumOp{});
        if (lane == 0) w.e0[r] -= w.gam[r] * acc;
      }
    }
    for (int e = tid; e < KV; e += nt) {
      const int i = e / V, j = e - i * V;
      S acc = S(0);
      for (int r = 0; r < n; ++r)
        acc += (s * w.gam[r] * w.q[r * lk + i]) * dO[hd.row(t0 + r) * V + j] -
               (w.gam[r] * w.k[r * lk + i]) * (w.beta[r] * w.dy[r * lv + j]);
      w.dS[i * lv + j] = w.gam[n - 1] * w.dS[i * lv + j] + acc;
    }
    __syncthreads();

    // L = tril_{-1}(diag(beta) (A o M)):  dbeta += rowsum(D o A);  E += diag(beta) (D o A);
    // dk += (diag(beta) D + (diag(beta) D)^T) K.
    for (int r = tid; r < n; r += nt) {
      S acc = S(0);
      for (int l = 0; l < r; ++l) acc += w.L[r * C + l] * w.A[r * C + l];
      w.dbeta[r] += acc;
    }
    if (gated)
      for (int e = tid; e < n * n; e += nt) {
        const int r = e / n, l = e - r * n;
        if (r > l) w.dPE[r * C + l] += w.beta[r] * (w.L[r * C + l] * w.A[r * C + l]);
      }
    for (int e = tid; e < n * K; e += nt) {
      const int r = e / K, i = e - r * K;
      S acc = S(0);
      for (int l = 0; l < r; ++l) acc += (w.beta[r] * w.L[r * C + l]) * w.k[l * lk + i];
      for (int l = r + 1; l < n; ++l) acc += (w.beta[l] * w.L[l * C + r]) * w.k[l * lk + i];
      w.dk[r * lk + i] += acc;
    }
    __syncthreads();

    // dg_l = sum_{i >= l} (e0_i + sum_{j < l} E_ij): only factors spanning step l.
    // Then the L2-norm backward of q and k, one thread per row, and the row outputs.
    if (gated)
      for (int l = tid; l < n; l += nt) {
        S acc = S(0);
        for (int i = l; i < n; ++i) {
          S span = S(0);
          for (int j = 0; j < l; ++j) span += w.dPE[i * C + j];
          acc += w.e0[i] + span;
        }
        g.dg[hd.row(t0 + l)] = acc;
      }
    for (int r = tid; r < n; r += nt) {
      S pq = S(0), pk = S(0);
      if (a.l2norm_qk)
        for (int i = 0; i < K; ++i) {
          pq += w.q[r * lk + i] * w.dq[r * lk + i];
          pk += w.k[r * lk + i] * w.dk[r * lk + i];
        }
      for (int i = 0; i < K; ++i) {
        g.dq[hd.row(t0 + r) * K + i] = w.rq[r] * (w.dq[r * lk + i] - pq * w.q[r * lk + i]);
        g.dk[hd.row(t0 + r) * K + i] = w.rk[r] * (w.dk[r * lk + i] - pk * w.k[r * lk + i]);
      }
      g.dbeta[hd.row(t0 + r)] = w.dbeta[r];
    }
    __syncthreads();  // the workspace is read before the next chunk rewrites it
  }
  if (g.dh0)
    for (int e = tid; e < KV; e += nt) {
      const int i = static_cast<int>(e / V), j = static_cast<int>(e - int64_t(i) * V);
      g.dh0[hd.state() + e] = w.dS[i * lv + j];
    }
}

// ---- launchers

template <class S>
void check_args(const DeltaRuleArgs<S>& a, const char* op) {
  const RecDims& d = a.d;
  HLA_CHECK(d.B > 0 && d.T > 0 && d.H > 0 && d.K > 0 && d.V > 0,
            op << ": B,T,H,K,V = " << d.B << "," << d.T << "," << d.H << "," << d.K << "," << d.V);
  HLA_CHECK(a.q && a.k && a.v && a.beta, op << ": q, k, v and beta are required");
  if (d.B * d.H >= (int64_t(1) << 31))
    throw Error(op, "B*H < 2^31 (one thread block per batch and head)", std::to_string(d.B * d.H),
                "split the batch");
  if (d.K * d.V >= (int64_t(1) << 31) || d.K * C >= (int64_t(1) << 31) ||
      d.V * C >= (int64_t(1) << 31))
    throw Error(op, "K*V < 2^31 (32-bit indices within one head)",
                "K=" + std::to_string(d.K) + ", V=" + std::to_string(d.V), "use smaller heads");
}

template <class S>
Tensor scratch_of(int64_t n) {
  return Tensor::empty({n}, std::is_same_v<S, double> ? DType::f64 : DType::f32, Device::CUDA);
}

// The block workspace in shared memory when it fits (bytes > 48 KiB need the opt-in), else a
// global scratch [B*H, lay.total]; returns that scratch (undefined for shared memory).
template <class S, class Kernel>
Tensor place_workspace(Kernel kernel, const Layout& lay, const RecDims& d, size_t& smem) {
  const size_t bytes = static_cast<size_t>(lay.total) * sizeof(S);
  if (bytes <= shared_memory_limit()) {
    allow_shared_memory(kernel, bytes, "delta_rule_chunk (cuda)");
    smem = bytes;
    return Tensor();
  }
  smem = 0;
  return scratch_of<S>(d.B * d.H * lay.total);
}

template <class S>
S* ptr_or_null(Tensor& t) {
  return t.defined() ? static_cast<S*>(t.raw_data()) : nullptr;
}

}  // namespace

template <class S>
void delta_rule_chunk_forward(const DeltaRuleArgs<S>& a, const DeltaRuleOut<S>& out) {
  check_args(a, "delta_rule_chunk_forward (cuda)");
  HLA_CHECK(out.o, "o is required");
  const RecDims& d = a.d;
  const Layout lay(static_cast<int>(d.K), static_cast<int>(d.V), false);
  size_t smem = 0;
  Tensor scratch = place_workspace<S>(delta_chunk_fwd_kernel<S>, lay, d, smem);
  delta_chunk_fwd_kernel<S><<<static_cast<unsigned>(d.B * d.H), kFwdThreads, smem, stream()>>>(
      a, out.o, out.hT, lay, ptr_or_null<S>(scratch));
  CUDA_CHECK(cudaGetLastError());
}

template <class S>
void delta_rule_chunk_backward(const DeltaRuleArgs<S>& a, const DeltaRuleGrad<S>& g) {
  check_args(a, "delta_rule_chunk_backward (cuda)");
  HLA_CHECK(g.dout && g.dq && g.dk && g.dv && g.dbeta, "dout, dq, dk, dv and dbeta are required");
  HLA_CHECK(!a.g || g.dg, "dg is required when g is given");
  const RecDims& d = a.d;
  const Layout lay(static_cast<int>(d.K), static_cast<int>(d.V), true);
  size_t smem = 0;
  Tensor scratch = place_workspace<S>(delta_chunk_bwd_kernel<S>, lay, d, smem);
  const int64_t n_chunks = (d.T + C - 1) / C;
  Tensor states = scratch_of<S>(d.B * d.H * n_chunks * d.K * d.V);
  delta_chunk_bwd_kernel<S><<<static_cast<unsigned>(d.B * d.H), kBwdThreads, smem, stream()>>>(
      a, g, lay, ptr_or_null<S>(scratch), static_cast<S*>(states.raw_data()));
  CUDA_CHECK(cudaGetLastError());
}

template void delta_rule_chunk_forward<float>(const DeltaRuleArgs<float>&,
                                              const DeltaRuleOut<float>&);
template void delta_rule_chunk_forward<double>(const DeltaRuleArgs<double>&,
                                               const DeltaRuleOut<double>&);
template void delta_rule_chunk_backward<float>(const DeltaRuleArgs<float>&,
                                               const DeltaRuleGrad<float>&);
template void delta_rule_chunk_backward<double>(const DeltaRuleArgs<double>&,
                                                const DeltaRuleGrad<double>&);

}  // namespace hla::cuda
