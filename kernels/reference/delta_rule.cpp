// defines: delta_rule_reference_forward, delta_rule_reference_backward (kernels/recurrence.h)
//
// The executable specification of DeltaNet (g == nullptr) and Gated DeltaNet (g = per-head log
// decay), spec/recurrences.md 5.3 and 6.3: a literal loop over t in double, one (b, h) at a time.
//
// Shapes (row-major):  q, k [B,T,H,K]   v, o [B,T,H,V]   beta, g [B,T,H]   h0, hT [B,H,K,V]
//
// Forward, per (b, h), state S in R^{K x V}, S_0 = h0 (or 0):
//   q_t, k_t <- x / sqrt(sum_i x_i^2 + 1e-6)    only if l2norm_qk (spec 0.5)
//   alpha_t   = exp(g_t)                         (alpha_t = 1 for DeltaNet)
//   S'        = alpha_t S_{t-1}                  decay first
//   e_t       = v_t - S'^T k_t                   prediction error                    [V]
//   S_t       = S' + beta_t k_t e_t^T            delta-rule write, beta_t in (0,2)   [K,V]
//   o_t       = S_t^T (scale q_t)                read-out                            [V]
//   hT        = S_T
//
// Backward, one reverse-time loop carrying dS = dL/dS_t, starting from dS_T = dhT (or 0):
//   dS     += scale q_t do_t^T                   (o_t reads S_t)
//   dq_t    = scale S_t do_t
//   dSk     = dS^T k_t                                                               [V]
//   dv_t    = beta_t dSk                         (= de_t, the gradient of the error)
//   dbeta_t = <dSk, e_t>
//   dk_t    = beta_t dS e_t - S' dv_t
//   dS'     = dS - k_t dv_t^T
//   dg_t    = <S', dS'>
//   dS_{t-1} = alpha_t dS'                       and finally dh0 = dS_0.
// With l2norm_qk, dq and dk then go through the normalisation backward (spec 0.5):
//   dx = r (dy - xhat <xhat, dy>),   r = 1 / sqrt(sum_i x_i^2 + 1e-6).
//
// The forward states S_0..S_T of one head are kept for the backward loop: this is a
// specification, not a kernel (the recurrent and chunked tiers are memory-frugal).
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/recurrence.h"
#include "tensor/error.h"

namespace hla::kernels {
namespace {


// x [B,T,H,D] -> its per-head L2 normalisation xhat, and r = 1/sqrt(|x|^2 + eps) [B,T,H].
void l2norm_rows(const double* x, int64_t rows, int64_t D, std::vector<double>& xhat,
                 std::vector<double>& r) {
  xhat.assign(x, x + rows * D);
  r.assign(rows, 1.0);
  for (int64_t n = 0; n < rows; ++n) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += x[n * D + i] * x[n * D + i];
    r[n] = 1.0 / std::sqrt(ss + kL2Eps);
    for (int64_t i = 0; i < D; ++i) xhat[n * D + i] = x[n * D + i] * r[n];
  }
}

// In place: dy (gradient w.r.t. xhat) -> dx = r (dy - xhat <xhat, dy>).
void l2norm_backward_rows(const std::vector<double>& xhat, const std::vector<double>& r,
                          int64_t D, double* dy) {
  const int64_t rows = static_cast<int64_t>(r.size());
  for (int64_t n = 0; n < rows; ++n) {
    double dot = 0;
    for (int64_t i = 0; i < D; ++i) dot += xhat[n * D + i] * dy[n * D + i];
    for (int64_t i = 0; i < D; ++i) dy[n * D + i] = r[n] * (dy[n * D + i] - xhat[n * D + i] * dot);
  }
}

// The q and k the recurrence reads: the inputs, or their L2 normalisation.
struct QK {
  std::vector<double> q, k, rq, rk;  // q, k [B,T,H,K]; rq, rk [B,T,H] (only with l2norm_qk)
};
QK prepare_qk(const DeltaRuleArgs<double>& a) {
  const int64_t rows = a.d.B * a.d.T * a.d.H, K = a.d.K;
  QK x;
  if (a.l2norm_qk) {
    l2norm_rows(a.q, rows, K, x.q, x.rq);
    l2norm_rows(a.k, rows, K, x.k, x.rk);
  } else {
    x.q.assign(a.q, a.q + rows * K);
    x.k.assign(a.k, a.k + rows * K);
  }
  return x;
}

// Runs the recurrence of head (b, h). states == nullptr: only the final state is kept (in S);
// otherwise states receives S_0..S_T, (T+1) K x V matrices.
void forward_head(const DeltaRuleArgs<double>& a, const QK& x, int64_t b, int64_t h, double* o,
                  std::vector<double>& S, std::vector<double>* states) {
  const int64_t T = a.d.T, H = a.d.H, K = a.d.K, V = a.d.V;
  S.assign(K * V, 0.0);
  if (a.h0) S.assign(a.h0 + (b * H + h) * K * V, a.h0 + (b * H + h + 1) * K * V);
  if (states) states->assign(S.begin(), S.end());
  std::vector<double> e(V);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row = (b * T + t) * H + h;  // index into [B,T,H]
    const double* qt = &x.q[row * K];
    const double* kt = &x.k[row * K];
    const double* vt = a.v + row * V;
    const double alpha = a.g ? std::exp(a.g[row]) : 1.0;
    const double beta = a.beta[row];
    for (auto& s : S) s *= alpha;  // S' = alpha S_{t-1}
    for (int64_t j = 0; j < V; ++j) {
      e[j] = vt[j];
      for (int64_t i = 0; i < K; ++i) e[j] -= S[i * V + j] * kt[i];  // e = v - S'^T k
    }
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = 0; j < V; ++j) S[i * V + j] += beta * kt[i] * e[j];  // S = S' + b k e^T
    if (o) {
      for (int64_t j = 0; j < V; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < K; ++i) acc += S[i * V + j] * qt[i];
        o[row * V + j] = a.scale * acc;  // o = S^T (scale q)
      }
    }
    if (states) states->insert(states->end(), S.begin(), S.end());
  }
}

}  // namespace

void delta_rule_reference_forward(const DeltaRuleArgs<double>& a,
                                  const DeltaRuleOut<double>& out) {
  check_rec_args(a, "delta_rule_reference_forward");
  HLA_CHECK(out.o, "o is required");
  const int64_t K = a.d.K, V = a.d.V;
  const QK x = prepare_qk(a);
  std::vector<double> S;
  for (int64_t b = 0; b < a.d.B; ++b)
    for (int64_t h = 0; h < a.d.H; ++h) {
      forward_head(a, x, b, h, out.o, S, nullptr);
      if (out.hT)
        for (int64_t n = 0; n < K * V; ++n) out.hT[(b * a.d.H + h) * K * V + n] = S[n];
    }
}

void delta_rule_reference_backward(const DeltaRuleArgs<double>& a,
                                   const DeltaRuleGrad<double>& grad) {
  check_rec_args(a, "delta_rule_reference_backward");
  HLA_CHECK(grad.dout && grad.dq && grad.dk && grad.dv && grad.dbeta,
            "dout, dq, dk, dv and dbeta are required");
  HLA_CHECK(!a.g || grad.dg, "dg is required when g is given");
  const int64_t T = a.d.T, H = a.d.H, K = a.d.K, V = a.d.V;
  const QK x = prepare_qk(a);
  std::vector<double> S, states, dS(K * V), Sp(K * V), dSk(V), e(V);

  for (int64_t b = 0; b < a.d.B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      forward_head(a, x, b, h, nullptr, S, &states);
      const double* dhT = grad.dhT ? grad.dhT + (b * H + h) * K * V : nullptr;
      for (int64_t n = 0; n < K * V; ++n) dS[n] = dhT ? dhT[n] : 0.0;

      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t row = (b * T + t) * H + h;
        const double* qt = &x.q[row * K];
        const double* kt = &x.k[row * K];
        const double* vt = a.v + row * V;
        const double* dot = grad.dout + row * V;
        const double* St = &states[(t + 1) * K * V];  // S_t
        const double* Sprev = &states[t * K * V];     // S_{t-1}
        const double alpha = a.g ? std::exp(a.g[row]) : 1.0;
        const double beta = a.beta[row];
        double* dqt = grad.dq + row * K;
        double* dkt = grad.dk + row * K;
        double* dvt = grad.dv + row * V;

        // o_t = S_t^T (scale q_t)
        for (int64_t i = 0; i < K; ++i) {
          double acc = 0;
          for (int64_t j = 0; j < V; ++j) {
            dS[i * V + j] += a.scale * qt[i] * dot[j];
            acc += St[i * V + j] * dot[j];
          }
          dqt[i] = a.scale * acc;
        }
        // recompute S' = alpha S_{t-1} and e_t = v_t - S'^T k_t
        for (int64_t n = 0; n < K * V; ++n) Sp[n] = alpha * Sprev[n];
        for (int64_t j = 0; j < V; ++j) {
          e[j] = vt[j];
          dSk[j] = 0;
          for (int64_t i = 0; i < K; ++i) {
            e[j] -= Sp[i * V + j] * kt[i];
            dSk[j] += dS[i * V + j] * kt[i];
          }
        }
        // S_t = S' + beta k e^T
        double dbeta = 0;
        for (int64_t j = 0; j < V; ++j) {
          dvt[j] = beta * dSk[j];
          dbeta += dSk[j] * e[j];
        }
        grad.dbeta[row] = dbeta;
        for (int64_t i = 0; i < K; ++i) {
          double acc = 0;
          for (int64_t j = 0; j < V; ++j) acc += beta * dS[i * V + j] * e[j] - Sp[i * V + j] * dvt[j];
          dkt[i] = acc;
        }
        // dS' = dS - k dv^T;  S' = alpha S_{t-1}
        double dg = 0;
        for (int64_t i = 0; i < K; ++i)
          for (int64_t j = 0; j < V; ++j) {
            dS[i * V + j] -= kt[i] * dvt[j];
            dg += Sp[i * V + j] * dS[i * V + j];
            dS[i * V + j] *= alpha;
          }
        if (a.g) grad.dg[row] = dg;
      }
      if (grad.dh0)
        for (int64_t n = 0; n < K * V; ++n) grad.dh0[(b * H + h) * K * V + n] = dS[n];
    }

  if (a.l2norm_qk) {
    l2norm_backward_rows(x.q, x.rq, K, grad.dq);
    l2norm_backward_rows(x.k, x.rk, K, grad.dk);
  }
}

}  // namespace hla::kernels
