// defines: gated_linear_recurrent_forward, gated_linear_recurrent_backward (float, double)
// (kernels/recurrence.h): the step-by-step Eigen tier of the gated linear family, what decoding
// uses. Same maths as kernels/reference/gated_linear.cpp; one OpenMP task per (batch, head).
//
// Shapes (row-major):  q, k [B,T,H,K]   v, o [B,T,H,V]   g [B,T,H] or [B,T,H,K]   h0, hT [B,H,K,V]
// Per head, the state S [K,V] is an Eigen row-major matrix:
//   S_t = diag(alpha_t) S_{t-1} + k_t v_t^T        o_t = S_t^T (s q_t)
//
// Backward: one reverse-time loop carrying dS = dL/dS_t (from dS_T = dhT, or 0), as the reference:
//   dS += s q_t do_t^T;  dq_t = s S_t do_t;  dk_t = dS v_t;  dv_t = dS^T k_t;
//   dg_t = alpha_t * sum_v (S_{t-1} * dS)   (per key; summed over keys for ScalarPerHead)
//   dS <- diag(alpha_t) dS;                  finally dh0 = dS.
// dg is the direct derivative of alpha_t S_{t-1}, not the q*dq - k*dk identity of spec 3.6: the
// identity subtracts nearly equal terms when the decay is strong, which costs float its accuracy.
// Memory: the states at every kChunk-th step are checkpointed by a forward pass; each segment's
// kChunk + 1 states are recomputed from its checkpoint and walked in reverse.
// Gradients are overwritten, never accumulated.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/eigen.h"
#include "kernels/recurrence.h"
#include "tensor/error.h"

namespace hla::kernels {
namespace {

template <class S>
using Mat = RowMajorMatrix<S>;
template <class S>
using Col = Eigen::Matrix<S, Eigen::Dynamic, 1>;
template <class S>
using Row = Eigen::Matrix<S, 1, Eigen::Dynamic>;

// dst = diag(alpha) src + x y^T, one row at a time: a row of a row-major matrix is contiguous,
// so this vectorises (Eigen's colwise() scaling of a row-major matrix does not). dst may be src.
template <class S, class X, class Y>
void decay_add_outer(const Mat<S>& src, const Col<S>& alpha, const X& x, const Y& y, Mat<S>& dst) {
  for (Eigen::Index i = 0; i < src.rows(); ++i) dst.row(i) = alpha(i) * src.row(i) + x(i) * y;
}

// The rows of one head (b, h): pointers to step t = 0 and the stride between steps.
template <class S>
struct HeadRows {
  const S* base;
  int64_t stride, width;
  Eigen::Map<const Col<S>> col(int64_t t) const { return {base + t * stride, width}; }
  Eigen::Map<const Row<S>> row(int64_t t) const { return {base + t * stride, width}; }
};

// alpha_t of one head as a K-vector, for every gate kind.
template <class S>
struct HeadDecay {
  GateKind kind;
  const S* g;      // gate of (b, h) at t = 0 (null without a gate tensor)
  int64_t stride;  // between steps: H*K (PerKey) or H (ScalarPerHead)
  S fixed;         // the constant decay of None (1) and FixedPerHead (gamma_h)
  void at(int64_t t, Col<S>& alpha) const {
    if (kind == GateKind::PerKey)
      alpha = Eigen::Map<const Col<S>>(g + t * stride, alpha.size()).array().exp().matrix();
    else if (kind == GateKind::ScalarPerHead)
      alpha.setConstant(std::exp(g[t * stride]));
    else
      alpha.setConstant(fixed);
  }
};

template <class S>
struct Heads {
  const GatedLinearArgs<S>& a;
  int64_t T, H, K, V;
  int64_t qk0(int64_t b, int64_t h) const { return (b * T * H + h) * K; }
  int64_t v0(int64_t b, int64_t h) const { return (b * T * H + h) * V; }
  int64_t state0(int64_t b, int64_t h) const { return (b * H + h) * K * V; }
  HeadRows<S> rows_k(const S* p, int64_t b, int64_t h) const { return {p + qk0(b, h), H * K, K}; }
  HeadRows<S> rows_v(const S* p, int64_t b, int64_t h) const { return {p + v0(b, h), H * V, V}; }
  HeadDecay<S> decay(int64_t b, int64_t h) const {
    switch (a.gate) {
      case GateKind::PerKey:
        return {a.gate, a.g + qk0(b, h), H * K, S(1)};
      case GateKind::ScalarPerHead:
        return {a.gate, a.g + b * T * H + h, H, S(1)};
      case GateKind::FixedPerHead:
        return {a.gate, nullptr, 0, static_cast<S>(std::exp(retention_log_gamma(h)))};
      case GateKind::None:
        break;
    }
    return {a.gate, nullptr, 0, S(1)};
  }
  Mat<S> initial_state(int64_t b, int64_t h) const {
    if (!a.h0) return Mat<S>::Zero(K, V);
    return Eigen::Map<const Mat<S>>(a.h0 + state0(b, h), K, V);
  }
};

template <class S>
Heads<S> heads_of(const GatedLinearArgs<S>& a) {
  check_rec_args(a, "gated_linear_recurrent");
  const RecDims& d = a.d;
  return {a, d.T, d.H, d.K, d.V};
}

}  // namespace

template <class S>
void gated_linear_recurrent_forward(const GatedLinearArgs<S>& a, const GatedLinearOut<S>& out) {
  const Heads<S> hd = heads_of(a);
  HLA_CHECK(out.o, "o is required");
  const int64_t H = hd.H, K = hd.K, V = hd.V, T = hd.T;
  const S scale = static_cast<S>(a.scale);

#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < a.d.B * H; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    const auto q = hd.rows_k(a.q, b, h), k = hd.rows_k(a.k, b, h);
    const auto v = hd.rows_v(a.v, b, h);
    const HeadDecay<S> decay = hd.decay(b, h);
    Mat<S> state = hd.initial_state(b, h);
    Col<S> alpha(K);
    for (int64_t t = 0; t < T; ++t) {
      decay.at(t, alpha);
      decay_add_outer(state, alpha, k.col(t), v.row(t), state);
      Eigen::Map<Row<S>> o(out.o + hd.v0(b, h) + t * H * V, V);
      o.noalias() = (scale * q.row(t)) * state;
    }
    if (out.hT) Eigen::Map<Mat<S>>(out.hT + hd.state0(b, h), K, V) = state;
  }
}

template <class S>
void gated_linear_recurrent_backward(const GatedLinearArgs<S>& a, const GatedLinearGrad<S>& grad) {
  const Heads<S> hd = heads_of(a);
  HLA_CHECK(grad.dout && grad.dq && grad.dk && grad.dv, "dout, dq, dk and dv are required");
  const bool per_key = a.gate == GateKind::PerKey;
  const bool want_dg = per_key || a.gate == GateKind::ScalarPerHead;
  HLA_CHECK(!want_dg || grad.dg, "dg is required for a gate tensor");
  const int64_t H = hd.H, K = hd.K, V = hd.V, T = hd.T;
  const int64_t n_segments = (T + kChunk - 1) / kChunk;
  const S scale = static_cast<S>(a.scale);

#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < a.d.B * H; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    const auto q = hd.rows_k(a.q, b, h), k = hd.rows_k(a.k, b, h);
    const auto v = hd.rows_v(a.v, b, h), dout = hd.rows_v(grad.dout, b, h);
    const HeadDecay<S> decay = hd.decay(b, h);
    const int64_t qk0 = hd.qk0(b, h), v0 = hd.v0(b, h);
    Col<S> alpha(K);

    // checkpoints[c] = the state before step c * kChunk
    std::vector<Mat<S>> checkpoints(n_segments);
    Mat<S> state = hd.initial_state(b, h);
    for (int64_t t = 0; t < T; ++t) {
      if (t % kChunk == 0) checkpoints[t / kChunk] = state;
      decay.at(t, alpha);
      decay_add_outer(state, alpha, k.col(t), v.row(t), state);
    }

    // dS_t = s q_t do_t^T + diag(alpha_{t+1}) dS_{t+1}, with dS_{T+1} := dhT and alpha_{T+1} := 1
    Mat<S> dS = Mat<S>::Zero(K, V);
    if (grad.dhT) dS = Eigen::Map<const Mat<S>>(grad.dhT + hd.state0(b, h), K, V);
    Col<S> alpha_next = Col<S>::Ones(K);
    std::vector<Mat<S>> states(kChunk + 1, Mat<S>(K, V));  // states[r]: before step t0 + r
    for (int64_t c = n_segments - 1; c >= 0; --c) {
      const int64_t t0 = c * kChunk, n = std::min(kChunk, T - t0);
      states[0] = checkpoints[c];
      for (int64_t r = 0; r < n; ++r) {
        decay.at(t0 + r, alpha);
        decay_add_outer(states[r], alpha, k.col(t0 + r), v.row(t0 + r), states[r + 1]);
      }
      for (int64_t r = n - 1; r >= 0; --r) {
        const int64_t t = t0 + r;
        decay_add_outer(dS, alpha_next, scale * q.col(t), dout.row(t), dS);
        Eigen::Map<Col<S>>(grad.dq + qk0 + t * H * K, K).noalias() =
            scale * (states[r + 1] * dout.col(t));
        Eigen::Map<Col<S>>(grad.dk + qk0 + t * H * K, K).noalias() = dS * v.col(t);
        Eigen::Map<Row<S>>(grad.dv + v0 + t * H * V, V).noalias() = k.row(t) * dS;
        decay.at(t, alpha_next);
        if (want_dg) {
          const Col<S> dg = alpha_next.cwiseProduct(states[r].cwiseProduct(dS).rowwise().sum());
          if (per_key)
            Eigen::Map<Col<S>>(grad.dg + qk0 + t * H * K, K) = dg;
          else
            grad.dg[(b * T + t) * H + h] = dg.sum();
        }
      }
    }
    dS = alpha_next.asDiagonal() * dS;  // dh0 = diag(alpha_1) dS_1
    if (grad.dh0) Eigen::Map<Mat<S>>(grad.dh0 + hd.state0(b, h), K, V) = dS;
  }
}

template void gated_linear_recurrent_forward<float>(const GatedLinearArgs<float>&,
                                                    const GatedLinearOut<float>&);
template void gated_linear_recurrent_forward<double>(const GatedLinearArgs<double>&,
                                                     const GatedLinearOut<double>&);
template void gated_linear_recurrent_backward<float>(const GatedLinearArgs<float>&,
                                                     const GatedLinearGrad<float>&);
template void gated_linear_recurrent_backward<double>(const GatedLinearArgs<double>&,
                                                      const GatedLinearGrad<double>&);

}  // namespace hla::kernels
