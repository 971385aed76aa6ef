// defines: softmax_attention_tiled_forward, softmax_attention_tiled_backward (float, double)
//
// Flash-style softmax attention on the CPU: the same function as
// kernels/reference/softmax_attention.cpp (which states the maths), computed on tiles of
// kTile queries x kTile keys with an online softmax, so no T x T matrix is ever formed.
// Layouts: q [B,T,H,K]; k [B,T,Hkv,K]; v [B,T,Hkv,V]; o [B,T,H,V]; lse [B,H,T]; row-major.
// Key j is allowed for query i iff j <= i (causal) and j >= i - W + 1 (window W > 0).
// GQA: query head h reads kv head h / (H / Hkv).
//
// Forward, per (b, h, query tile), over the key tiles that hold allowed keys:
//   S   = scale Q K^T (masked to -inf)       m' = max(m, rowmax S)
//   P   = exp(S - m') (masked: 0)            l  = exp(m - m') l + rowsum P
//   acc = diag(exp(m - m')) acc + P V        finally o = acc / l, lse = m + log l
// Backward (flash-attention-2), per (b, kv head, key tile), over the query heads of the group
// and the query tiles that see the tile:
//   P = exp(scale Q K^T - lse),  dV += P^T dO,  dP = dO V^T,  dS = P o (dP - D),
//   dK += scale dS^T Q,  dQ += scale dS K,   with D_i = dO_i . O_i.
// Each (b, kv head) task owns dk, dv of its kv head and dq of its query heads: no races.
// Backward overwrites dq, dk, dv.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/cpu/eigen.h"
#include "kernels/recurrence.h"
#include "tensor/error.h"

namespace hla::kernels {
namespace {

constexpr int64_t kTile = 64;  // queries and keys per tile

template <class R>
using Mat = RowMajorMatrix<R>;
template <class R>
using Vec = Eigen::Matrix<R, Eigen::Dynamic, 1>;
template <class R>
using Rows = Eigen::Map<Mat<R>, 0, Eigen::OuterStride<>>;
template <class R>
using ConstRows = Eigen::Map<const Mat<R>, 0, Eigen::OuterStride<>>;

// Index arithmetic and masking of one op call.
template <class R>
struct Attn {
  const AttentionArgs<R>& a;
  int64_t T, H, Hkv, K, V, group;

  explicit Attn(const AttentionArgs<R>& args)
      : a(args), T(args.d.T), H(args.d.H), Hkv(args.d.Hkv), K(args.d.K), V(args.d.V),
        group(args.d.Hkv > 0 ? args.d.H / args.d.Hkv : 0) {}

  // n rows from time t0 of head h of a [B,T,heads,D] tensor
  template <class P>
  static auto rows(P* x, int64_t b, int64_t t0, int64_t n, int64_t T, int64_t heads, int64_t h,
                   int64_t D) {
    using M = std::conditional_t<std::is_const_v<P>, ConstRows<R>, Rows<R>>;
    return M(x + ((b * T + t0) * heads + h) * D, n, D, Eigen::OuterStride<>(heads * D));
  }
  bool allowed(int64_t i, int64_t j) const {
    return (!a.causal || j <= i) && (a.window <= 0 || j >= i - a.window + 1);
  }
  // Keys seen by queries [i0, i1): [first, last]
  int64_t first_key(int64_t i0) const {
    return a.window > 0 ? std::max<int64_t>(0, i0 - a.window + 1) : 0;
  }
  int64_t last_key(int64_t i1) const { return a.causal ? i1 - 1 : T - 1; }
  // Queries that see keys [j0, j1): [first, last]
  int64_t first_query(int64_t j0) const { return a.causal ? j0 : 0; }
  int64_t last_query(int64_t j1) const {
    return a.window > 0 ? std::min(T - 1, j1 - 1 + a.window - 1) : T - 1;
  }
  // True when some pair of the tile [i0,i1) x [j0,j1) is masked.
  bool tile_needs_mask(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    return (a.causal && j1 - 1 > i0) || (a.window > 0 && j0 < i1 - 1 - a.window + 1);
  }
  // Sets the masked entries of the tile at (i0, j0) to value.
  void mask(Mat<R>& X, int64_t i0, int64_t j0, R value) const {
    for (int64_t i = 0; i < X.rows(); ++i)
      for (int64_t j = 0; j < X.cols(); ++j)
        if (!allowed(i0 + i, j0 + j)) X(i, j) = value;
  }
};

// P_ij = exp(S_ij - shift_i), row by row (a scalar per row keeps Eigen's exp vectorised; a
// broadcast column across a row-major matrix would not be).
template <class R, class Shift>
void exp_shifted_rows(const Mat<R>& S, const Shift& shift, Mat<R>& P) {
  P.resize(S.rows(), S.cols());
  for (int64_t i = 0; i < S.rows(); ++i) P.row(i) = (S.row(i).array() - shift(i)).exp();
}

template <class R>
void check_args(const AttentionArgs<R>& a) {
  const AttnDims& d = a.d;
  HLA_CHECK(d.B > 0 && d.T > 0 && d.H > 0 && d.Hkv > 0 && d.K > 0 && d.V > 0,
            "B,T,H,Hkv,K,V = " << d.B << "," << d.T << "," << d.H << "," << d.Hkv << "," << d.K
                               << "," << d.V);
  HLA_CHECK(d.H % d.Hkv == 0, "H=" << d.H << " must be a multiple of Hkv=" << d.Hkv);
  HLA_CHECK(a.window >= 0, "window=" << a.window);
  HLA_CHECK(a.q && a.k && a.v, "q, k and v are required");
}

}  // namespace

template <class R>
void softmax_attention_tiled_forward(const AttentionArgs<R>& a, const AttentionOut<R>& out) {
  check_args(a);
  HLA_CHECK(out.o, "o is required");
  const Attn<R> at(a);
  const int64_t B = a.d.B, T = at.T, H = at.H, n_tiles = (T + kTile - 1) / kTile;
  const R scale = R(a.scale), neg_inf = -std::numeric_limits<R>::infinity();

#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t b = bh / H, h = bh % H, c = h / at.group;
      const int64_t i0 = tile * kTile, nq = std::min(kTile, T - i0);
      const Mat<R> Q = scale * Attn<R>::rows(a.q, b, i0, nq, T, H, h, at.K);
      Vec<R> m = Vec<R>::Constant(nq, neg_inf), l = Vec<R>::Zero(nq);
      Mat<R> acc = Mat<R>::Zero(nq, at.V), S, P;
      const int64_t first = at.first_key(i0), last = at.last_key(i0 + nq);
      for (int64_t j0 = first - first % kTile; j0 <= last; j0 += kTile) {
        const int64_t nk = std::min(kTile, T - j0);
        const auto Kt = Attn<R>::rows(a.k, b, j0, nk, T, at.Hkv, c, at.K);
        const auto Vt = Attn<R>::rows(a.v, b, j0, nk, T, at.Hkv, c, at.V);
        S.noalias() = Q * Kt.transpose();
        const bool masked = at.tile_needs_mask(i0, i0 + nq, j0, j0 + nk);
        if (masked) at.mask(S, i0, j0, neg_inf);
        const Vec<R> m_new = m.cwiseMax(S.rowwise().maxCoeff());
        // a row with no allowed key yet keeps m = -inf: shift it by 0 instead (no inf - inf)
        const Vec<R> shift = (m_new.array() == neg_inf).select(Vec<R>::Zero(nq), m_new);
        const Vec<R> correction = (m - shift).array().exp();
        exp_shifted_rows(S, shift, P);
        // a vectorised exp(-inf) may give a denormal rather than 0 (and denormals are very slow
        // on some CPUs): zero the masked entries exactly
        if (masked) at.mask(P, i0, j0, R(0));
        l = correction.cwiseProduct(l) + P.rowwise().sum();
        acc = correction.asDiagonal() * acc;
        acc.noalias() += P * Vt;
        m = m_new;
      }
      Attn<R>::rows(out.o, b, i0, nq, T, H, h, at.V) = l.cwiseInverse().asDiagonal() * acc;
      if (out.lse)
        Eigen::Map<Vec<R>>(out.lse + bh * T + i0, nq) = m.array() + l.array().log();
    }
}

template <class R>
void softmax_attention_tiled_backward(const AttentionArgs<R>& a, const AttentionGrad<R>& grad) {
  check_args(a);
  HLA_CHECK(grad.dout && grad.o && grad.lse && grad.dq && grad.dk && grad.dv,
            "dout, o, lse, dq, dk and dv are required");
  const Attn<R> at(a);
  const int64_t B = a.d.B, T = at.T, H = at.H, Hkv = at.Hkv;
  const R scale = R(a.scale);

  // D_i = dO_i . O_i  [B,H,T]
  std::vector<R> D(B * H * T);
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const auto dO = Attn<R>::rows(grad.dout, b, 0, T, T, H, h, at.V);
      const auto O = Attn<R>::rows(grad.o, b, 0, T, T, H, h, at.V);
      Eigen::Map<Vec<R>>(D.data() + (b * H + h) * T, T) = dO.cwiseProduct(O).rowwise().sum();
    }

#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < Hkv; ++c) {
      for (int64_t h = c * at.group; h < (c + 1) * at.group; ++h)
        Attn<R>::rows(grad.dq, b, 0, T, T, H, h, at.K).setZero();
      Mat<R> S, P, dP, dK, dV;
      for (int64_t j0 = 0; j0 < T; j0 += kTile) {
        const int64_t nk = std::min(kTile, T - j0);
        const auto Kt = Attn<R>::rows(a.k, b, j0, nk, T, Hkv, c, at.K);
        const auto Vt = Attn<R>::rows(a.v, b, j0, nk, T, Hkv, c, at.V);
        dK = Mat<R>::Zero(nk, at.K);
        dV = Mat<R>::Zero(nk, at.V);
        const int64_t first = at.first_query(j0), last = at.last_query(j0 + nk);
        for (int64_t h = c * at.group; h < (c + 1) * at.group; ++h)
          for (int64_t i0 = first - first % kTile; i0 <= last; i0 += kTile) {
            const int64_t nq = std::min(kTile, T - i0);
            const auto Q = Attn<R>::rows(a.q, b, i0, nq, T, H, h, at.K);
            const auto dO = Attn<R>::rows(grad.dout, b, i0, nq, T, H, h, at.V);
            const Eigen::Map<const Vec<R>> lse(grad.lse + (b * H + h) * T + i0, nq);
            const Eigen::Map<const Vec<R>> Di(D.data() + (b * H + h) * T + i0, nq);
            // P = exp(scale Q K^T - lse), masked entries exactly 0
            S.noalias() = scale * (Q * Kt.transpose());
            exp_shifted_rows(S, lse, P);
            if (at.tile_needs_mask(i0, i0 + nq, j0, j0 + nk)) at.mask(P, i0, j0, R(0));
            dV.noalias() += P.transpose() * dO;
            dP.noalias() = dO * Vt.transpose();
            dP = P.cwiseProduct(dP) - Di.asDiagonal() * P;  // dS = P o (dP - D 1^T)
            dK.noalias() += scale * (dP.transpose() * Q);
            Attn<R>::rows(grad.dq, b, i0, nq, T, H, h, at.K).noalias() += scale * (dP * Kt);
          }
        Attn<R>::rows(grad.dk, b, j0, nk, T, Hkv, c, at.K) = dK;
        Attn<R>::rows(grad.dv, b, j0, nk, T, Hkv, c, at.V) = dV;
      }
    }
}

template void softmax_attention_tiled_forward<float>(const AttentionArgs<float>&,
                                                     const AttentionOut<float>&);
template void softmax_attention_tiled_forward<double>(const AttentionArgs<double>&,
                                                      const AttentionOut<double>&);
template void softmax_attention_tiled_backward<float>(const AttentionArgs<float>&,
                                                      const AttentionGrad<float>&);
template void softmax_attention_tiled_backward<double>(const AttentionArgs<double>&,
                                                       const AttentionGrad<double>&);

}  // namespace hla::kernels
