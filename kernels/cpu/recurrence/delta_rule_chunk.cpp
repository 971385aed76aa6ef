// defines: delta_rule_chunk_forward, delta_rule_chunk_backward (float, double)
//
// The chunked Eigen kernel of DeltaNet / Gated DeltaNet: same function as the per-step
// recurrence of kernels/reference/delta_rule.cpp, computed kChunk = 64 rows at a time with the
// UT transform (spec/recurrences.md 5.4 and 6.4). Layouts: q, k [B,T,H,K]; v, o [B,T,H,V];
// beta, g [B,T,H]; h0, hT [B,H,K,V]; row-major. One OpenMP task per (b, h) pair.
//
// Forward, per chunk of n <= kChunk rows (Q, K, V, beta, g its rows; S the incoming state [K,V]):
//   Gam_r = sum_{i<=r} g_i          chunk-local cumsum (0 for DeltaNet); gam = exp(Gam)
//   M_ij  = exp(Gam_i - Gam_j) for i >= j, else 0;   lam_j = exp(Gam_n - Gam_j)
//   A     = K K^T,   L = tril_{-1}(diag(beta) (A o M)),   T = (I + L)^{-1}
//   Rs    = V - diag(gam) K S                            residuals against the incoming state
//   Vn    = T diag(beta) Rs                              corrected values (forward substitution)
//   O     = s [ diag(gam) Q S + P Vn ],   P = (Q K^T) o M
//   S    <- gam_n S + (diag(lam) K)^T Vn
// Vn equals spec 5.4's U - W S with W = T diag(beta gam) K, U = T diag(beta) V; solving for it
// directly needs neither W nor U (two fewer n x n x 64 products per chunk, forward and backward).
// Every decay is exp of a difference of chunk-local log sums (<= 1): nothing is divided by a
// cumulative product.
//
// Backward, chunk by chunk in reverse, given dO and dS (gradient of the outgoing state):
//   dP     = s (dO Vn^T) o M
//   dVn    = s P^T dO + diag(lam) K dS
//   dQ     = s diag(gam) dO S^T + dP K
//   dK     = dP^T Q + diag(lam) Vn dS^T - diag(gam) dRs S^T
//   dS_in  = s (diag(gam) Q)^T dO + gam_n dS - (diag(gam) K)^T dRs
//   UT transform (spec 5.4): with Y = diag(beta) Rs and Vn = (I + L)^{-1} Y,
//     dY = (I + L)^{-T} dVn                 (back substitution)
//     dL = -tril_{-1}(dY Vn^T),   dRs = diag(beta) dY = dV,   dbeta = rowsum(dY o Rs)
//     D = dL o M:  dbeta += rowsum(D o A),  dK += (diag(beta) D + (diag(beta) D)^T) K
//   dg directly, from the gradient of each decay factor f = exp(Gam_i - Gam_j) (i > j: M_ij;
//   lam_j with i = n; gam_i with j = -1, Gam_{-1} = 0): with E = f * dL/df, and Gam a
//   chunk-local cumsum,  dg_l = sum of E over the factors that span step l (j < l <= i).
//   Summing only spanning factors keeps dg accurate when it is small (strong decay); the
//   equivalent reverse cumsum of dGam (and the identity of spec 6.6) cancels O(1) terms.
// The backward first runs a forward sweep that keeps, for every chunk of the head in hand, its
// incoming state and its factors (Q, K, V, Rs, Vn [n,64]; M, A, L, QK, P [n,n]: ~2.5 KB per token
// in f32 at K = V = 64, per thread), then walks the chunks in reverse. Backward overwrites its
// outputs.
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
using Vec = Eigen::Matrix<R, Eigen::Dynamic, 1>;
template <class R>
using Rows = Eigen::Map<Mat<R>, 0, Eigen::OuterStride<>>;  // n rows of a [B,T,H,D] tensor
template <class R>
using ConstRows = Eigen::Map<const Mat<R>, 0, Eigen::OuterStride<>>;
template <class R>
using PerHead = Eigen::Map<Vec<R>, 0, Eigen::InnerStride<>>;  // n entries of a [B,T,H] tensor
template <class R>
using ConstPerHead = Eigen::Map<const Vec<R>, 0, Eigen::InnerStride<>>;
template <class R>
using StateMap = Eigen::Map<Mat<R>>;
template <class R>
using ConstStateMap = Eigen::Map<const Mat<R>>;


// Strided views of head (b, h): rows t0 .. t0+n-1.
struct HeadIndex {
  int64_t T, H, b, h;
  int64_t offset(int64_t t0) const { return (b * T + t0) * H + h; }  // into [B,T,H]
};
template <class R>
ConstRows<R> rows(const R* x, const HeadIndex& at, int64_t t0, int64_t n, int64_t D) {
  return ConstRows<R>(x + at.offset(t0) * D, n, D, Eigen::OuterStride<>(at.H * D));
}
template <class R>
Rows<R> rows(R* x, const HeadIndex& at, int64_t t0, int64_t n, int64_t D) {
  return Rows<R>(x + at.offset(t0) * D, n, D, Eigen::OuterStride<>(at.H * D));
}
template <class R>
ConstPerHead<R> per_head(const R* x, const HeadIndex& at, int64_t t0, int64_t n) {
  return ConstPerHead<R>(x + at.offset(t0), n, Eigen::InnerStride<>(at.H));
}
template <class R>
PerHead<R> per_head(R* x, const HeadIndex& at, int64_t t0, int64_t n) {
  return PerHead<R>(x + at.offset(t0), n, Eigen::InnerStride<>(at.H));
}

// X <- (I + L)^{-1} X and X <- (I + L)^{-T} X for strictly lower L: row-by-row substitution,
// several times faster than Eigen's triangular solver at these sizes.
template <class R>
void solve_unit_lower(const Mat<R>& L, Mat<R>& X) {
  for (int64_t i = 1; i < X.rows(); ++i) X.row(i).noalias() -= L.row(i).head(i) * X.topRows(i);
}
template <class R>
void solve_unit_lower_transposed(const Mat<R>& L, Mat<R>& X) {
  const int64_t n = X.rows();
  const Mat<R> Lt = L.transpose();
  for (int64_t i = n - 2; i >= 0; --i)
    X.row(i).noalias() -= Lt.row(i).tail(n - 1 - i) * X.bottomRows(n - 1 - i);
}

// One chunk: its inputs, decay factors and UT-transform matrix, and (after forward()) the
// residuals and corrected values for its incoming state.
template <class R>
struct Chunk {
  int64_t t0 = 0, n = 0;
  Mat<R> q, k, v;         // [n,K], [n,K], [n,V]; q, k L2-normalised when l2norm_qk (q unscaled)
  Vec<R> rq, rk;          // 1/sqrt(|x|^2 + eps) per row (for the L2 backward)
  Vec<R> beta, gam, lam;  // beta, exp(Gam), exp(Gam_n - Gam)
  Mat<R> M, A, L, QK, P;  // decay mask, K K^T, L, Q K^T, (Q K^T) o M   [n,n]
  Mat<R> Rs, Vn;          // residuals V - diag(gam) K S and corrected values [n,V]

  void load(const DeltaRuleArgs<R>& a, const HeadIndex& at, int64_t t0_, int64_t n_) {
    t0 = t0_;
    n = n_;
    q = rows(a.q, at, t0, n, a.d.K);
    k = rows(a.k, at, t0, n, a.d.K);
    v = rows(a.v, at, t0, n, a.d.V);
    if (a.l2norm_qk) {
      rq = (q.rowwise().squaredNorm().array() + R(kL2Eps)).rsqrt();
      rk = (k.rowwise().squaredNorm().array() + R(kL2Eps)).rsqrt();
      q = rq.asDiagonal() * q;
      k = rk.asDiagonal() * k;
    }
    beta = per_head(a.beta, at, t0, n);
    Vec<R> Gam = Vec<R>::Zero(n);
    if (a.g) {
      const ConstPerHead<R> g = per_head(a.g, at, t0, n);
      R acc = 0;
      for (int64_t i = 0; i < n; ++i) Gam(i) = acc += g(i);
    }
    gam = Gam.array().exp();
    lam = (Gam(n - 1) - Gam.array()).exp();
    M = Mat<R>::Zero(n, n);
    for (int64_t i = 0; i < n; ++i) {
      if (a.g)
        M.row(i).head(i + 1) = (Gam(i) - Gam.head(i + 1).array()).exp().matrix().transpose();
      else
        M.row(i).head(i + 1).setOnes();
    }

    A.noalias() = k * k.transpose();
    L.noalias() = beta.asDiagonal() * A.cwiseProduct(M);  // M is 0 above the diagonal
    L.diagonal().setZero();
    QK.noalias() = q * k.transpose();
    P = QK.cwiseProduct(M);
  }

  // Rs, Vn, the outputs o (if given) and the outgoing state S_out from the incoming state S.
  void forward(const Mat<R>& S, R scale, Rows<R>* o, Mat<R>& S_out) {
    Rs = v;
    Rs.noalias() -= gam.asDiagonal() * (k * S);
    Vn = beta.asDiagonal() * Rs;
    solve_unit_lower(L, Vn);  // (I + L) Vn = diag(beta) Rs
    if (o) {
      o->noalias() = gam.asDiagonal() * (q * S);
      o->noalias() += P * Vn;
      *o *= scale;
    }
    S_out = gam(n - 1) * S;
    S_out.noalias() += (lam.asDiagonal() * k).transpose() * Vn;
  }
};

template <class R>
Mat<R> initial_state(const DeltaRuleArgs<R>& a, int64_t bh) {
  const int64_t K = a.d.K, V = a.d.V;
  if (!a.h0) return Mat<R>::Zero(K, V);
  return ConstStateMap<R>(a.h0 + bh * K * V, K, V);
}

// dY (gradient w.r.t. the normalised rows Xhat) -> diag(r) (dY - diag(<Xhat, dY>) Xhat).
template <class R>
void l2norm_backward(const Mat<R>& xhat, const Vec<R>& r, Mat<R>& dY) {
  const Vec<R> dot = xhat.cwiseProduct(dY).rowwise().sum();
  dY = r.asDiagonal() * (dY - dot.asDiagonal() * xhat);
}

// Gate gradient of one chunk from E [n,n] (the factors exp(Gam_i - Gam_j), i > j; only the
// strictly lower triangle is read) and e0 [n] (the factors exp(Gam_i)):
//   dg_l = sum_{i >= l} (e0_i + sum_{j < l} E_ij).
template <class R>
void gate_gradient(const Mat<R>& E, const Vec<R>& e0, PerHead<R> dg) {
  const int64_t n = E.rows();
  Mat<R> spanning = Mat<R>::Zero(n, n);  // spanning(i, l) = sum_{j < l} E_ij, for l <= i
  for (int64_t i = 0; i < n; ++i) {
    R acc = 0;
    for (int64_t l = 0; l <= i; ++l) {
      spanning(i, l) = acc;
      acc += E(i, l);
    }
  }
  R acc = 0;
  for (int64_t l = n - 1; l >= 0; --l) dg(l) = (acc += e0(l)) + spanning.col(l).sum();
}

// The gradients of one chunk, after c.forward(S, ...); dS holds the gradient of the outgoing
// state on entry and of the incoming state S on exit. Writes the chunk's rows of dq, dk, dv,
// dbeta and dg.
template <class R>
void chunk_backward(const DeltaRuleArgs<R>& a, const DeltaRuleGrad<R>& grad, const HeadIndex& at,
                    const Chunk<R>& c, const Mat<R>& S, Mat<R>& dS) {
  const R s = R(a.scale);
  const int64_t n = c.n, K = a.d.K, V = a.d.V;
  const ConstRows<R> dO = rows(grad.dout, at, c.t0, n, V);
  // gate: E (pairs i > j) and e0 (exp(Gam_i) factors) of gate_gradient()
  Mat<R> E = Mat<R>::Zero(a.g ? n : 0, a.g ? n : 0);
  Vec<R> e0 = Vec<R>::Zero(a.g ? n : 0);

  // O = s [diag(gam) Q S + P Vn],  P = (Q K^T) o M
  Mat<R> dq(n, K), dk(n, K), dP(n, n), dVn(n, V);
  dq.noalias() = (s * c.gam).asDiagonal() * (dO * S.transpose());
  if (a.g) e0 += c.q.cwiseProduct(dq).rowwise().sum();
  dP.noalias() = s * (dO * c.Vn.transpose());
  dP = dP.cwiseProduct(c.M);
  if (a.g) E += dP.cwiseProduct(c.QK);
  dq.noalias() += dP * c.k;
  dk.noalias() = dP.transpose() * c.q;
  dVn.noalias() = s * (c.P.transpose() * dO);

  // S_out = gam_n S + (diag(lam) K)^T Vn
  dVn.noalias() += c.lam.asDiagonal() * (c.k * dS);
  Mat<R> dk_part(n, K);
  dk_part.noalias() = c.lam.asDiagonal() * (c.Vn * dS.transpose());
  dk += dk_part;
  if (a.g) {  // lam_j = exp(Gam_n - Gam_j); lam_n = 1 does not depend on the gate
    const Vec<R> dlam = c.k.cwiseProduct(dk_part).rowwise().sum();
    e0(n - 1) += c.gam(n - 1) * S.cwiseProduct(dS).sum();
    E.row(n - 1).head(n - 1) += dlam.head(n - 1).transpose();
  }
  Mat<R> dS_in = c.gam(n - 1) * dS;
  dS_in.noalias() += ((s * c.gam).asDiagonal() * c.q).transpose() * dO;

  // Vn = (I + L)^{-1} Y, Y = diag(beta) Rs: the UT transform
  Mat<R>& dY = dVn;
  solve_unit_lower_transposed(c.L, dY);
  Vec<R> dbeta = dY.cwiseProduct(c.Rs).rowwise().sum();
  const Mat<R> dRs = c.beta.asDiagonal() * dY;  // = dv
  Mat<R> D(n, n);
  D.noalias() = -dY * c.Vn.transpose();  // dL on the strictly lower triangle

  // Rs = V - diag(gam) K S
  dk_part.noalias() = (-c.gam).asDiagonal() * (dRs * S.transpose());
  dk += dk_part;
  if (a.g) e0 += c.k.cwiseProduct(dk_part).rowwise().sum();
  dS_in.noalias() -= (c.gam.asDiagonal() * c.k).transpose() * dRs;
  dS.swap(dS_in);

  // L = tril_{-1}(diag(beta) (A o M)),  A = K K^T
  D = D.cwiseProduct(c.M);  // 0 above the diagonal
  D.diagonal().setZero();
  const Mat<R> DA = D.cwiseProduct(c.A);
  dbeta += DA.rowwise().sum();
  if (a.g) E.noalias() += c.beta.asDiagonal() * DA;  // DA is strictly lower
  const Mat<R> dA = c.beta.asDiagonal() * D;
  dk.noalias() += (dA + dA.transpose()) * c.k;

  if (a.g) gate_gradient(E, e0, per_head(grad.dg, at, c.t0, n));
  if (a.l2norm_qk) {
    l2norm_backward(c.q, c.rq, dq);
    l2norm_backward(c.k, c.rk, dk);
  }
  rows(grad.dq, at, c.t0, n, K) = dq;
  rows(grad.dk, at, c.t0, n, K) = dk;
  rows(grad.dv, at, c.t0, n, V) = dRs;
  per_head(grad.dbeta, at, c.t0, n) = dbeta;
}

}  // namespace

template <class R>
void delta_rule_chunk_forward(const DeltaRuleArgs<R>& a, const DeltaRuleOut<R>& out) {
  check_rec_args(a, "delta_rule_chunk_forward");
  HLA_CHECK(out.o, "o is required");
  const int64_t B = a.d.B, T = a.d.T, H = a.d.H, K = a.d.K, V = a.d.V;
#pragma omp parallel for schedule(dynamic)
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const HeadIndex at{T, H, bh / H, bh % H};
    Chunk<R> c;
    Mat<R> S = initial_state(a, bh), S_next;
    for (int64_t t0 = 0; t0 < T; t0 += kChunk) {
      c.load(a, at, t0, std::min(kChunk, T - t0));
      Rows<R> o = rows(out.o, at, t0, c.n, V);
      c.forward(S, R(a.scale), &o, S_next);
      S.swap(S_next);
    }
    if (out.hT) StateMap<R>(out.hT + bh * K * V, K, V) = S;
  }
}

template <class R>
void delta_rule_chunk_backward(const DeltaRuleArgs<R>& a, const DeltaRuleGrad<R>& grad) {
  check_rec_args(a, "delta_rule_chunk_backward");
  HLA_CHECK(grad.dout && grad.dq && grad.dk && grad.dv && grad.dbeta,
            "dout, dq, dk, dv and dbeta are required");
  HLA_CHECK(!a.g || grad.dg, "dg is required when g is given");
  const int64_t B = a.d.B, T = a.d.T, H = a.d.H, K = a.d.K, V = a.d.V;
  const int64_t n_chunks = (T + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(dynamic)
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const HeadIndex at{T, H, bh / H, bh % H};
    std::vector<Chunk<R>> chunks(n_chunks);
    std::vector<Mat<R>> states(n_chunks + 1);  // states[i]: incoming state of chunk i
    states[0] = initial_state(a, bh);
    for (int64_t i = 0; i < n_chunks; ++i) {
      chunks[i].load(a, at, i * kChunk, std::min(kChunk, T - i * kChunk));
      chunks[i].forward(states[i], R(a.scale), nullptr, states[i + 1]);
    }

    Mat<R> dS = Mat<R>::Zero(K, V);
    if (grad.dhT) dS = ConstStateMap<R>(grad.dhT + bh * K * V, K, V);
    for (int64_t i = n_chunks - 1; i >= 0; --i) {
      chunk_backward(a, grad, at, chunks[i], states[i], dS);
      chunks[i] = Chunk<R>();  // done with it
    }
    if (grad.dh0) StateMap<R>(grad.dh0 + bh * K * V, K, V) = dS;
  }
}

template void delta_rule_chunk_forward<float>(const DeltaRuleArgs<float>&,
                                              const DeltaRuleOut<float>&);
template void delta_rule_chunk_forward<double>(const DeltaRuleArgs<double>&,
                                               const DeltaRuleOut<double>&);
template void delta_rule_chunk_backward<float>(const DeltaRuleArgs<float>&,
                                               const DeltaRuleGrad<float>&);
template void delta_rule_chunk_backward<double>(const DeltaRuleArgs<double>&,
                                                const DeltaRuleGrad<double>&);

}  // namespace hla::kernels
