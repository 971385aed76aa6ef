// defines: delta_rule_recurrent_forward, delta_rule_recurrent_backward (float, double)
//
// The step-by-step Eigen kernel of DeltaNet / Gated DeltaNet (what decoding uses); same maths as
// kernels/reference/delta_rule.cpp, which states the equations:
//   S' = alpha_t S_{t-1};  e_t = v_t - S'^T k_t;  S_t = S' + beta_t k_t e_t^T;  o_t = S_t^T (s q_t)
// Layouts: q, k [B,T,H,K]; v, o [B,T,H,V]; beta, g [B,T,H]; h0, hT [B,H,K,V]; row-major.
// The state of one head is a row-major K x V matrix; per step the work is O(K V).
// One OpenMP task per (b, h) pair. Backward overwrites its outputs.
//
// Backward memory: the forward states are checkpointed every kChunk steps (T/kChunk matrices);
// each segment's kChunk + 1 states are recomputed from its checkpoint and then walked in reverse.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/eigen.h"
#include "kernels/recurrence.h"
#include "tensor/error.h"

namespace hla::kernels {
namespace {

template <class R>
using Mat = RowMajorMatrix<R>;
template <class R>
using RowVec = Eigen::Matrix<R, 1, Eigen::Dynamic>;
template <class R>
using RowMap = Eigen::Map<RowVec<R>>;
template <class R>
using ConstRowMap = Eigen::Map<const RowVec<R>>;
template <class R>
using StateMap = Eigen::Map<Mat<R>>;
template <class R>
using ConstStateMap = Eigen::Map<const Mat<R>>;


// One head (b, h) of the op: the rows of its inputs at time t, and its time-step update.
template <class R>
struct Head {
  const DeltaRuleArgs<R>& a;
  int64_t b, h;
  // per-step inputs, q and k normalised when l2norm_qk; rq, rk = 1/sqrt(|x|^2 + eps)
  RowVec<R> q, k;
  R rq = 1, rk = 1, alpha = 1, beta = 0;

  Head(const DeltaRuleArgs<R>& args, int64_t b_, int64_t h_)
      : a(args), b(b_), h(h_), q(args.d.K), k(args.d.K) {}

  int64_t row(int64_t t) const { return (b * a.d.T + t) * a.d.H + h; }  // index into [B,T,H]

  void load(int64_t t) {
    const int64_t r = row(t), K = a.d.K;
    q = ConstRowMap<R>(a.q + r * K, K);
    k = ConstRowMap<R>(a.k + r * K, K);
    if (a.l2norm_qk) {
      rq = R(1) / std::sqrt(q.squaredNorm() + R(kL2Eps));
      rk = R(1) / std::sqrt(k.squaredNorm() + R(kL2Eps));
      q *= rq;
      k *= rk;
    }
    alpha = a.g ? std::exp(a.g[r]) : R(1);
    beta = a.beta[r];
  }

  ConstRowMap<R> v(int64_t t) const { return ConstRowMap<R>(a.v + row(t) * a.d.V, a.d.V); }

  // S <- S_t from S_{t-1} (inputs of step t already loaded); e is scratch [V]; o_t if o != null.
  void step(Mat<R>& S, RowVec<R>& e, int64_t t, R* o) const {
    if (a.g) S *= alpha;
    e = v(t);
    e.noalias() -= k * S;                        // e = v - S'^T k
    S.noalias() += (beta * k).transpose() * e;   // S = S' + beta k e^T
    if (o) RowMap<R>(o + row(t) * a.d.V, a.d.V).noalias() = (R(a.scale) * q) * S;
  }
};

template <class R>
Mat<R> initial_state(const DeltaRuleArgs<R>& a, int64_t b, int64_t h) {
  const int64_t K = a.d.K, V = a.d.V;
  if (!a.h0) return Mat<R>::Zero(K, V);
  return ConstStateMap<R>(a.h0 + (b * a.d.H + h) * K * V, K, V);
}

// dy (gradient w.r.t. xhat) -> r (dy - xhat <xhat, dy>), spec 0.5.
template <class R>
void l2norm_backward(const RowVec<R>& xhat, R r, RowMap<R> dy) {
  const R dot = xhat.dot(dy);
  dy = r * (dy - dot * xhat);
}

}  // namespace

template <class R>
void delta_rule_recurrent_forward(const DeltaRuleArgs<R>& a, const DeltaRuleOut<R>& out) {
  check_rec_args(a, "delta_rule_recurrent_forward");
  HLA_CHECK(out.o, "o is required");
  const int64_t B = a.d.B, T = a.d.T, H = a.d.H, K = a.d.K, V = a.d.V;
#pragma omp parallel for schedule(dynamic)
  for (int64_t bh = 0; bh < B * H; ++bh) {
    Head<R> head(a, bh / H, bh % H);
    Mat<R> S = initial_state(a, head.b, head.h);
    RowVec<R> e(V);
    for (int64_t t = 0; t < T; ++t) {
      head.load(t);
      head.step(S, e, t, out.o);
    }
    if (out.hT) StateMap<R>(out.hT + bh * K * V, K, V) = S;
  }
}

template <class R>
void delta_rule_recurrent_backward(const DeltaRuleArgs<R>& a, const DeltaRuleGrad<R>& grad) {
  check_rec_args(a, "delta_rule_recurrent_backward");
  HLA_CHECK(grad.dout && grad.dq && grad.dk && grad.dv && grad.dbeta,
            "dout, dq, dk, dv and dbeta are required");
  HLA_CHECK(!a.g || grad.dg, "dg is required when g is given");
  const int64_t B = a.d.B, T = a.d.T, H = a.d.H, K = a.d.K, V = a.d.V;
  const int64_t n_seg = (T + kChunk - 1) / kChunk;
  const R scale = R(a.scale);

#pragma omp parallel for schedule(dynamic)
  for (int64_t bh = 0; bh < B * H; ++bh) {
    Head<R> head(a, bh / H, bh % H);
    RowVec<R> e(V), dSk(V), dv(V);

    // checkpoints: ckpt[s] = state before step s * kChunk
    std::vector<Mat<R>> ckpt(n_seg);
    Mat<R> S = initial_state(a, head.b, head.h);
    for (int64_t t = 0; t < T; ++t) {
      if (t % kChunk == 0) ckpt[t / kChunk] = S;
      head.load(t);
      head.step(S, e, t, nullptr);
    }

    Mat<R> dS = Mat<R>::Zero(K, V);
    if (grad.dhT) dS = ConstStateMap<R>(grad.dhT + bh * K * V, K, V);
    std::vector<Mat<R>> seg(kChunk + 1);  // seg[i] = state before step t0 + i
    for (int64_t s = n_seg - 1; s >= 0; --s) {
      const int64_t t0 = s * kChunk, n = std::min(kChunk, T - t0);
      seg[0] = ckpt[s];
      for (int64_t i = 0; i < n; ++i) {
        seg[i + 1] = seg[i];
        head.load(t0 + i);
        head.step(seg[i + 1], e, t0 + i, nullptr);
      }
      for (int64_t i = n - 1; i >= 0; --i) {
        const int64_t t = t0 + i, r = head.row(t);
        head.load(t);
        const Mat<R>& Sprev = seg[i];  // S_{t-1}
        const Mat<R>& St = seg[i + 1];
        const ConstRowMap<R> dout(grad.dout + r * V, V);
        RowMap<R> dq(grad.dq + r * K, K), dk(grad.dk + r * K, K);
        const R alpha = head.alpha, beta = head.beta;

        // o_t = S_t^T (s q_t)
        dS.noalias() += (scale * head.q).transpose() * dout;
        dq.noalias() = scale * (dout * St.transpose());
        // e_t = v_t - alpha S_{t-1}^T k_t;  S_t = S' + beta k e^T
        e = head.v(t);
        e.noalias() -= alpha * (head.k * Sprev);
        dSk.noalias() = head.k * dS;
        dv = beta * dSk;
        grad.dbeta[r] = dSk.dot(e);
        dk.noalias() = beta * (e * dS.transpose());
        dk.noalias() -= alpha * (dv * Sprev.transpose());
        RowMap<R>(grad.dv + r * V, V) = dv;
        // dS' = dS - k dv^T;  dg = <S', dS'>;  dS_{t-1} = alpha dS'
        dS.noalias() -= head.k.transpose() * dv;
        if (a.g) {
          grad.dg[r] = alpha * Sprev.cwiseProduct(dS).sum();
          dS *= alpha;
        }
        if (a.l2norm_qk) {
          l2norm_backward(head.q, head.rq, dq);
          l2norm_backward(head.k, head.rk, dk);
        }
      }
    }
    if (grad.dh0) StateMap<R>(grad.dh0 + bh * K * V, K, V) = dS;
  }
}

template void delta_rule_recurrent_forward<float>(const DeltaRuleArgs<float>&,
                                                  const DeltaRuleOut<float>&);
template void delta_rule_recurrent_forward<double>(const DeltaRuleArgs<double>&,
                                                   const DeltaRuleOut<double>&);
template void delta_rule_recurrent_backward<float>(const DeltaRuleArgs<float>&,
                                                   const DeltaRuleGrad<float>&);
template void delta_rule_recurrent_backward<double>(const DeltaRuleArgs<double>&,
                                                    const DeltaRuleGrad<double>&);

}  // namespace hla::kernels
