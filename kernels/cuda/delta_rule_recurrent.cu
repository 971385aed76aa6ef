// The step-by-step (recurrent) tier of DeltaNet / Gated DeltaNet on CUDA. Same maths as
// kernels/reference/delta_rule.cpp and kernels/cpu/recurrence/delta_rule_recurrent.cpp:
//   S' = alpha_t S_{t-1},  alpha_t = exp(g_t) (1 without g)
//   e_t = v_t - S'^T k_t;  S_t = S' + beta_t k_t e_t^T;  o_t = S_t^T (s q_t)
// With l2norm_qk, q_t and k_t are first replaced by x / sqrt(|x|^2 + kL2Eps) (spec 0.5).
// Backward, reverse time with dS = dL/dS_t (from dhT or 0):
//   dS += s q_t do_t^T;  dq_t = s S_t do_t;  dv_t = beta_t dS^T k_t;  dbeta_t = <dS^T k_t, e_t>
//   dk_t = beta_t dS e_t - alpha_t S_{t-1} dv_t;  dS' = dS - k_t dv_t^T
//   dg_t = alpha_t <S_{t-1}, dS'>;  dS <- alpha_t dS';  dh0 = dS
//   then the L2-norm backward dx = r (dxhat - xhat <xhat, dxhat>) for q and k.
// Layouts (row-major, contiguous, device pointers in the structs of kernels/recurrence.h):
//   q, k [B,T,H,K]  v, o [B,T,H,V]  beta, g [B,T,H]  h0, hT [B,H,K,V].
//
// One thread block per (b, h). Thread j owns the state columns S[:, j'] with j' = j mod
// blockDim for the whole walk, so the column-wise work of a step (prediction error, state
// update, read-out) needs no barrier on the state; the per-step vectors sit in shared memory.
// The forward keeps the state in shared memory when it fits (K V entries), else in a per-block
// global scratch. The backward checkpoints the state every kChunk steps in a global scratch,
// then recomputes each segment's kChunk + 1 states and walks it in reverse; the row-wise
// reductions (dq, dk) read the states row by row after a barrier.
// Any K, V (shared memory holds O(K + V) vectors). dtypes: f32, f64. Outputs are overwritten.
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/recurrence_cuda.h"

namespace hla::cuda {

using kernels::DeltaRuleArgs;
using kernels::DeltaRuleGrad;
using kernels::DeltaRuleOut;
using kernels::RecDims;

namespace {

constexpr int kRecThreads = 128;  // one thread per state column at V <= 128
constexpr int kReduceSlots = 32;  // shared scratch of block_reduce

struct Head {
  int64_t b, h, T, H, K, V;
  __device__ int64_t row(int64_t t) const { return (b * T + t) * H + h; }  // into [B,T,H]
  __device__ int64_t qk(int64_t t) const { return row(t) * K; }
  __device__ int64_t v(int64_t t) const { return row(t) * V; }
  __device__ int64_t state() const { return (b * H + h) * K * V; }
};

__device__ inline Head head_of(const RecDims& d) {
  return {static_cast<int64_t>(blockIdx.x) / d.H,
          static_cast<int64_t>(blockIdx.x) % d.H,
          d.T,
          d.H,
          d.K,
          d.V};
}

// qs, ks <- q_t, k_t (L2-normalised when asked; rq, rk = 1/sqrt(|x|^2 + eps), else 1).
// Ends with a barrier: qs and ks are visible to the whole block.
template <class S>
__device__ void load_qk(const DeltaRuleArgs<S>& a, const Head& hd, int64_t t, S* qs, S* ks, S* red,
                        S& rq, S& rk) {
  S sq = S(0), sk = S(0);
  for (int64_t i = threadIdx.x; i < hd.K; i += blockDim.x) {
    const S x = a.q[hd.qk(t) + i], y = a.k[hd.qk(t) + i];
    qs[i] = x;
    ks[i] = y;
    sq += x * x;
    sk += y * y;
  }
  rq = S(1);
  rk = S(1);
  if (a.l2norm_qk) {
    sq = block_reduce(sq, SumOp{}, S(0), red);
    sk = block_reduce(sk, SumOp{}, S(0), red);
    rq = S(1) / sqrt(sq + S(kernels::kL2Eps));
    rk = S(1) / sqrt(sk + S(kernels::kL2Eps));
    for (int64_t i = threadIdx.x; i < hd.K; i += blockDim.x) {  // the entries this thread loaded
      qs[i] *= rq;
      ks[i] *= rk;
    }
  }
  __syncthreads();
}

// One step on the thread's own columns: next <- S_t from prev = S_{t-1} (next may equal prev);
// writes o_t when o is not null. ks, qs hold the loaded k_t, q_t.
template <class S>
__device__ void step_columns(const DeltaRuleArgs<S>& a, const Head& hd, int64_t t, const S* qs,
                             const S* ks, const S* prev, S* next, S* o) {
  const int64_t K = hd.K, V = hd.V, r = hd.row(t);
  const S alpha = a.g ? exp(a.g[r]) : S(1), beta = a.beta[r], scale = static_cast<S>(a.scale);
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    S pred = S(0);  // (S'^T k)_j
    for (int64_t i = 0; i < K; ++i) pred += ks[i] * (alpha * prev[i * V + j]);
    const S e = a.v[hd.v(t) + j] - pred;
    S out = S(0);
    for (int64_t i = 0; i < K; ++i) {
      const S s = alpha * prev[i * V + j] + (beta * ks[i]) * e;
      next[i * V + j] = s;
      out += qs[i] * s;
    }
    if (o) o[hd.v(t) + j] = scale * out;
  }
}

// ---- kernels

template <class S>
__global__ void delta_rule_fwd_kernel(DeltaRuleArgs<S> a,       // device pointers, see header
                                      S* __restrict__ o,        // [B,T,H,V] overwritten
                                      S* __restrict__ hT,       // [B,H,K,V] overwritten, or null
                                      S* __restrict__ scratch,  // [B*H, K*V] or null
                                      bool state_in_shared) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const Head hd = head_of(a.d);
  const int64_t K = hd.K, V = hd.V, KV = K * V;
  S* qs = reinterpret_cast<S*>(smem_raw);  // [K]
  S* ks = qs + K;                          // [K]
  S* red = ks + K;                         // [kReduceSlots]
  S* st = state_in_shared ? red + kReduceSlots : scratch + static_cast<int64_t>(blockIdx.x) * KV;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x)  // own columns
    for (int64_t i = 0; i < K; ++i) st[i * V + j] = a.h0 ? a.h0[hd.state() + i * V + j] : S(0);
  S rq, rk;
  for (int64_t t = 0; t < hd.T; ++t) {
    load_qk(a, hd, t, qs, ks, red, rq, rk);
    step_columns(a, hd, t, qs, ks, st, st, o);
    __syncthreads();  // qs, ks read before the next step rewrites them
  }
  if (hT)
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
      for (int64_t i = 0; i < K; ++i) hT[hd.state() + i * V + j] = st[i * V + j];
}

template <class S>
__global__ void delta_rule_bwd_kernel(DeltaRuleArgs<S> a, DeltaRuleGrad<S> g,
                                      S* __restrict__ scratch,  // per block: [nck + C + 2, K*V]
                                      int64_t C) {              // checkpoint interval
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const Head hd = head_of(a.d);
  const int64_t K = hd.K, V = hd.V, KV = K * V, T = hd.T, nck = (T + C - 1) / C;
  S* qs = reinterpret_cast<S*>(smem_raw);  // [K] q_t (normalised)
  S* ks = qs + K;                          // [K] k_t (normalised)
  S* dqs = ks + K;                         // [K] dL/dq_t before the L2-norm backward
  S* dks = dqs + K;                        // [K] dL/dk_t before the L2-norm backward
  S* dos = dks + K;                        // [V] do_t
  S* es = dos + V;                         // [V] e_t
  S* dvs = es + V;                         // [V] dv_t
  S* red = dvs + V;                        // [kReduceSlots]
  S* ck = scratch + static_cast<int64_t>(blockIdx.x) * (nck + C + 2) * KV;  // [nck, KV]
  S* seg = ck + nck * KV;                                                   // [C + 1, KV]
  S* dS = seg + (C + 1) * KV;                                               // [KV]
  const S scale = static_cast<S>(a.scale);
  S rq, rk;

  // Forward pass: checkpoint S before steps 0, C, 2C, ... (the running state lives in seg[0]).
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
    for (int64_t i = 0; i < K; ++i) {
      const int64_t e = i * V + j;
      seg[e] = a.h0 ? a.h0[hd.state() + e] : S(0);
      dS[e] = g.dhT ? g.dhT[hd.state() + e] : S(0);
    }
  for (int64_t t = 0; t < T; ++t) {
    if (t % C == 0)
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
        for (int64_t i = 0; i < K; ++i) ck[(t / C) * KV + i * V + j] = seg[i * V + j];
    load_qk(a, hd, t, qs, ks, red, rq, rk);
    step_columns(a, hd, t, qs, ks, seg, seg, static_cast<S*>(nullptr));
    __syncthreads();
  }

  for (int64_t s = nck - 1; s >= 0; --s) {
    const int64_t t0 = s * C, len = min(C, T - t0);
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
      for (int64_t i = 0; i < K; ++i) seg[i * V + j] = ck[s * KV + i * V + j];
    for (int64_t u = 1; u <= len; ++u) {  // seg[u] = state after step t0 + u - 1
      load_qk(a, hd, t0 + u - 1, qs, ks, red, rq, rk);
      step_columns(a, hd, t0 + u - 1, qs, ks, seg + (u - 1) * KV, seg + u * KV,
                   static_cast<S*>(nullptr));
      __syncthreads();
    }
    for (int64_t u = len; u >= 1; --u) {
      const int64_t t = t0 + u - 1, r = hd.row(t);
      const S* St = seg + u * KV;
      const S* Sp = seg + (u - 1) * KV;  // S_{t-1}
      const S alpha = a.g ? exp(a.g[r]) : S(1), beta = a.beta[r];
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x) dos[j] = g.dout[hd.v(t) + j];
      load_qk(a, hd, t, qs, ks, red, rq, rk);  // its barrier also publishes dos

      // Own columns: dS += s q do^T, e = v - S'^T k, dSk = dS^T k, dv = beta dSk.
      S dbeta = S(0);
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        S pred = S(0), dSk = S(0);
        for (int64_t i = 0; i < K; ++i) {
          pred += ks[i] * (alpha * Sp[i * V + j]);
          const S d = dS[i * V + j] + (scale * qs[i]) * dos[j];
          dS[i * V + j] = d;
          dSk += ks[i] * d;
        }
        const S e = a.v[hd.v(t) + j] - pred;
        es[j] = e;
        dvs[j] = beta * dSk;
        g.dv[hd.v(t) + j] = beta * dSk;
        dbeta += dSk * e;
      }
      dbeta = block_reduce(dbeta, SumOp{}, S(0), red);  // its barriers publish dS, es, dvs
      if (threadIdx.x == 0) g.dbeta[r] = dbeta;

      // Rows: dq = s S_t do, dk = beta dS e - alpha S_{t-1} dv.
      for (int64_t i = threadIdx.x; i < K; i += blockDim.x) {
        S dq = S(0), dke = S(0), dkv = S(0);
        for (int64_t j = 0; j < V; ++j) {
          dq += St[i * V + j] * dos[j];
          dke += dS[i * V + j] * es[j];
          dkv += Sp[i * V + j] * dvs[j];
        }
        dqs[i] = scale * dq;
        dks[i] = beta * dke - alpha * dkv;
      }
      __syncthreads();  // the row reads of dS are done before the columns rewrite it

      // Own columns: dS' = dS - k dv^T, dg = alpha <S_{t-1}, dS'>, dS <- alpha dS'.
      S dg = S(0);
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
        for (int64_t i = 0; i < K; ++i) {
          const S d = dS[i * V + j] - ks[i] * dvs[j];
          dg += Sp[i * V + j] * d;
          dS[i * V + j] = alpha * d;
        }
      if (a.g) {
        dg = block_reduce(dg, SumOp{}, S(0), red);
        if (threadIdx.x == 0) g.dg[r] = alpha * dg;
      }

      // L2-norm backward (rq = rk = 1 and no projection without l2norm_qk).
      S pq = S(0), pk = S(0);
      if (a.l2norm_qk) {
        for (int64_t i = threadIdx.x; i < K; i += blockDim.x) {
          pq += qs[i] * dqs[i];
          pk += ks[i] * dks[i];
        }
        pq = block_reduce(pq, SumOp{}, S(0), red);
        pk = block_reduce(pk, SumOp{}, S(0), red);
      }
      for (int64_t i = threadIdx.x; i < K; i += blockDim.x) {
        g.dq[hd.qk(t) + i] = rq * (dqs[i] - pq * qs[i]);
        g.dk[hd.qk(t) + i] = rk * (dks[i] - pk * ks[i]);
      }
      __syncthreads();  // shared vectors read before the next step rewrites them
    }
  }
  if (g.dh0)
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
      for (int64_t i = 0; i < K; ++i) g.dh0[hd.state() + i * V + j] = dS[i * V + j];
}

// ---- launchers

template <class S>
void check_args(const DeltaRuleArgs<S>& a, const char* op) {
  kernels::check_rec_args(a, op);
  const RecDims& d = a.d;
  if (d.B * d.H >= (int64_t(1) << 31))
    throw Error(op, "B*H < 2^31 (one thread block per batch and head)", std::to_string(d.B * d.H),
                "split the batch");
}

// Dynamic shared memory of `bytes` for `kernel`; throws hla::Error naming the limit.
template <class Kernel>
void reserve_shared(Kernel kernel, size_t bytes, const char* op, const RecDims& d) {
  const size_t limit = shared_memory_limit();
  if (bytes > limit)
    throw Error(op, "per-head vectors within " + std::to_string(limit) + " bytes of shared memory",
                std::to_string(bytes) + " bytes for K=" + std::to_string(d.K) +
                    ", V=" + std::to_string(d.V),
                "use smaller heads");
  allow_shared_memory(kernel, bytes, op);
}

template <class S>
Tensor scratch_of(int64_t n) {
  return Tensor::empty({n}, std::is_same_v<S, double> ? DType::f64 : DType::f32, Device::CUDA);
}

}  // namespace

template <class S>
void delta_rule_recurrent_forward(const DeltaRuleArgs<S>& a, const DeltaRuleOut<S>& out) {
  const char* op = "delta_rule_recurrent_forward (cuda)";
  check_args(a, op);
  HLA_CHECK(out.o, "o is required");
  const RecDims& d = a.d;
  const size_t vectors = static_cast<size_t>(2 * d.K + kReduceSlots) * sizeof(S);
  const size_t with_state = vectors + static_cast<size_t>(d.K * d.V) * sizeof(S);
  const bool state_in_shared = with_state <= Context::get().props().sharedMemPerBlockOptin;
  const size_t smem = state_in_shared ? with_state : vectors;
  Tensor scratch = scratch_of<S>(state_in_shared ? 0 : d.B * d.H * d.K * d.V);
  reserve_shared(delta_rule_fwd_kernel<S>, smem, op, d);
  delta_rule_fwd_kernel<S><<<static_cast<unsigned>(d.B * d.H), kRecThreads, smem, stream()>>>(
      a, out.o, out.hT, state_in_shared ? nullptr : static_cast<S*>(scratch.raw_data()),
      state_in_shared);
  CUDA_CHECK(cudaGetLastError());
}

template <class S>
void delta_rule_recurrent_backward(const DeltaRuleArgs<S>& a, const DeltaRuleGrad<S>& g) {
  const char* op = "delta_rule_recurrent_backward (cuda)";
  check_args(a, op);
  HLA_CHECK(g.dout && g.dq && g.dk && g.dv && g.dbeta, "dout, dq, dk, dv and dbeta are required");
  HLA_CHECK(!a.g || g.dg, "dg is required when g is given");
  const RecDims& d = a.d;
  const int64_t C = kernels::kChunk, nck = (d.T + C - 1) / C;
  Tensor scratch = scratch_of<S>(d.B * d.H * (nck + C + 2) * d.K * d.V);
  const size_t smem = static_cast<size_t>(4 * d.K + 3 * d.V + kReduceSlots) * sizeof(S);
  reserve_shared(delta_rule_bwd_kernel<S>, smem, op, d);
  delta_rule_bwd_kernel<S><<<static_cast<unsigned>(d.B * d.H), kRecThreads, smem, stream()>>>(
      a, g, static_cast<S*>(scratch.raw_data()), C);
  CUDA_CHECK(cudaGetLastError());
}

template void delta_rule_recurrent_forward<float>(const DeltaRuleArgs<float>&,
                                                  const DeltaRuleOut<float>&);
template void delta_rule_recurrent_forward<double>(const DeltaRuleArgs<double>&,
                                                   const DeltaRuleOut<double>&);
template void delta_rule_recurrent_backward<float>(const DeltaRuleArgs<float>&,
                                                   const DeltaRuleGrad<float>&);
template void delta_rule_recurrent_backward<double>(const DeltaRuleArgs<double>&,
                                                    const DeltaRuleGrad<double>&);

}  // namespace hla::cuda
