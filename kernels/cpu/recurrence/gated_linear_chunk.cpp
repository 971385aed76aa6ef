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
// Scalar gates use an [n,n] mask exp(G_r - G_j). Per-key gates build A by sub-chunks of
// kSubChunk = 16 rows (fla's secondary chunking, spec 3.5). For the rows r of sub-chunk a, which
// starts at row f, and every earlier column j < f, with the reference G_ref = G_f:
//   A_rj = s sum_d (q_rd e^{G_rd - G_ref,d}) (k_jd e^{G_ref,d - G_jd})      one [16,f] product
// Since G is non-increasing, G_r <= G_ref <= G_j: both factors are exps of differences <= 0, so
// neither overflows, and their product is e^{G_r - G_j} (an underflowing factor means a product
// below the underflow too). Scaling the whole chunk by e^{G_r} and e^{-G_j} instead would
// overflow e^{-G_j} under strong decay. Within a sub-chunk (j in [f, r]) A is built pair by pair
// from exp(G_r - G_j). At n = 64 this takes ~44k exponentials per chunk and key width 64 instead of
// the ~133k of building all of A pair by pair; the rest are matrix products.
//
// Backward, chunks in reverse, carrying C = dL/dS_out from the later chunks (C = dhT at the end),
// with dA_rj = do_r . v_j and the incoming state S recomputed by a forward pass:
//   dq_r = s e^{G_r} * (S do_r)       + s sum_{j<=r} dA_rj k_j * e^{G_r - G_j}
//   dk_j = e^{G_last - G_j} * (C v_j) + s sum_{r>=j} dA_rj q_r * e^{G_r - G_j}
//   dv_j = C^T (k_j * e^{G_last - G_j}) + sum_{r>=j} A_rj do_r
//   C   <- diag(e^{G_last}) C + s (Q * e^G)^T dO          and finally dh0 = C.
// Per-key gates split the sums over j < r the same way. For the rows r of sub-chunk a and the
// earlier columns j < f, with the scaled operands Qs_r = q_r * e^{G_r - G_ref} and
// Ks_j = k_j * e^{G_ref - G_j} of A's block:
//   dq_r += e^{G_r - G_ref} * s sum_{j<f} dA_rj Ks_j,   dk_j += e^{G_ref - G_j} * s sum_r dA_rj Qs_r
// two more products per sub-chunk; the pairs within a sub-chunk are again summed pair by pair.
// dg by the identity of spec 3.6 (dg_r = sum_{u>=r} (q_u*dq_u - k_u*dk_u) + sum_v S_T*dhT), applied
// to one chunk with C in the role of dhT, and with the terms that cancel exactly taken out:
//   dg_r = sum_{u>=r} (q_u * dq_u^off - k_u * dk_u^intra)                 reverse cumsum
//        + e^{G_last} * sum_v (S * C)  +  sum_{j<r} k_j * dk_j^inter       prefix sum
// where dq^off leaves out the j = r term of dq_r (it equals the r = j term of dk_r), dk^intra is
// the strictly later part of dk's chunk sum, and dk^inter its C part. Every remaining term pairs
// a write before step r with a read or a state gradient at or after r (what dg_r measures), so
// strong decay leaves no large terms to cancel, which would cost float its accuracy.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/eigen.h"
#include "kernels/recurrence.h"
#include "tensor/error.h"

namespace hla::kernels {
namespace {

// rows per sub-chunk of the per-key intra-chunk blocks (fla's secondary chunking)
constexpr int64_t kSubChunk = 16;

template <class S>
using Mat = RowMajorMatrix<S>;
template <class S>
using Col = Eigen::Matrix<S, Eigen::Dynamic, 1>;
template <class S>
using Row = Eigen::Matrix<S, 1, Eigen::Dynamic>;
template <class S>  // n consecutive time steps of one head: rows `stride` apart
using Rows = Eigen::Map<const Mat<S>, 0, Eigen::OuterStride<>>;
template <class S>
using RowsOut = Eigen::Map<Mat<S>, 0, Eigen::OuterStride<>>;

// out = exp(exponent): the exponent formed in double, rounded to S, the exp evaluated in S. (The
// rounding is a plain loop, which GCC vectorises; Eigen's double -> float cast is not vectorised,
// and one fused expression would fall back to a scalar exp.)
template <class S>
void exp_rounded(const Eigen::Ref<const Mat<double>>& exponent, Eigen::Ref<Mat<S>> out) {
  for (int64_t i = 0; i < exponent.rows(); ++i) {
    const double* from = exponent.row(i).data();
    S* to = out.row(i).data();
    for (int64_t c = 0; c < exponent.cols(); ++c) to[c] = static_cast<S>(from[c]);
  }
  out = out.array().exp().matrix();
}

// The decay factors of one chunk of one head. G is kept in double: a difference G_r - G_j of
// two float cumulative sums would carry an error of eps * |G| (not eps * |G_r - G_j|), and |G|
// reaches hundreds under strong decay.
template <class S>
struct ChunkDecay {
  Mat<double> G;      // [n,K] chunk-local cumulative log decay
  Mat<S> to_row;      // [n,K] e^{G_r}: the incoming state as seen by row r
  Mat<S> to_end;      // [n,K] e^{G_last - G_r}: row r's write as seen at the chunk end
  Col<S> over_chunk;  // [K] e^{G_last}

  // Row i < count of out [count,K] = e^{G_ref - G_{first+i}}, or with rows_after_ref
  // e^{G_{first+i} - G_ref}; as exp_rounded, with the difference formed in the same loop.
  void exp_of_differences(int64_t first, int64_t count, int64_t ref, bool rows_after_ref,
                          Eigen::Ref<Mat<S>> out) const {
    const int64_t K = G.cols();
    const double* g_ref = G.row(ref).data();
    for (int64_t i = 0; i < count; ++i) {
      const double* g_row = G.row(first + i).data();
      S* to = out.row(i).data();
      if (rows_after_ref)
        for (int64_t c = 0; c < K; ++c) to[c] = static_cast<S>(g_row[c] - g_ref[c]);
      else
        for (int64_t c = 0; c < K; ++c) to[c] = static_cast<S>(g_ref[c] - g_row[c]);
    }
    out.topRows(count) = out.topRows(count).array().exp().matrix();
  }
  // e^{G_r - G_j} for the columns j = first..r of row r's sub-chunk, into the top rows of
  // decay [kSubChunk,K] (per-key gates)
  void pairs_into(int64_t first, int64_t r, Mat<S>& decay) const {
    exp_of_differences(first, r - first + 1, r, false, decay);
  }
  // The scalings of the sub-chunk rows [first, first + m) against all earlier columns j < first,
  // relative to G_ref = G_first (per-key gates):
  //   row_from_ref = e^{G_r - G_ref} [m,K],   ref_from_col = e^{G_ref - G_j} [first,K]
  void sub_chunk_scalings(int64_t first, int64_t m, Mat<S>& row_from_ref,
                          Mat<S>& ref_from_col) const {
    row_from_ref.resize(m, G.cols());
    ref_from_col.resize(first, G.cols());
    exp_of_differences(first, m, first, true, row_from_ref);
    exp_of_differences(0, first, first, false, ref_from_col);
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
  bool per_key;  // PerKey gate: A is built by sub-chunks
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
      if (a.gate == GateKind::PerKey) {  // a plain loop for the cast, as in exp_rounded
        const S* g = a.g + qk0(b, h) + t * H * K;
        double* G_r = d.G.row(r).data();
        for (int64_t c = 0; c < K; ++c) G_r[c] = static_cast<double>(g[c]);
      } else if (a.gate == GateKind::ScalarPerHead)
        d.G.row(r).setConstant(static_cast<double>(a.g[(b * T + t) * H + h]));
      else
        d.G.row(r).setConstant(log_gamma);
      if (r > 0) d.G.row(r) += d.G.row(r - 1);
    }
    d.to_row.resize(n, K);
    d.to_end.resize(n, K);
    exp_rounded<S>(d.G, d.to_row);
    d.exp_of_differences(0, n, n - 1, false, d.to_end);
    d.over_chunk = d.to_row.row(n - 1).transpose();
  }

  // A [n,n] of one chunk (lower triangle, diagonal included).
  Mat<S> scores(const Rows<S>& q, const Rows<S>& k, const ChunkDecay<S>& d) const {
    const int64_t n = q.rows();
    const S s = static_cast<S>(a.scale);
    if (!per_key) return (s * (q * k.transpose())).cwiseProduct(d.scalar_mask());
    Mat<S> A = Mat<S>::Zero(n, n);
    Mat<S> row_from_ref, ref_from_col;
    Mat<S> kw(kSubChunk, K);  // k_j * e^{G_r - G_j} within a sub-chunk
    for (int64_t first = 0; first < n; first += kSubChunk) {
      const int64_t m = std::min(kSubChunk, n - first);
      if (first > 0) {
        d.sub_chunk_scalings(first, m, row_from_ref, ref_from_col);
        A.block(first, 0, m, first).noalias() =
            (s * q.middleRows(first, m).cwiseProduct(row_from_ref)) *
            k.topRows(first).cwiseProduct(ref_from_col).transpose();
      }
      for (int64_t r = first; r < first + m; ++r) {
        const int64_t width = r - first + 1;
        d.pairs_into(first, r, kw);
        kw.topRows(width) = kw.topRows(width).cwiseProduct(k.middleRows(first, width));
        A.row(r).segment(first, width).noalias() = s * q.row(r) * kw.topRows(width).transpose();
      }
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
    Mat<S> row_from_ref, ref_from_col, q_scaled, k_scaled, block_sum;
    // within a sub-chunk: e^{G_r - G_j} and k_j * e^{G_r - G_j}, j <= r
    Mat<S> decay(kSubChunk, K), kw(kSubChunk, K);
    for (int64_t first = 0; first < n; first += kSubChunk) {
      const int64_t m = std::min(kSubChunk, n - first);
      if (first > 0) {
        d.sub_chunk_scalings(first, m, row_from_ref, ref_from_col);
        q_scaled = q.middleRows(first, m).cwiseProduct(row_from_ref);
        k_scaled = k.topRows(first).cwiseProduct(ref_from_col);
        A.block(first, 0, m, first).noalias() = (s * q_scaled) * k_scaled.transpose();
        const auto dA_block = dA.block(first, 0, m, first);
        block_sum.noalias() = (s * dA_block) * k_scaled;
        dq.middleRows(first, m) += block_sum.cwiseProduct(row_from_ref);
        block_sum.noalias() = (s * dA_block.transpose()) * q_scaled;
        dk.topRows(first) += block_sum.cwiseProduct(ref_from_col);
      }
      for (int64_t r = first; r < first + m; ++r) {
        const int64_t width = r - first + 1;  // columns first..r
        d.pairs_into(first, r, decay);
        kw.topRows(width) = decay.topRows(width).cwiseProduct(k.middleRows(first, width));
        A.row(r).segment(first, width).noalias() = s * q.row(r) * kw.topRows(width).transpose();
        if (width == 1) continue;
        dq.row(r).noalias() += s * dA.row(r).segment(first, width - 1) * kw.topRows(width - 1);
        for (int64_t i = 0; i < width - 1; ++i)  // column j = first + i < r
          dk.row(first + i) += (s * dA(r, first + i)) * q.row(r).cwiseProduct(decay.row(i));
      }
    }
  }
};

template <class S>
Problem<S> problem_of(const GatedLinearArgs<S>& a) {
  check_rec_args(a, "gated_linear_chunk");
  const RecDims& d = a.d;
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
