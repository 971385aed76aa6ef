// defines: softmax_attention_reference_forward, softmax_attention_reference_backward
// (kernels/recurrence.h): the executable specification of the softmax attention layers of hybrids
// (spec/recurrences.md 7.3). Plain loops in double; each query's softmax row is materialised.
//
// Shapes (row-major):  q [B,T,H,K]   k [B,T,Hkv,K]   v [B,T,Hkv,V]   o [B,T,H,V]   lse [B,H,T]
//
// For batch b, query head h (kv head c = h / (H/Hkv), GQA) and query i, over the allowed keys
//   j in A(i):  j <= i (if causal)  and  j >= i - W + 1 (if window W > 0)      (never empty)
//   s_ij   = scale q_i . k_j                 logits
//   lse_i  = log sum_j exp(s_ij)             (computed as m + log sum exp(s_ij - m), m = max s_ij)
//   p_ij   = exp(s_ij - lse_i)               softmax row
//   o_i    = sum_j p_ij v_j
//
// Backward (the row-wise softmax Jacobian):
//   dp_ij  = do_i . v_j
//   D_i    = sum_j p_ij dp_ij                (= do_i . o_i)
//   ds_ij  = p_ij (dp_ij - D_i)
//   dq_i   = scale sum_j ds_ij k_j,   dk_j += scale ds_ij q_i,   dv_j += p_ij do_i
// dk and dv sum over every query head of the kv group. The backward recomputes p from q and k
// and ignores grad.o and grad.lse (the tiled kernel is the one that reuses them).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/recurrence.h"
#include "tensor/error.h"

namespace hla::kernels {
namespace {

struct Layout {
  int64_t T, H, Hkv, K, V, group;
  int64_t q(int64_t b, int64_t t, int64_t h) const { return ((b * T + t) * H + h) * K; }
  int64_t k(int64_t b, int64_t t, int64_t c) const { return ((b * T + t) * Hkv + c) * K; }
  int64_t v(int64_t b, int64_t t, int64_t c) const { return ((b * T + t) * Hkv + c) * V; }
  int64_t o(int64_t b, int64_t t, int64_t h) const { return ((b * T + t) * H + h) * V; }
};

Layout layout_of(const AttentionArgs<double>& a) {
  const AttnDims& d = a.d;
  HLA_CHECK(d.B > 0 && d.T > 0 && d.H > 0 && d.Hkv > 0 && d.K > 0 && d.V > 0,
            "B,T,H,Hkv,K,V = " << d.B << "," << d.T << "," << d.H << "," << d.Hkv << "," << d.K
                               << "," << d.V);
  HLA_CHECK(d.H % d.Hkv == 0, "H=" << d.H << " must be a multiple of Hkv=" << d.Hkv);
  HLA_CHECK(a.window >= 0, "window=" << a.window);
  HLA_CHECK(a.q && a.k && a.v, "q, k and v are required");
  return {d.T, d.H, d.Hkv, d.K, d.V, d.H / d.Hkv};
}

// The allowed keys of query i: [first, last].
void key_range(const AttentionArgs<double>& a, int64_t i, int64_t& first, int64_t& last) {
  first = a.window > 0 ? std::max<int64_t>(0, i - a.window + 1) : 0;
  last = a.causal ? i : a.d.T - 1;
}

// The softmax row of (b, h, i) over keys first..last: p[j - first]; returns lse_i.
double softmax_row(const AttentionArgs<double>& a, const Layout& L, int64_t b, int64_t h,
                   int64_t i, int64_t first, int64_t last, std::vector<double>& p) {
  const int64_t c = h / L.group;
  const double* qi = a.q + L.q(b, i, h);
  p.assign(last - first + 1, 0.0);
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = first; j <= last; ++j) {
    const double* kj = a.k + L.k(b, j, c);
    double s = 0;
    for (int64_t x = 0; x < L.K; ++x) s += qi[x] * kj[x];
    p[j - first] = a.scale * s;
    m = std::max(m, p[j - first]);
  }
  double sum = 0;
  for (double s : p) sum += std::exp(s - m);
  const double lse = m + std::log(sum);
  for (double& s : p) s = std::exp(s - lse);
  return lse;
}

}  // namespace

void softmax_attention_reference_forward(const AttentionArgs<double>& a,
                                         const AttentionOut<double>& out) {
  const Layout L = layout_of(a);
  HLA_CHECK(out.o, "o is required");
  std::vector<double> p;
  for (int64_t b = 0; b < a.d.B; ++b)
    for (int64_t h = 0; h < L.H; ++h)
      for (int64_t i = 0; i < L.T; ++i) {
        int64_t first, last;
        key_range(a, i, first, last);
        const double lse = softmax_row(a, L, b, h, i, first, last, p);
        if (out.lse) out.lse[(b * L.H + h) * L.T + i] = lse;
        double* oi = out.o + L.o(b, i, h);
        std::fill(oi, oi + L.V, 0.0);
        for (int64_t j = first; j <= last; ++j) {
          const double* vj = a.v + L.v(b, j, h / L.group);
          for (int64_t x = 0; x < L.V; ++x) oi[x] += p[j - first] * vj[x];
        }
      }
}

void softmax_attention_reference_backward(const AttentionArgs<double>& a,
                                          const AttentionGrad<double>& grad) {
  const Layout L = layout_of(a);
  HLA_CHECK(grad.dout && grad.dq && grad.dk && grad.dv, "dout, dq, dk and dv are required");
  const int64_t B = a.d.B;
  std::fill(grad.dk, grad.dk + B * L.T * L.Hkv * L.K, 0.0);
  std::fill(grad.dv, grad.dv + B * L.T * L.Hkv * L.V, 0.0);
  std::vector<double> p, dp;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < L.H; ++h)
      for (int64_t i = 0; i < L.T; ++i) {
        const int64_t c = h / L.group;
        int64_t first, last;
        key_range(a, i, first, last);
        softmax_row(a, L, b, h, i, first, last, p);
        const double* qi = a.q + L.q(b, i, h);
        const double* doi = grad.dout + L.o(b, i, h);
        dp.assign(p.size(), 0.0);
        double D = 0;
        for (int64_t j = first; j <= last; ++j) {
          const double* vj = a.v + L.v(b, j, c);
          for (int64_t x = 0; x < L.V; ++x) dp[j - first] += doi[x] * vj[x];
          D += p[j - first] * dp[j - first];
        }
        double* dqi = grad.dq + L.q(b, i, h);
        std::fill(dqi, dqi + L.K, 0.0);
        for (int64_t j = first; j <= last; ++j) {
          const double pj = p[j - first];
          const double ds = pj * (dp[j - first] - D);
          const double* kj = a.k + L.k(b, j, c);
          double* dkj = grad.dk + L.k(b, j, c);
          double* dvj = grad.dv + L.v(b, j, c);
          for (int64_t x = 0; x < L.K; ++x) {
            dqi[x] += a.scale * ds * kj[x];
            dkj[x] += a.scale * ds * qi[x];
          }
          for (int64_t x = 0; x < L.V; ++x) dvj[x] += pj * doi[x];
        }
      }
}

}  // namespace hla::kernels
