// The step-by-step (recurrent) tier of the gated linear family on CUDA: GLA / HGRN2 (PerKey),
// simple GLA (ScalarPerHead), RetNet (FixedPerHead), linear attention (None). Same maths as
// kernels/reference/gated_linear.cpp and kernels/cpu/recurrence/gated_linear_recurrent.cpp:
//   S_t = diag(alpha_t) S_{t-1} + k_t v_t^T,  alpha_t = exp(g_t),  o_t = S_t^T (s q_t)
// Backward, reverse time with dS = dL/dS_t (from dhT or 0):
//   dS += s q_t do_t^T; dq_t = s S_t do_t; dk_t = dS v_t; dv_t = dS^T k_t;
//   dg_t = alpha_t * sum_v (S_{t-1} * dS)  (per key; summed over keys for ScalarPerHead);
//   dS <- diag(alpha_t) dS;  dh0 = dS.
// Layouts (row-major, contiguous, device pointers in the structs of kernels/recurrence.h):
//   q, k [B,T,H,K]  v, o [B,T,H,V]  g [B,T,H] or [B,T,H,K]  h0, hT [B,H,K,V].
// One thread block per (b, h). The state lives in a per-block global scratch (L2-resident) and
// each thread owns the same state elements e = tid + m * blockDim throughout, so the state update
// needs no barrier; the per-step vectors sit in shared memory. The backward pass checkpoints the
// state every kChunk steps, then recomputes each segment's states and walks it in reverse.
// Any K, V (no template instance per head size). dtypes: f32, f64. Outputs are overwritten.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/recurrence_cuda.h"

namespace hla::cuda {

using kernels::GateKind;
using kernels::GatedLinearArgs;
using kernels::GatedLinearGrad;
using kernels::GatedLinearOut;
using kernels::RecDims;

namespace {

constexpr int kRecThreads = 256;

struct Head {
  int64_t b, h, T, H, K, V;
  __device__ int64_t qk(int64_t t) const { return ((b * T + t) * H + h) * K; }
  __device__ int64_t v(int64_t t) const { return ((b * T + t) * H + h) * V; }
  __device__ int64_t gate(int64_t t) const { return (b * T + t) * H + h; }
  __device__ int64_t state() const { return (b * H + h) * K * V; }
};

__device__ inline Head head_of(const RecDims& d) {
  return {static_cast<int64_t>(blockIdx.x) / d.H, static_cast<int64_t>(blockIdx.x) % d.H,
          d.T, d.H, d.K, d.V};
}

// log alpha_t[i] of head h.
template <class S>
__device__ inline S log_decay(const GatedLinearArgs<S>& a, const Head& hd, int64_t t, int64_t i) {
  switch (a.gate) {
    case GateKind::None: return S(0);
    case GateKind::FixedPerHead: return static_cast<S>(log1p(-exp2(-5.0 - static_cast<double>(hd.h))));
    case GateKind::ScalarPerHead: return a.g[hd.gate(t)];
    case GateKind::PerKey: return a.g[hd.qk(t) + i];
  }
  return S(0);
}

// S (thread-owned elements) <- diag(alpha_t) S_prev + k_t v_t^T, read straight from global memory.
template <class S>
__device__ inline void step_owned(const GatedLinearArgs<S>& a, const Head& hd, int64_t t,
                                  const S* prev, S* next) {
  const int64_t KV = hd.K * hd.V;
  for (int64_t e = threadIdx.x; e < KV; e += blockDim.x) {
    const int64_t i = e / hd.V, j = e - i * hd.V;
    next[e] = exp(log_decay(a, hd, t, i)) * prev[e] + a.k[hd.qk(t) + i] * a.v[hd.v(t) + j];
  }
}

// ---- kernels

template <class S>
__global__ void gated_linear_fwd_kernel(GatedLinearArgs<S> a,  // device pointers, see header
                                        S* __restrict__ o,      // [B,T,H,V] overwritten
                                        S* __restrict__ hT,     // [B,H,K,V] overwritten, or null
                                        S* __restrict__ scratch) {  // [B*H, K*V] running state
  extern __shared__ unsigned char smem_raw[];
  S* qs = reinterpret_cast<S*>(smem_raw);  // [K] scale * q_t
  const Head hd = head_of(a.d);
  const int64_t K = hd.K, V = hd.V, KV = K * V;
  S* st = scratch + static_cast<int64_t>(blockIdx.x) * KV;
  for (int64_t e = threadIdx.x; e < KV; e += blockDim.x) st[e] = a.h0 ? a.h0[hd.state() + e] : S(0);
  const S scale = static_cast<S>(a.scale);
  for (int64_t t = 0; t < hd.T; ++t) {
    for (int64_t i = threadIdx.x; i < K; i += blockDim.x) qs[i] = scale * a.q[hd.qk(t) + i];
    step_owned(a, hd, t, st, st);
    __syncthreads();  // qs and every element of S_t written
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
      S acc = S(0);
      for (int64_t i = 0; i < K; ++i) acc += qs[i] * st[i * V + j];
      o[hd.v(t) + j] = acc;
    }
    __syncthreads();  // reads of qs and S_t done before the next step writes them
  }
  if (hT)
    for (int64_t e = threadIdx.x; e < KV; e += blockDim.x) hT[hd.state() + e] = st[e];
}

template <class S>
__global__ void gated_linear_bwd_kernel(GatedLinearArgs<S> a, GatedLinearGrad<S> g,
                                        S* __restrict__ scratch,  // per block: [nck + C + 2, K*V]
                                        int64_t C) {              // checkpoint interval
  extern __shared__ unsigned char smem_raw[];
  const Head hd = head_of(a.d);
  const int64_t K = hd.K, V = hd.V, KV = K * V, T = hd.T, nck = (T + C - 1) / C;
  S* qs = reinterpret_cast<S*>(smem_raw);  // [K] scale * q_t
  S* ks = qs + K;                          // [K]
  S* al = ks + K;                          // [K] alpha_t
  S* dgk = al + K;                         // [K] per-key dg_t
  S* vs = dgk + K;                         // [V]
  S* dos = vs + V;                         // [V] do_t
  S* ck = scratch + static_cast<int64_t>(blockIdx.x) * (nck + C + 2) * KV;  // [nck, KV]
  S* seg = ck + nck * KV;                                                     // [C + 1, KV]
  S* dS = seg + (C + 1) * KV;                                                 // [KV]
  const bool per_key = a.gate == GateKind::PerKey;
  const bool want_dg = per_key || a.gate == GateKind::ScalarPerHead;
  const S scale = static_cast<S>(a.scale);

  // Forward pass: checkpoint S before steps 0, C, 2C, ... (the running state lives in seg[0]).
  for (int64_t e = threadIdx.x; e < KV; e += blockDim.x) {
    seg[e] = a.h0 ? a.h0[hd.state() + e] : S(0);
    dS[e] = g.dhT ? g.dhT[hd.state() + e] : S(0);
  }
  for (int64_t t = 0; t < T; ++t) {
    if (t % C == 0)
      for (int64_t e = threadIdx.x; e < KV; e += blockDim.x) ck[(t / C) * KV + e] = seg[e];
    step_owned(a, hd, t, seg, seg);
  }
  for (int64_t s = nck - 1; s >= 0; --s) {
    const int64_t t0 = s * C, len = min(C, T - t0);
    for (int64_t e = threadIdx.x; e < KV; e += blockDim.x) seg[e] = ck[s * KV + e];
    for (int64_t u = 1; u <= len; ++u) step_owned(a, hd, t0 + u - 1, seg + (u - 1) * KV, seg + u * KV);
    __syncthreads();  // every state of the segment written
    for (int64_t u = len; u >= 1; --u) {
      const int64_t t = t0 + u - 1;
      const S* St = seg + u * KV;
      const S* Sp = seg + (u - 1) * KV;
      for (int64_t i = threadIdx.x; i < K; i += blockDim.x) {
        qs[i] = scale * a.q[hd.qk(t) + i];
        ks[i] = a.k[hd.qk(t) + i];
        al[i] = exp(log_decay(a, hd, t, i));
      }
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        vs[j] = a.v[hd.v(t) + j];
        dos[j] = g.dout[hd.v(t) + j];
      }
      __syncthreads();
      for (int64_t e = threadIdx.x; e < KV; e += blockDim.x) {
        const int64_t i = e / V, j = e - i * V;
        dS[e] += qs[i] * dos[j];
      }
      __syncthreads();
      for (int64_t i = threadIdx.x; i < K; i += blockDim.x) {
        S dq = S(0), dk = S(0), dgi = S(0);
        for (int64_t j = 0; j < V; ++j) {
          dq += St[i * V + j] * dos[j];
          dk += dS[i * V + j] * vs[j];
          dgi += Sp[i * V + j] * dS[i * V + j];
        }
        g.dq[hd.qk(t) + i] = scale * dq;
        g.dk[hd.qk(t) + i] = dk;
        dgk[i] = al[i] * dgi;
        if (per_key) g.dg[hd.qk(t) + i] = dgk[i];
      }
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        S dv = S(0);
        for (int64_t i = 0; i < K; ++i) dv += dS[i * V + j] * ks[i];
        g.dv[hd.v(t) + j] = dv;
      }
      __syncthreads();
      if (want_dg && !per_key && threadIdx.x == 0) {
        S sum = S(0);
        for (int64_t i = 0; i < K; ++i) sum += dgk[i];
        g.dg[hd.gate(t)] = sum;
      }
      for (int64_t e = threadIdx.x; e < KV; e += blockDim.x) dS[e] *= al[e / V];
      __syncthreads();  // shared vectors and dS settled before the next step
    }
  }
  if (g.dh0)
    for (int64_t e = threadIdx.x; e < KV; e += blockDim.x) g.dh0[hd.state() + e] = dS[e];
}

// ---- launchers

template <class S>
void check_args(const GatedLinearArgs<S>& a, const char* op) {
  kernels::check_rec_args(a, op);
  const RecDims& d = a.d;
  HLA_CHECK(d.B * d.H < (int64_t(1) << 31), op << ": too many (batch, head) pairs");
}

template <class S>
Tensor scratch_of(int64_t n) {
  return Tensor::empty({n}, std::is_same_v<S, double> ? DType::f64 : DType::f32, Device::CUDA);
}

}  // namespace

template <class S>
void gated_linear_recurrent_forward(const GatedLinearArgs<S>& a, const GatedLinearOut<S>& out) {
  check_args(a, "gated_linear_recurrent_forward (cuda)");
  HLA_CHECK(out.o, "o is required");
  const RecDims& d = a.d;
  const Tensor scratch = scratch_of<S>(d.B * d.H * d.K * d.V);
  const size_t smem = static_cast<size_t>(d.K) * sizeof(S);
  HLA_CHECK(smem <= 48 * 1024, "gated_linear (cuda): K=" << d.K << " is too large");
  gated_linear_fwd_kernel<S><<<static_cast<unsigned>(d.B * d.H), kRecThreads, smem, stream()>>>(
      a, out.o, out.hT, static_cast<S*>(const_cast<void*>(scratch.raw_data())));
  CUDA_CHECK(cudaGetLastError());
}

template <class S>
void gated_linear_recurrent_backward(const GatedLinearArgs<S>& a, const GatedLinearGrad<S>& g) {
  check_args(a, "gated_linear_recurrent_backward (cuda)");
  HLA_CHECK(g.dout && g.dq && g.dk && g.dv, "dout, dq, dk and dv are required");
  const bool want_dg = a.gate == GateKind::ScalarPerHead || a.gate == GateKind::PerKey;
  HLA_CHECK(!want_dg || g.dg, "dg is required for a gate tensor");
  const RecDims& d = a.d;
  const int64_t C = kernels::kChunk, nck = (d.T + C - 1) / C;
  const Tensor scratch = scratch_of<S>(d.B * d.H * (nck + C + 2) * d.K * d.V);
  const size_t smem = static_cast<size_t>(4 * d.K + 2 * d.V) * sizeof(S);
  HLA_CHECK(smem <= 48 * 1024, "gated_linear (cuda): K=" << d.K << ", V=" << d.V << " too large");
  gated_linear_bwd_kernel<S><<<static_cast<unsigned>(d.B * d.H), kRecThreads, smem, stream()>>>(
      a, g, static_cast<S*>(const_cast<void*>(scratch.raw_data())), C);
  CUDA_CHECK(cudaGetLastError());
}

template void gated_linear_recurrent_forward<float>(const GatedLinearArgs<float>&,
                                                    const GatedLinearOut<float>&);
template void gated_linear_recurrent_forward<double>(const GatedLinearArgs<double>&,
                                                     const GatedLinearOut<double>&);
template void gated_linear_recurrent_backward<float>(const GatedLinearArgs<float>&,
                                                     const GatedLinearGrad<float>&);
template void gated_linear_recurrent_backward<double>(const GatedLinearArgs<double>&,
                                                      const GatedLinearGrad<double>&);

}  // namespace hla::cuda
