// defines: gated_linear_chunk_forward, gated_linear_chunk_backward (float, double)
// (kernels/recurrence.h): the chunked Eigen tier of the gated linear family (spec 3.5, 3.6, 4.5).
// Same function as kernels/reference/gated_linear.cpp, computed kChunk = 64 steps at a time with
// matrix products; one OpenMP task per (batch, head). Gradients are overwritten.
//
// Shapes (row-major):  q, k [B,T,H,K]   v, o [B,T,H,V]   g [B,T,H] or [B,T,H,K]   h0, hT [B,H,K,V]
//
// A chunk holds rows r = 0..n-1 (n = kChunk, or less for the last one). With the chunk-local
// cumulative log decay G_r = g_0 + ... + g_r (per key) and the incoming state S:
//   A_rj   = s sum_d q_rd k_jd exp(G_rd - G_jd)  for j <= r, else 0              [n,n]
//   o_r    = s (q_r * e^{G_r})^T S + sum_j A_rj v_j
//   S_out  = diag(e^{G_last}) S + sum_j (k_j * e^{G_last - G_j}) v_j^T
// Every factor is exp of a difference that is <= 0: nothing is divided by a cumulative decay.
// Per-key gates build A pair by pair in log space; scalar gates use an [n,n] mask exp(G_r - G_j).
//
// Backward, chunks in reverse, carrying C = dL/dS_out from the later chunks (C = dhT at the end),
// with dA_rj = do_r . v_j and the incoming state S recomputed by a forward pass:
//   dq_r = s e^{G_r} * (S do_r)       + s sum_{j<=r} dA_rj k_j * e^{G_r - G_j}
//   dk_j = e^{G_last - G_j} * (C v_j) + s sum_{r>=j} dA_rj q_r * e^{G_r - G_j}
//   dv_j = C^T (k_j * e^{G_last - G_j}) + sum_{r>=j} A_rj do_r
//   C   <- diag(e^{G_last}) C + s (Q * e^G)^T dO          and finally dh0 = C.
// dg by the identity of spec 3.6 (dg_r = sum_{u>=r} (q_u*dq_u - k_u*dk_u) + sum_v S_T*dhT), applied
// to one chunk with C in the role of dhT, and with the terms that cancel exactly taken out:
//   dg_r = sum_{u>=r} (q_u * dq_u^off - k_u * dk_u^intra)                 reverse cumsum
//        + e^{G_last} * sum_v (S * C)  +  sum_{j<r} k_j * dk_j^inter       prefix sum
// where dq^off leaves out the j = r term of dq_r (it equals the r = j term of dk_r), dk^intra is
// the strictly later part of dk's chunk sum, and dk^inter its C part. Every remaining term pairs
// a write before step r with a read or a state gradient at or after r (what dg_r measures), so
// strong decay leaves no large terms to cancel, which would cost float its accuracy.
// GCC 12 reports false (maybe-)uninitialized warnings inside its own AVX-512 intrinsics headers
// when Eigen code is inlined (GCC bug 105593); the pragma covers those header lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Dense>
#pragma GCC diagnostic pop
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/recurrence.h"
#include "tensor/error.h"

namespace hla::kernels {
namespace {

template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using Col = Eigen::Matrix<S, Eigen::Dynamic, 1>;
template <class S>
using Row = Eigen::Matrix<S, 1, Eigen::Dynamic>;
template <class S>  // n consecutive time steps of one head: rows `stride` apart
using Rows = Eigen::Map<const Mat<S>, 0, Eigen::OuterStride<>>;
template <class S>
using RowsOut = Eigen::Map<Mat<S>, 0, Eigen::OuterStride<>>;

// out = exp(exponent): the exponent formed in double, rounded to S, the exp evaluated in S. (Two
// statements: Eigen has no vectorised double -> float cast, and one fused expression would fall
// back to a scalar exp.)
template <class S>
void exp_rounded(const Eigen::Ref<const Mat<double>>& exponent, Eigen::Ref<Mat<S>> out) {
  out = exponent.template cast<S>();
  out = out.array().exp().matrix();
}

// The decay factors of one chunk of one head. G is kept in double: a difference G_r - G_j of
// two float cumulative sums would carry an error of eps * |G| (not eps * |G_r - G_j|), and |G|
// reaches hundreds under strong decay.
template <class S>
struct ChunkDecay {
  Mat<double> G;                 // [n,K] chunk-local cumulative log decay
  Mat<S> to_row;                 // [n,K] e^{G_r}: the incoming state as seen by row r
  Mat<S> to_end;                 // [n,K] e^{G_last - G_r}: row r's write as seen at the chunk end
  Col<S> over_chunk;             // [K] e^{G_last}
  mutable Mat<double> exponent;  // scratch [n,K]

  // rows j <= r of e^{G_r - G_j} [n,K] (per-key gates)
  void pairs_into(int64_t r, Mat<S>& decay) const {
    exponent.topRows(r + 1) = -(G.topRows(r + 1).rowwise() - G.row(r));
    exp_rounded<S>(exponent.topRows(r + 1), decay.topRows(r + 1));
  }
  // M_rj = e^{G_r - G_j} for j <= r, else 0 [n,n] (scalar gates: every column of G is the same)
  Mat<S> scalar_mask() const {
    const int64_t n = G.rows();
    const Mat<double> mask_exponent =
        G.col(0).replicate(1, n) - G.col(0).transpose().replicate(n, 1);
    Mat<S> M(n, n);
    exp_rounded<S>(mask_exponent, M);
    M.template triangularView<Eigen::StrictlyUpper>().setZero();
    return M;
  }
};

template <class S>
struct Problem {
  const GatedLinearArgs<S>& a;
  int64_t T, H, K, V;
  bool per_key;  // PerKey gate: A is built pair by pair
  int64_t qk0(int64_t b, int64_t h) const { return (b * T * H + h) * K; }
  int64_t v0(int64_t b, int64_t h) const { return (b * T * H + h) * V; }
  int64_t state0(int64_t b, int64_t h) const { return (b * H + h) * K * V; }
  Rows<S> rows_k(const S* p, int64_t b, int64_t h, int64_t c0, int64_t n) const {
    return {p + qk0(b, h) + c0 * H * K, n, K, Eigen::OuterStride<>(H * K)};
  }
  Rows<S> rows_v(const S* p, int64_t b, int64_t h, int64_t c0, int64_t n) const {
    return {p + v0(b, h) + c0 * H * V, n, V, Eigen::OuterStride<>(H * V)};
  }
  RowsOut<S> out_k(S* p, int64_t b, int64_t h, int64_t c0, int64_t n) const {
    return {p + qk0(b, h) + c0 * H * K, n, K, Eigen::OuterStride<>(H * K)};
  }
  RowsOut<S> out_v(S* p, int64_t b, int64_t h, int64_t c0, int64_t n) const {
    return {p + v0(b, h) + c0 * H * V, n, V, Eigen::OuterStride<>(H * V)};
  }
  Mat<S> initial_state(int64_t b, int64_t h) const {
    if (!a.h0) return Mat<S>::Zero(K, V);
    return Eigen::Map<const Mat<S>>(a.h0 + state0(b, h), K, V);
  }

  // The decay factors of rows [c0, c0+n) of head (b, h).
  void decay(int64_t b, int64_t h, int64_t c0, int64_t n, ChunkDecay<S>& d) const {
    d.G.resize(n, K);
    const double log_gamma = a.gate == GateKind::FixedPerHead ? retention_log_gamma(h) : 0.0;
    for (int64_t r = 0; r < n; ++r) {
      const int64_t t = c0 + r;
      if (a.gate == GateKind::PerKey)
        d.G.row(r) =
            Eigen::Map<const Row<S>>(a.g + qk0(b, h) + t * H * K, K).template cast<double>();
      else if (a.gate == GateKind::ScalarPerHead)
        d.G.row(r).setConstant(static_cast<double>(a.g[(b * T + t) * H + h]));
      else
        d.G.row(r).setConstant(log_gamma);
      if (r > 0) d.G.row(r) += d.G.row(r - 1);
    }
    d.exponent = -(d.G.rowwise() - d.G.row(n - 1));
    d.to_row.resize(n, K);
    d.to_end.resize(n, K);
    exp_rounded<S>(d.G, d.to_row);
    exp_rounded<S>(d.exponent, d.to_end);
    d.over_chunk = d.to_row.row(n - 1).transpose();
  }

  // A [n,n] of one chunk (lower triangle, diagonal included).
  Mat<S> scores(const Rows<S>& q, const Rows<S>& k, const ChunkDecay<S>& d) const {
    const int64_t n = q.rows();
    const S s = static_cast<S>(a.scale);
    if (!per_key) return (s * (q * k.transpose())).cwiseProduct(d.scalar_mask());
    Mat<S> A = Mat<S>::Zero(n, n);
    Mat<S> kw(n, K);  // k_j * e^{G_r - G_j}, j <= r
    for (int64_t r = 0; r < n; ++r) {
      d.pairs_into(r, kw);
      kw.topRows(r + 1) = kw.topRows(r + 1).cwiseProduct(k.topRows(r + 1));
      A.row(r).head(r + 1).noalias() = s * q.row(r) * kw.topRows(r + 1).transpose();
    }
    return A;
  }

  // Backward of the intra-chunk part: A (as scores()), and the j < r terms of dq and dk:
  //   dq_r += s sum_{j<r} dA_rj k_j * e^{G_r - G_j}
  //   dk_j += s sum_{r>j} dA_rj q_r * e^{G_r - G_j}
  void scores_backward(const Rows<S>& q, const Rows<S>& k, const ChunkDecay<S>& d, const Mat<S>& dA,
                       Mat<S>& A, Mat<S>& dq, Mat<S>& dk) const {
    const int64_t n = q.rows();
    const S s = static_cast<S>(a.scale);
    if (!per_key) {
      const Mat<S> M = d.scalar_mask();
      A = (s * (q * k.transpose())).cwiseProduct(M);
      Mat<S> P = (s * dA).cwiseProduct(M);
      P.diagonal().setZero();
      dq.noalias() += P * k;
      dk.noalias() += P.transpose() * q;
      return;
    }
    A.setZero(n, n);
    Mat<S> decay(n, K), kw(n, K);  // e^{G_r - G_j} and k_j * e^{G_r - G_j}, j <= r
    for (int64_t r = 0; r < n; ++r) {
      d.pairs_into(r, decay);
      kw.topRows(r + 1) = decay.topRows(r + 1).cwiseProduct(k.topRows(r + 1));
      A.row(r).head(r + 1).noalias() = s * q.row(r) * kw.topRows(r + 1).transpose();
      if (r == 0) continue;
      dq.row(r).noalias() += s * dA.row(r).head(r) * kw.topRows(r);
      dk.topRows(r) +=
          ((s * dA.row(r).head(r).transpose()) * q.row(r)).cwiseProduct(decay.topRows(r));
    }
  }
};

template <class S>
Problem<S> problem_of(const GatedLinearArgs<S>& a) {
  const RecDims& d = a.d;
  HLA_CHECK(d.B > 0 && d.T > 0 && d.H > 0 && d.K > 0 && d.V > 0,
            "B,T,H,K,V = " << d.B << "," << d.T << "," << d.H << "," << d.K << "," << d.V);
  HLA_CHECK(a.q && a.k && a.v, "q, k and v are required");
  const bool has_gate = a.gate == GateKind::ScalarPerHead || a.gate == GateKind::PerKey;
  HLA_CHECK(has_gate == (a.g != nullptr), "g must be given exactly for ScalarPerHead / PerKey");
  return {a, d.T, d.H, d.K, d.V, a.gate == GateKind::PerKey};
}

// S <- diag(e^{G_last}) S + (k * e^{G_last - G})^T v: the state after the chunk.
template <class S>
void pass_state(const Rows<S>& k, const Rows<S>& v, const ChunkDecay<S>& d, Mat<S>& state) {
  state = d.over_chunk.asDiagonal() * state;
  state.noalias() += k.cwiseProduct(d.to_end).transpose() * v;
}

}  // namespace

template <class S>
void gated_linear_chunk_forward(const GatedLinearArgs<S>& a, const GatedLinearOut<S>& out) {
  const Problem<S> p = problem_of(a);
  HLA_CHECK(out.o, "o is required");
  const S s = static_cast<S>(a.scale);

#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < a.d.B * p.H; ++bh) {
    const int64_t b = bh / p.H, h = bh % p.H;
    Mat<S> state = p.initial_state(b, h);
    ChunkDecay<S> d;
    for (int64_t c0 = 0; c0 < p.T; c0 += kChunk) {
      const int64_t n = std::min(kChunk, p.T - c0);
      const Rows<S> q = p.rows_k(a.q, b, h, c0, n), k = p.rows_k(a.k, b, h, c0, n);
      const Rows<S> v = p.rows_v(a.v, b, h, c0, n);
      p.decay(b, h, c0, n, d);
      RowsOut<S> o = p.out_v(out.o, b, h, c0, n);
      o.noalias() = (s * q.cwiseProduct(d.to_row)) * state;
      o.noalias() += p.scores(q, k, d) * v;
      pass_state(k, v, d, state);
    }
    if (out.hT) Eigen::Map<Mat<S>>(out.hT + p.state0(b, h), p.K, p.V) = state;
  }
}

template <class S>
void gated_linear_chunk_backward(const GatedLinearArgs<S>& a, const GatedLinearGrad<S>& grad) {
  const Problem<S> p = problem_of(a);
  HLA_CHECK(grad.dout && grad.dq && grad.dk && grad.dv, "dout, dq, dk and dv are required");
  const bool want_dg = p.per_key || a.gate == GateKind::ScalarPerHead;
  HLA_CHECK(!want_dg || grad.dg, "dg is required for a gate tensor");
  const S s = static_cast<S>(a.scale);
  const int64_t T = p.T, H = p.H, K = p.K, V = p.V;
  const int64_t n_chunks = (T + kChunk - 1) / kChunk;

#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < a.d.B * H; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    ChunkDecay<S> d;
    // states[c]: the state entering chunk c; states[n_chunks] = S_T
    std::vector<Mat<S>> states(n_chunks + 1);
    states[0] = p.initial_state(b, h);
    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t c0 = c * kChunk, n = std::min(kChunk, T - c0);
      p.decay(b, h, c0, n, d);
      states[c + 1] = states[c];
      pass_state(p.rows_k(a.k, b, h, c0, n), p.rows_v(a.v, b, h, c0, n), d, states[c + 1]);
    }

    Mat<S> carried = Mat<S>::Zero(K, V);  // C = dL/dS at the end of the current chunk
    if (grad.dhT) carried = Eigen::Map<const Mat<S>>(grad.dhT + p.state0(b, h), K, V);
    Mat<S> A, dq, dk_inter, dk_intra;
    for (int64_t c = n_chunks - 1; c >= 0; --c) {
      const int64_t c0 = c * kChunk, n = std::min(kChunk, T - c0);
      const Rows<S> q = p.rows_k(a.q, b, h, c0, n), k = p.rows_k(a.k, b, h, c0, n);
      const Rows<S> v = p.rows_v(a.v, b, h, c0, n), dout = p.rows_v(grad.dout, b, h, c0, n);
      p.decay(b, h, c0, n, d);
      const Mat<S> dA = dout * v.transpose();

      // dq: the incoming-state part, then the j < r part; dk: the C part, then the r > j part
      dq.noalias() = dout * states[c].transpose();
      dq = s * dq.cwiseProduct(d.to_row);
      dk_inter.noalias() = v * carried.transpose();
      dk_inter = dk_inter.cwiseProduct(d.to_end);
      dk_intra.setZero(n, K);
      p.scores_backward(q, k, d, dA, A, dq, dk_intra);

      RowsOut<S> dv = p.out_v(grad.dv, b, h, c0, n);
      dv.noalias() = A.transpose() * dout;
      dv.noalias() += k.cwiseProduct(d.to_end) * carried;

      if (want_dg) {
        Mat<S> dg = q.cwiseProduct(dq) - k.cwiseProduct(dk_intra);
        for (int64_t r = n - 2; r >= 0; --r) dg.row(r) += dg.row(r + 1);
        Row<S> before =
            d.over_chunk.cwiseProduct(states[c].cwiseProduct(carried).rowwise().sum()).transpose();
        for (int64_t r = 0; r < n; ++r) {
          dg.row(r) += before;
          before += k.row(r).cwiseProduct(dk_inter.row(r));
        }
        if (p.per_key)
          p.out_k(grad.dg, b, h, c0, n) = dg;
        else
          Eigen::Map<Col<S>, 0, Eigen::InnerStride<>>(grad.dg + b * T * H + c0 * H + h, n,
                                                      Eigen::InnerStride<>(H)) = dg.rowwise().sum();
      }

      // the j = r terms: s (do_r . v_r) k_r in dq_r and s (do_r . v_r) q_r in dk_r
      const Col<S> dA_diag = s * dA.diagonal();
      p.out_k(grad.dq, b, h, c0, n) = dq + dA_diag.asDiagonal() * k;
      p.out_k(grad.dk, b, h, c0, n) = dk_inter + dk_intra + dA_diag.asDiagonal() * q;

      carried = d.over_chunk.asDiagonal() * carried;
      carried.noalias() += (s * q.cwiseProduct(d.to_row)).transpose() * dout;
    }
    if (grad.dh0) Eigen::Map<Mat<S>>(grad.dh0 + p.state0(b, h), K, V) = carried;
  }
}

template void gated_linear_chunk_forward<float>(const GatedLinearArgs<float>&,
                                                const GatedLinearOut<float>&);
template void gated_linear_chunk_forward<double>(const GatedLinearArgs<double>&,
                                                 const GatedLinearOut<double>&);
template void gated_linear_chunk_backward<float>(const GatedLinearArgs<float>&,
                                                 const GatedLinearGrad<float>&);
template void gated_linear_chunk_backward<double>(const GatedLinearArgs<double>&,
                                                  const GatedLinearGrad<double>&);

}  // namespace hla::kernels
