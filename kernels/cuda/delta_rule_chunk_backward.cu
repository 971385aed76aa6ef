// The chunked delta rule's backward kernels (walk_back, the one-kernel grad) and
// delta_rule_chunk_backward, which recomputes the forward's states (delta_rule_chunk.cu) and
// takes the tiled gradients (delta_rule_chunk_tiled.cu) for wide heads. The algorithm, the
// layouts and what the kernels share: delta_rule_chunk.cuh.
#include "kernels/cuda/delta_rule_chunk.cuh"

namespace hla::cuda {
namespace delta_chunk {
namespace {

// ---- walk_back: dVn, dY and the outgoing dS of every chunk, chunks in reverse

// A chunk's step reads three groups of matrices: P and diag(lam) K (for dVn), Ti and diag(gam) Q
// (dY, dS), W (dS). Ahead (when the buffers fit in shared memory): each group has its own
// buffers, and the next chunk's first two groups load while this chunk's later products run,
// its W under the first products; every wait then leaves two groups in flight. Otherwise the
// groups share two buffers (CT = CC, XQ = XW = X) and each is waited for as it is copied.
// Every buffer but diag(lam) K (X) is read down its columns (col_stride); X along its rows
// (row_stride), unless it also serves as XQ and XW: two products read it down its columns then,
// one along its rows, and it takes col_stride. The matrices P, Ti, diag(lam) K, diag(gam) Q
// and W in bf16 (half) take half_stride (read either way) and half the space, and dS and dVn
// are kept in bf16 as well (Kept: dS16, dVn16) for the products; dO, bf16 already, is then
// staged in bf16 only, in dO's place.
struct WalkBackLayout {
  int64_t dS, X, CC, dO, dVn, CT, XQ, XW, dS16, dVn16, total;
  int cols, lx, lk, lc;  // row strides: diag(lam) K in X; diag(gam) Q and W; P and Ti
  bool ahead;
  WalkBackLayout(Arena ar, int K, bool tc, bool half, int cols_, bool ahead_)
      : cols(cols_),
        lx(half ? half_stride(K) : ahead_ ? row_stride(K, tc) : col_stride(K, tc)),
        lk(half ? half_stride(K) : col_stride(K, tc)),
        lc(half ? half_stride(C) : col_stride(C, tc)),
        ahead(ahead_) {
    const int per = half ? 2 : 1;
    const int64_t keys = int64_t(C) * lk / per, cc = int64_t(C) * lc / per;
    dS = ar.take(int64_t(K) * walk_stride(cols, tc));
    X = ar.take(int64_t(C) * lx / per);  // lx = lk when X also holds diag(gam) Q and W
    CC = ar.take(cc);
    dO = ar.take(int64_t(C) * col_stride(cols, tc));
    dVn = ar.take(int64_t(C) * col_stride(cols, tc));
    CT = ahead ? ar.take(cc) : CC;
    XQ = ahead ? ar.take(keys) : X;
    XW = ahead ? ar.take(keys) : X;
    dS16 = half ? ar.take(int64_t(K) * kCopyStride / per) : 0;
    dVn16 = half ? ar.take(int64_t(C) * kCopyStride / per) : 0;
    total = ar.at;
  }
};

template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(wide_threads(TC), TC ? 1 : kWalkBlocks)
    delta_walk_back_kernel(DeltaRuleGrad<IO> gr, S scale, Geo g, ChunksOf<S, IO> ws,
                           WalkBackLayout lay, S* scratch) {
  using Op = OperandOf<S, IO>;
  S* base = block_base<S, Shared>(scratch, lay.total);
  auto op = [&](int64_t at) { return reinterpret_cast<Op*>(base + at); };
  Op *X = op(lay.X), *CC = op(lay.CC), *CT = op(lay.CT), *XQ = op(lay.XQ), *XW = op(lay.XW);
  const int K = g.K, V = g.V, lx = lay.lx, lk = lay.lk, lc = lay.lc;
  const int cols = lay.cols, lv = col_stride(cols, TC), lw = walk_stride(cols, TC);
  const int n_slices = (V + cols - 1) / cols;
  const bool async = Shared, ahead = lay.ahead;
  // dS, dVn and dO with their bf16 copies for the products in the shared instance of the bf16
  // path (dO then in bf16 only, in the f32 buffer's place).
  constexpr bool copies = Shared && sizeof(Op) < sizeof(S);
  using KeptS = Kept<S, copies>;
  auto as_bf16 = [&](int64_t at) { return reinterpret_cast<bf16_dev*>(base + at); };
  const KeptS dS{base + lay.dS, lw, as_bf16(lay.dS16)};
  const KeptS dVn{base + lay.dVn, lv, as_bf16(lay.dVn16)}, dO{base + lay.dO, lv, as_bf16(lay.dO)};
  // dO's rows of a slice are whole 16-byte words (fetch_rows) when V and the slices' starts are
  // multiples of 8 bf16 and dO is 16-byte aligned.
  const bool dO_words =
      async && V % 8 == 0 && cols % 8 == 0 && reinterpret_cast<uintptr_t>(gr.dout) % 16 == 0;
  for (int64_t item = blockIdx.x; item < g.B * g.H * n_slices; item += gridDim.x) {
    const int64_t bh = item / n_slices;
    const int j0 = static_cast<int>(item - bh * n_slices) * cols;
    const int nv = min(cols, V - j0);
    const int64_t state = bh * K * V;
    // The groups of chunk c (a chunk past the first commits an empty group, so that the waits
    // count alike on every chunk).
    auto fetch_p = [&](int64_t c) {
      if (c >= 0) {
        copy_rows(CC, lc, ws.p + (bh * g.NC + c) * C * C, C, C, C, async);
        copy_rows(X, lx, ws.kl + (bh * g.NC + c) * C * K, K, C, K, async);
      }
      cp_async_commit();
    };
    auto fetch_ti = [&](int64_t c) {
      if (c >= 0) {
        copy_rows(CT, lc, ws.ti + (bh * g.NC + c) * C * C, C, C, C, async);
        copy_rows(XQ, lk, ws.qg + (bh * g.NC + c) * C * K, K, C, K, async);
      }
      cp_async_commit();
    };
    auto fetch_w = [&](int64_t c) {
      copy_rows(XW, lk, ws.w + (bh * g.NC + c) * C * K, K, C, K, async);
      cp_async_commit();
    };
    // Ahead: two groups in flight after each wait (the loads for later products); else none.
    auto wait = [&] {
      if (ahead)
        cp_async_wait<2>();
      else
        cp_async_wait<0>();
    };
    dS.stage(K, nv, [&](int i, int j) {
      return gr.dhT ? value_cast<S>(gr.dhT[state + i * V + j0 + j]) : S(0);
    });
    if (ahead) {
      fetch_p(g.NC - 1);
      fetch_ti(g.NC - 1);
    }
    for (int64_t c = g.NC - 1; c >= 0; --c) {
      const int64_t e = bh * g.NC + c;
      const int n = g.rows(c);
      __syncthreads();  // dS is final, the buffers of the groups about to load free
      store_rows(ws.dso + e * K * V + j0, V, dS.x, lw, K, nv);
      // dO's rows: bf16 already in the bf16 path, copied by cp.async as a group of their own
      // (before W's when ahead, after P's otherwise), else staged through registers (and an
      // empty group, so that the waits count alike).
      const int64_t row0 = g.row(bh, c * C);
      auto fetch_dO = [&] {
        if constexpr (copies) {
          if (dO_words) fetch_rows(dO.x16, kCopyStride, gr.dout + row0 * V + j0, g.H * V, nv, n);
          else
            stage_rows(dO.x16, kCopyStride, C, nv, [&](int r, int j) {
              return r < n ? gr.dout[(row0 + r * g.H) * V + j0 + j] : value_cast<IO>(0.f);
            });
        } else {
          stage_scaled(dO.x, lv, C, n, nv, gr.dout + row0 * V + j0, g.H * V, nullptr);
        }
        cp_async_commit();
      };
      if (ahead) {
        fetch_dO();
        fetch_w(c);
        cp_async_wait<1>();  // P, diag(lam) K and dO (Ti and diag(gam) Q a chunk ago); W may run
      } else {
        fetch_p(c);
        fetch_dO();
        cp_async_wait<0>();
      }
      __syncthreads();
      // dVn = s P^T dO + diag(lam) K dS (the same shape twice)
      product<S, IO, TC, wide_threads(TC) / 32>(
          C, nv, C, operand_t<Op, TC, Shared>(CC, lc), dO.operand(),
          [&](int l, int j, S x) { dVn.x[l * lv + j] = scale * x; });
      product<S, IO, TC, wide_threads(TC) / 32>(
          C, nv, K, operand_a<Op, TC, Shared>(X, lx), dS.operand(),
          [&](int l, int j, S x) { dVn.set(l, j, dVn.at(l, j) + x); });
      __syncthreads();
      if (ahead)
        fetch_p(c - 1);
      else
        fetch_ti(c);
      wait();  // Ti and diag(gam) Q
      __syncthreads();
      const S gn = ws.gn[e];
      product<S, IO, TC, wide_threads(TC) / 32>(  // dY = Ti^T dVn
          C, nv, C, operand_t<Op, TC, Shared>(CT, lc), dVn.operand(),
          [&](int l, int j, S x) { ws.dy[e * C * V + l * V + j0 + j] = value_cast<Op>(x); });
      product<S, IO, TC, wide_threads(TC) / 32>(  // dS <- gam_n dS + s (diag(gam) Q)^T dO - W^T dVn
          K, nv, C, operand_t<Op, TC, Shared>(XQ, lk), dO.operand(),
          [&](int i, int j, S x) { dS.x[i * lw + j] = gn * dS.at(i, j) + scale * x; });
      __syncthreads();
      if (ahead)
        fetch_ti(c - 1);
      else
        fetch_w(c);
      wait();  // W
      __syncthreads();
      product<S, IO, TC, wide_threads(TC) / 32>(
          K, nv, C, operand_t<Op, TC, Shared>(XW, lk), dVn.operand(),
          [&](int i, int j, S x) { dS.set(i, j, dS.at(i, j) - x); });
    }
    __syncthreads();
    if (gr.dh0)
      unstage_rows(dS.x, lw, K, nv,
                   [&](int i, int j, S x) { gr.dh0[state + i * V + j0 + j] = value_cast<IO>(x); });
    __syncthreads();  // dS is read before the next item rewrites it
  }
}

// ---- grad: dq, dk, dv, dbeta, dg of every chunk from S, the outgoing dS, Vn and dY

struct GradLayout {
  RowsLayout rows;
  int64_t dq, dk, vn, dy, ks, dO, A, QK, dPE, D, e0, dlam, dbeta, red, X, total;
  bool stage_states;  // X holds S and dS for the products (else they read global memory)
  GradLayout(Arena ar, int K, int V, bool stage, bool tc, bool half)
      : rows(ar, K, tc), stage_states(stage) {
    const int lk = row_stride(K, tc), lv = row_stride(V, tc), lc = row_stride(C, tc);
    dq = ar.take(int64_t(C) * lk);
    dk = ar.take(int64_t(C) * lk);
    vn = ar.take(int64_t(C) * lv);
    dy = ar.take(int64_t(C) * lv);
    ks = ar.take(int64_t(C) * lv);
    dO = ar.take(int64_t(C) * lv);
    A = ar.take(int64_t(C) * lc);
    QK = ar.take(int64_t(C) * lc);
    dPE = ar.take(int64_t(C) * lc);
    D = ar.take(int64_t(C) * lc);
    e0 = ar.take(C);
    dlam = ar.take(C);
    dbeta = ar.take(C);
    red = ar.take(32);
    // f32 / f64: S or dS [K][lv]; bf16 (half): both at once, [2][K][half_stride(V)]
    X = stage ? ar.take(int64_t(K) * (half ? half_stride(V) : lv)) : 0;
    total = ar.at;
  }
};

// Staged (with Shared only): S and dS staged in X, as the layout's stage_states; a compile-time
// choice, so that the products read the state from a known memory. f32 and f64 stage one at a
// time (S, dS, then S again), bf16 both at once in half the space.
template <class S, class IO, bool TC, bool Shared, bool Staged = false>
__global__ void __launch_bounds__(wide_threads(TC))
    delta_grad_kernel(DeltaRuleArgs<IO> a, DeltaRuleGrad<IO> gr, Geo g, ChunksOf<S, IO> ws,
                      GradLayout lay, S* scratch) {
  S* base = block_base<S, Shared>(scratch, lay.total);
  const Rows<S> w = lay.rows.bind(base);
  S *dq = base + lay.dq, *dk = base + lay.dk, *vn = base + lay.vn, *dy = base + lay.dy;
  S *ks = base + lay.ks, *dO = base + lay.dO, *A = base + lay.A, *QK = base + lay.QK;
  S *dPE = base + lay.dPE, *D = base + lay.D, *e0 = base + lay.e0, *dlam = base + lay.dlam;
  S *dbeta = base + lay.dbeta, *red = base + lay.red;
  static_assert(Shared || !Staged, "the states are staged in shared memory only");
  using Op = OperandOf<S, IO>;
  constexpr bool both = Staged && !std::is_same_v<S, Op>;  // S and dS in X at once
  Op* X = Staged ? reinterpret_cast<Op*>(base + lay.X) : nullptr;
  const int K = g.K, V = g.V, lk = row_stride(K, TC), lv = row_stride(V, TC);
  const int lc = row_stride(C, TC), ls = Staged ? (both ? half_stride(V) : lv) : V;
  // A state [K,V] (S or the outgoing dS) for the products: staged in X, slot 1 for dS when both
  // fit (as cp.async copies, committed and waited for by the caller), or read from global
  // memory where X does not fit. The products read staged f32 by ldmatrix, bf16 an element a
  // load (their other operands are f32).
  const bool async = Shared;
  auto state_view = [&](const Op* src, int slot) -> const Op* {
    if constexpr (Staged) {
      Op* dst = X + (both ? slot : 0) * K * ls;
      copy_rows(dst, ls, src, V, K, V, async);
      return dst;
    } else {
      return src;
    }
  };
  constexpr bool kLdmatrix = Staged && !both;
  constexpr int nt = wide_threads(TC), nw = nt / 32;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const S s = static_cast<S>(a.scale);
  const bool gated = a.g != nullptr;
  const S *q = w.q, *k = w.k;
  for (int64_t e = blockIdx.x; e < g.B * g.H * g.NC; e += gridDim.x) {
    const int64_t bh = e / g.NC, c = e - bh * g.NC;
    const int n = g.rows(c);
    const Op *Sc = ws.states + e * K * V, *dSo = ws.dso + e * K * V;
    // S (and in f32 Vn and dY) load (cp.async) under load_rows, which stages dO with q and k
    // (and bf16 Vn and dY, widened as they load).
    const Op* St = state_view(Sc, 0);
    const int64_t row0 = g.row(bh, c * C);
    const StageTile<S, IO> dO_tile{dO, lv, V, gr.dout + row0 * V, g.H * V, nullptr};
    if constexpr (std::is_same_v<S, Op>) {
      copy_rows(vn, lv, ws.u + e * C * V, V, C, V, async);
      copy_rows(dy, lv, ws.dy + e * C * V, V, C, V, async);
      cp_async_commit();
      const StageTile<S, IO> also[1] = {dO_tile};
      load_rows(a, g, bh, c, n, w, also);
    } else {
      cp_async_commit();
      const StageTile<S, IO> also[3] = {dO_tile,
                                        {vn, lv, V, ws.u + e * C * V, V, nullptr},
                                        {dy, lv, V, ws.dy + e * C * V, V, nullptr}};
      load_rows(a, g, bh, c, n, w, also);
    }
    cp_async_wait<0>();
    __syncthreads();

    // Products of the loaded rows, S, then the outgoing dS (no two write the same buffer).
    product<S, IO, TC, nw>(
        C, C, K, operand_a<S, TC, Shared>(k, lk), operand_b<S, TC, Shared>(k, lk),
        [&](int r, int l, S x) { A[r * lc + l] = x; });
    if (gated)  // Q K^T enters only the decay gradients
      product<S, IO, TC, nw>(
          C, C, K, operand_a<S, TC, Shared>(q, lk), operand_b<S, TC, Shared>(k, lk),
          [&](int r, int l, S x) { QK[r * lc + l] = x; });
    product<S, IO, TC, nw>(  // K S
        C, V, K, operand_a<S, TC, Shared>(k, lk), operand_c<Op, false, false>(St, ls),
        [&](int r, int j, S x) { ks[r * lv + j] = x; });
    product<S, IO, TC, nw>(  // dq = s diag(gam) dO S^T
        C, K, V, operand_a<S, TC, Shared>(dO, lv), operand_b<Op, TC, kLdmatrix>(St, ls),
        [&](int r, int i, S x) { dq[r * lk + i] = (s * w.gam[r]) * x; });
    product<S, IO, TC, nw>(  // dP = s (dO Vn^T) o M
        C, C, V, operand_a<S, TC, Shared>(dO, lv), operand_b<S, TC, Shared>(vn, lv),
        [&](int r, int l, S x) { dPE[r * lc + l] = (s * x) * decay(w.Gam, gated, r, l); });
    product<S, IO, TC, nw>(  // D = -tril_{-1}(dY Vn^T) o M
        C, C, V, operand_a<S, TC, Shared>(dy, lv), operand_b<S, TC, Shared>(vn, lv),
        [&](int r, int l, S x) { D[r * lc + l] = r > l ? -x * decay(w.Gam, gated, r, l) : S(0); });
    __syncthreads();
    // dO is done with: the chunk's v rows take its place for the row sums below (staged with
    // their loads batched, not read a row at a time there), under the copy of dS.
    const Op* dSt = state_view(dSo, 1);
    cp_async_commit();
    S* vr = dO;
    stage_scaled(vr, lv, C, n, V, a.v + row0 * V, g.H * V, nullptr);
    cp_async_wait<0>();
    __syncthreads();
    product<S, IO, TC, nw>(  // dk = diag(lam) Vn dS^T
        C, K, V, operand_a<S, TC, Shared>(vn, lv), operand_b<Op, TC, kLdmatrix>(dSt, ls),
        [&](int r, int i, S x) { dk[r * lk + i] = w.lam[r] * x; });
    S sds = S(0);  // <S, dS> for the gate of the state carry
    if (gated) {   // S from global memory: kStageBatch loads in flight a thread
      for (int x0 = tid; x0 < K * V; x0 += nt * kStageBatch) {
        S sv[kStageBatch];
#pragma unroll
        for (int u = 0; u < kStageBatch; ++u) {
          const int x = x0 + nt * u;
          sv[u] = x < K * V ? value_cast<S>(Sc[x]) : S(0);
        }
#pragma unroll
        for (int u = 0; u < kStageBatch; ++u) {
          const int x = x0 + nt * u, i = x / V;
          if (x < K * V) sds += sv[u] * value_cast<S>(dSt[i * ls + x - i * V]);
        }
      }
      sds = block_reduce(sds, SumOp{}, S(0), red);
    }
    __syncthreads();
    if (!both) St = state_view(Sc, 0);  // S again, in place of dS, under the row sums
    cp_async_commit();

    // Per row, one warp each: e0 = rowsum(Q o dQ_S) (+ gam_n <S, dS> on the last row)
    // - gam_r sum_j dRs_rj (K S)_rj;  dlam = rowsum(K o dK_lam);  dv = dRs = diag(beta) dY;
    // dbeta = rowsum(dY o Rs) + rowsum(D o A), Rs = V - diag(gam) K S.
    for (int r = warp; r < n; r += nw) {
      S eq = S(0), el = S(0), er = S(0), db = S(0);
      for (int i = lane; i < K; i += 32) {
        eq += q[r * lk + i] * dq[r * lk + i];
        el += k[r * lk + i] * dk[r * lk + i];
      }
      const int64_t row = g.row(bh, c * C + r);
      for (int j = lane; j < V; j += 32) {
        const S y = dy[r * lv + j], kS = ks[r * lv + j];
        db += y * (vr[r * lv + j] - w.gam[r] * kS);
        er += (w.beta[r] * y) * kS;
        gr.dv[row * V + j] = value_cast<IO>(w.beta[r] * y);
      }
      for (int l = lane; l < r; l += 32) db += D[r * lc + l] * A[r * lc + l];
      eq = warp_reduce(eq, SumOp{});
      el = warp_reduce(el, SumOp{});
      er = warp_reduce(er, SumOp{});
      db = warp_reduce(db, SumOp{});
      if (lane == 0) {
        e0[r] = eq + (r == n - 1 ? w.gam[n - 1] * sds : S(0)) - w.gam[r] * er;
        dlam[r] = el;
        dbeta[r] = db;
      }
    }
    cp_async_wait<0>();
    __syncthreads();

    // dq += dP K;  dk += dP^T Q + (diag(beta) D + (diag(beta) D)^T) K - diag(gam) dRs S^T.
    product<S, IO, TC, nw>(
        C, K, C, operand_a<S, TC, Shared>(dPE, lc), [&](int l, int i) { return k[l * lk + i]; },
        [&](int r, int i, S x) { dq[r * lk + i] += x; });
    product<S, IO, TC, nw>(
        C, K, C, [&](int r, int l) { return dPE[l * lc + r]; },
        [&](int l, int i) { return q[l * lk + i]; },
        [&](int r, int i, S x) { dk[r * lk + i] += x; });
    product<S, IO, TC, nw>(  // D is strictly lower: one of the two terms is zero
        C, K, C,
        [&](int r, int l) { return w.beta[r] * D[r * lc + l] + w.beta[l] * D[l * lc + r]; },
        [&](int l, int i) { return k[l * lk + i]; },
        [&](int r, int i, S x) { dk[r * lk + i] += x; });
    product<S, IO, TC, nw>(
        C, K, V, [&](int r, int j) { return w.beta[r] * dy[r * lv + j]; },
        [&](int j, int i) { return value_cast<S>(St[i * ls + j]); },
        [&](int r, int i, S x) { dk[r * lk + i] -= w.gam[r] * x; });
    __syncthreads();

    if (gated) decay_gradients<nt>(dPE, QK, D, A, lc, w.beta, e0, dlam, n, gr.dg, g, bh, c);

    // The L2-norm backward of q and k (x = u / |u|: du = (dx - <dx, x> x) / |u|), rows out.
    for (int r = warp; r < n; r += nw) {
      S pq = S(0), pk = S(0);
      if (a.l2norm_qk) {
        for (int i = lane; i < K; i += 32) {
          pq += q[r * lk + i] * dq[r * lk + i];
          pk += k[r * lk + i] * dk[r * lk + i];
        }
        pq = warp_reduce(pq, SumOp{});
        pk = warp_reduce(pk, SumOp{});
      }
      const int64_t row = g.row(bh, c * C + r);
      for (int i = lane; i < K; i += 32) {
        gr.dq[row * K + i] = value_cast<IO>(w.rq[r] * (dq[r * lk + i] - pq * q[r * lk + i]));
        gr.dk[row * K + i] = value_cast<IO>(w.rk[r] * (dk[r * lk + i] - pk * k[r * lk + i]));
      }
      if (lane == 0) gr.dbeta[row] = value_cast<IO>(dbeta[r]);
    }
    __syncthreads();  // the buffers are read before the next item rewrites them
  }
}

template <class S, class IO, bool TC>
void chunk_backward(const DeltaRuleArgs<IO>& a, const DeltaRuleGrad<IO>& gr, const char* op) {
  const Geo g = geo_of(a.d);
  Workspace<S, IO> ws(g, true);
  forward_states<S, IO, TC>(a, g, ws.ptrs, static_cast<IO*>(nullptr), op);
  const int cols = walk_columns(g);
  const int64_t slices = (g.V + cols - 1) / cols;
  constexpr bool half = !std::is_same_v<OperandOf<S, IO>, S>;
  const WalkBackLayout ahead(Arena{}, g.K, TC, half, cols, true),
      in_turn(Arena{}, g.K, TC, half, cols, false);
  const WalkBackLayout& back =
      size_t(ahead.total) * sizeof(S) <= shared_memory_limit() ? ahead : in_turn;
  launch_items<S>(delta_walk_back_kernel<S, IO, TC, true>, delta_walk_back_kernel<S, IO, TC, false>,
                  wide_threads(TC), g.B * g.H * slices, back.total, op, gr, static_cast<S>(a.scale),
                  g, ws.ptrs, back);
  if constexpr (std::is_same_v<IO, bf16_dev>)
    if (grad_bf16(a, gr, g, ws.ptrs, op)) return;
  // One grad kernel when its buffers fit in shared memory (S and dS staged too when they still
  // fit), else the three kernels on 64-wide tiles.
  const GradLayout staged(Arena{}, g.K, g.V, true, TC, half), plain(Arena{}, g.K, g.V, false, TC, half);
  const size_t limit = shared_memory_limit();
  if (size_t(plain.total) * sizeof(S) <= limit) {
    const GradLayout& lay = size_t(staged.total) * sizeof(S) <= limit ? staged : plain;
    launch_items<S>(lay.stage_states ? delta_grad_kernel<S, IO, TC, true, true>
                                     : delta_grad_kernel<S, IO, TC, true, false>,
                    delta_grad_kernel<S, IO, TC, false>, wide_threads(TC), g.B * g.H * g.NC,
                    lay.total, op, a, gr, g, ws.ptrs, lay);
    return;
  }
  tiled_gradients<S, IO, TC>(a, gr, g, ws.ptrs, op);
}

struct RunBackward {
  const char* op;
  template <class C, class IO, bool TC, class Args, class Grad>
  void operator()(const Args& args, const Grad& g) const {
    chunk_backward<C, IO, TC>(args, g, op);
  }
};

}  // namespace
}  // namespace delta_chunk

template <class S>
void delta_rule_chunk_backward(const DeltaRuleArgs<S>& a, const DeltaRuleGrad<S>& gr) {
  const char* op = "delta_rule_chunk_backward (cuda)";
  delta_chunk::check_args(a, op);
  HLA_CHECK(gr.dout && gr.dq && gr.dk && gr.dv && gr.dbeta,
            "dout, dq, dk, dv and dbeta are required");
  HLA_CHECK(!a.g || gr.dg, "dg is required when g is given");
  delta_chunk::with_kernel_types(a, gr, delta_chunk::RunBackward{op});
}

template void delta_rule_chunk_backward<float>(const DeltaRuleArgs<float>&, const DeltaRuleGrad<float>&);
template void delta_rule_chunk_backward<double>(const DeltaRuleArgs<double>&, const DeltaRuleGrad<double>&);
template void delta_rule_chunk_backward<bf16>(const DeltaRuleArgs<bf16>&, const DeltaRuleGrad<bf16>&);

}  // namespace hla::cuda
