// defines: retention_log_gamma, gated_linear_reference_forward, gated_linear_reference_backward
// (kernels/recurrence.h)
//
// The executable specification of the gated linear family (spec/recurrences.md 2, 3.4, 3.6, 4):
// a literal loop over t in double, one (batch b, head h) at a time.
//
//   gate kind       layers          log decay of key i at step t
//   None            linear attn     0
//   FixedPerHead    RetNet          log gamma_h,  gamma_h = 1 - 2^(-5-h)      (no gate tensor)
//   ScalarPerHead   simple GLA      g[b,t,h]                                  g  [B,T,H]
//   PerKey          GLA, HGRN2      g[b,t,h,i]                                g  [B,T,H,K]
//
// Shapes (row-major):  q, k [B,T,H,K]   v, o [B,T,H,V]   h0, hT [B,H,K,V]
//
// Forward, per (b, h), state S in R^{K x V}, S_0 = h0 (or 0), s = scale:
//   alpha_t = exp(g_t)                       decay, one factor per key (row of S)
//   S_t     = diag(alpha_t) S_{t-1} + k_t v_t^T
//   o_t     = S_t^T (s q_t)
//   hT      = S_T
//
// Backward, one reverse-time loop carrying dS = dL/dS_t, starting from dS_T = dhT (or 0):
//   dS     += s q_t do_t^T                   (o_t reads S_t)
//   dq_t    = s S_t do_t
//   dk_t    = dS v_t
//   dv_t    = dS^T k_t
//   dS_{t-1} = diag(alpha_t) dS               and finally dh0 = dS_0.
// The gate gradient uses the identity of spec 3.6 (the loss depends on the cumulative log decay
// G_t = g_1 + ... + g_t only through q_t e^{G_t}, k_t e^{-G_t}, and hT = e^{G_T} (...)):
//   dG_t = q_t * dq_t - k_t * dk_t  (+ sum_v S_T * dhT at t = T)      per key
//   dg_t = sum_{u >= t} dG_u                                          (reverse cumulative sum)
// For ScalarPerHead dg_t is the sum over keys of that; None and FixedPerHead have no dg.
//
// The forward states S_0..S_T of one head are kept for the backward loop: this is a
// specification, not a kernel (the recurrent and chunked tiers are memory-frugal).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/recurrence.h"
#include "tensor/error.h"

namespace hla::kernels {

// RetNet's fixed multi-scale decay (spec 4.3): gamma_h = 1 - 2^(-5-h).
double retention_log_gamma(int64_t h) {
  return std::log1p(-std::exp2(-5.0 - static_cast<double>(h)));
}

namespace {

struct Layout {
  int64_t T, H, K, V;
  int64_t qk(int64_t b, int64_t t, int64_t h) const { return ((b * T + t) * H + h) * K; }
  int64_t v(int64_t b, int64_t t, int64_t h) const { return ((b * T + t) * H + h) * V; }
  int64_t state(int64_t b, int64_t h) const { return (b * H + h) * K * V; }
  int64_t head_gate(int64_t b, int64_t t, int64_t h) const { return (b * T + t) * H + h; }
};

Layout layout_of(const GatedLinearArgs<double>& a) {
  check_rec_args(a, "gated_linear_reference");
  const RecDims& d = a.d;
  return {d.T, d.H, d.K, d.V};
}

// log alpha_t[i]: the log decay of key i at step t of head h.
double log_decay(const GatedLinearArgs<double>& a, const Layout& L, int64_t b, int64_t t, int64_t h,
                 int64_t i) {
  switch (a.gate) {
    case GateKind::None:
      return 0.0;
    case GateKind::FixedPerHead:
      return retention_log_gamma(h);
    case GateKind::ScalarPerHead:
      return a.g[L.head_gate(b, t, h)];
    case GateKind::PerKey:
      return a.g[L.qk(b, t, h) + i];
  }
  return 0.0;
}

// S <- diag(alpha_t) S + k_t v_t^T, S [K,V] row-major.
void step_state(const GatedLinearArgs<double>& a, const Layout& L, int64_t b, int64_t t, int64_t h,
                std::vector<double>& S) {
  const double* k = a.k + L.qk(b, t, h);
  const double* v = a.v + L.v(b, t, h);
  for (int64_t i = 0; i < L.K; ++i) {
    const double alpha = std::exp(log_decay(a, L, b, t, h, i));
    for (int64_t j = 0; j < L.V; ++j) S[i * L.V + j] = alpha * S[i * L.V + j] + k[i] * v[j];
  }
}

// S_0 = h0 of head (b, h), or zeros.
std::vector<double> initial_state(const GatedLinearArgs<double>& a, const Layout& L, int64_t b,
                                  int64_t h) {
  if (!a.h0) return std::vector<double>(L.K * L.V, 0.0);
  const double* h0 = a.h0 + L.state(b, h);
  return std::vector<double>(h0, h0 + L.K * L.V);
}

}  // namespace

void gated_linear_reference_forward(const GatedLinearArgs<double>& a,
                                    const GatedLinearOut<double>& out) {
  const Layout L = layout_of(a);
  HLA_CHECK(out.o, "o is required");
  for (int64_t b = 0; b < a.d.B; ++b) {
    for (int64_t h = 0; h < L.H; ++h) {
      std::vector<double> S = initial_state(a, L, b, h);
      for (int64_t t = 0; t < L.T; ++t) {
        step_state(a, L, b, t, h, S);
        // o_t = S_t^T (s q_t)
        const double* q = a.q + L.qk(b, t, h);
        double* o = out.o + L.v(b, t, h);
        for (int64_t j = 0; j < L.V; ++j) {
          double acc = 0;
          for (int64_t i = 0; i < L.K; ++i) acc += a.scale * q[i] * S[i * L.V + j];
          o[j] = acc;
        }
      }
      if (out.hT) std::copy(S.begin(), S.end(), out.hT + L.state(b, h));
    }
  }
}

void gated_linear_reference_backward(const GatedLinearArgs<double>& a,
                                     const GatedLinearGrad<double>& grad) {
  const Layout L = layout_of(a);
  HLA_CHECK(grad.dout && grad.dq && grad.dk && grad.dv, "dout, dq, dk and dv are required");
  const bool per_key = a.gate == GateKind::PerKey;
  const bool want_dg = a.gate == GateKind::ScalarPerHead || per_key;
  HLA_CHECK(!want_dg || grad.dg, "dg is required for a gate tensor");
  const int64_t K = L.K, V = L.V;

  for (int64_t b = 0; b < a.d.B; ++b) {
    for (int64_t h = 0; h < L.H; ++h) {
      // states[t] = S_t, t = 0..T
      std::vector<std::vector<double>> states(L.T + 1);
      states[0] = initial_state(a, L, b, h);
      for (int64_t t = 0; t < L.T; ++t) {
        states[t + 1] = states[t];
        step_state(a, L, b, t, h, states[t + 1]);
      }

      std::vector<double> dS(K * V, 0.0);
      if (grad.dhT) std::copy_n(grad.dhT + L.state(b, h), K * V, dS.begin());
      // dG_sum[i] = sum_{u >= t} dG_u[i], starting with the final-state term sum_v S_T * dhT
      std::vector<double> dG_sum(K, 0.0);
      for (int64_t i = 0; i < K; ++i)
        for (int64_t j = 0; j < V; ++j) dG_sum[i] += states[L.T][i * V + j] * dS[i * V + j];

      for (int64_t t = L.T - 1; t >= 0; --t) {
        const std::vector<double>& S = states[t + 1];  // S_t of the maths (1-based time)
        const double* q = a.q + L.qk(b, t, h);
        const double* k = a.k + L.qk(b, t, h);
        const double* v = a.v + L.v(b, t, h);
        const double* dout = grad.dout + L.v(b, t, h);
        double* dq = grad.dq + L.qk(b, t, h);
        double* dk = grad.dk + L.qk(b, t, h);
        double* dv = grad.dv + L.v(b, t, h);

        for (int64_t i = 0; i < K; ++i)
          for (int64_t j = 0; j < V; ++j) dS[i * V + j] += a.scale * q[i] * dout[j];
        for (int64_t i = 0; i < K; ++i) {
          double dqi = 0, dki = 0;
          for (int64_t j = 0; j < V; ++j) {
            dqi += a.scale * S[i * V + j] * dout[j];
            dki += dS[i * V + j] * v[j];
          }
          dq[i] = dqi;
          dk[i] = dki;
        }
        for (int64_t j = 0; j < V; ++j) {
          double dvj = 0;
          for (int64_t i = 0; i < K; ++i) dvj += dS[i * V + j] * k[i];
          dv[j] = dvj;
        }

        if (want_dg) {
          double dg_head = 0;  // ScalarPerHead: the sum over keys
          for (int64_t i = 0; i < K; ++i) {
            dG_sum[i] += q[i] * dq[i] - k[i] * dk[i];
            if (per_key) grad.dg[L.qk(b, t, h) + i] = dG_sum[i];
            dg_head += dG_sum[i];
          }
          if (!per_key) grad.dg[L.head_gate(b, t, h)] = dg_head;
        }

        // dS_{t-1} = diag(alpha_t) dS_t
        for (int64_t i = 0; i < K; ++i) {
          const double alpha = std::exp(log_decay(a, L, b, t, h, i));
          for (int64_t j = 0; j < V; ++j) dS[i * V + j] *= alpha;
        }
      }
      if (grad.dh0) std::copy(dS.begin(), dS.end(), grad.dh0 + L.state(b, h));
    }
  }
}

}  // namespace hla::kernels
