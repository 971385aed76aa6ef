// The chunked delta rule's gradients for heads whose one-kernel grad buffers exceed shared
// memory: three kernels on 64-wide tiles (scores, keys, rows) and their launcher,
// tiled_gradients. The algorithm, the layouts and what the kernels share: delta_rule_chunk.cuh.
#include "kernels/cuda/delta_rule_chunk.cuh"

namespace hla::cuda {
namespace delta_chunk {

// ---- grad for heads whose grad buffers exceed shared memory: three kernels on 64-wide tiles
//
// The single grad kernel holds q, k, dq, dk [C][K] and Vn, dY, K S, dO [C][V] at once (over
// 227 KiB from K = V = 128 in f32). Here no buffer is wider than 64 columns, and K S is not
// formed: with X = dY S^T [C][K],
//   sum_j (dRs o K S)_rj = beta_r rowsum(K o X)_r,
//   rowsum(dY o Rs) = rowsum(dY o V) - gam o rowsum(K o X).
//   scores  one block per (head, chunk): the row factors, A = K K^T and QK = Q K^T (gated only:
//           the decay gradients' term) over 64-key tiles, dP and D over 64-value tiles,
//           rowsum(dY o V), dv
//   keys    one block per (head, chunk, 64 keys): over 64-value tiles dO S^T, Vn dS^T, dY S^T
//           and <S, dS> for its keys, then its columns of dq and dk (before the L2-norm
//           backward) and their row sums
//   rows    one block per (head, chunk): the key tiles' row sums added in order, dbeta, dg, the
//           L2-norm backward, dq and dk out

constexpr int kRowSums = 5;  // a key tile's row sums: eq, el, ek, pq, pk

// The split backward's global scratch, item e = head * NC + chunk, KT = ceil(K / 64) key tiles.
template <class S>
struct GradScratch {
  S* cc;       // [items, 4, C, C]    A, QK, dP = s (dO Vn^T) o M, D = -tril_{-1}(dY Vn^T) o M
  S* factors;  // [items, kFactors]
  S* dqk;      // [items, 2, C, K]    dq, dk before the L2-norm backward
  S* sums;     // [items, KT, kRowSums, C]
  S* sds;      // [items, KT]         <S, dS> over the tile's keys
};

// Three operand tiles and two accumulators (about 88 KiB in f32 with TF32 padding: two blocks
// an SM): A and QK over the key tiles, written out, then dP and D over the value tiles.
struct ScoresLayout {
  int64_t f, T0, T1, T2, M0, M1, total;
  ScoresLayout(Arena ar, bool tc) {
    const int lt = row_stride(kTile, tc);
    f = ar.take(kFactors);
    for (int64_t* t : {&T0, &T1, &T2, &M0, &M1}) *t = ar.take(int64_t(C) * lt);
    total = ar.at;
  }
};

template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(wide_threads(TC), TC ? 2 : 1)
    delta_grad_scores_kernel(DeltaRuleArgs<IO> a, DeltaRuleGrad<IO> gr, Geo g, ChunksOf<S, IO> ws,
                             GradScratch<S> gs, ScoresLayout lay, S* scratch) {
  static_assert(kTile == C, "a C x C matrix takes a tile's place");
  S* base = block_base<S, Shared>(scratch, lay.total);
  const Factors<S> f(base + lay.f);
  S *T0 = base + lay.T0, *T1 = base + lay.T1, *T2 = base + lay.T2, *M0 = base + lay.M0;
  S* M1 = base + lay.M1;
  using Op = OperandOf<S, IO>;
  constexpr int nw = wide_threads(TC) / 32, lt = row_stride(kTile, TC);
  const int K = g.K, V = g.V, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool async = Shared, gated = a.g != nullptr;
  const S s = static_cast<S>(a.scale);
  for (int64_t e = blockIdx.x; e < g.B * g.H * g.NC; e += gridDim.x) {
    const int64_t bh = e / g.NC, c = e - bh * g.NC, row0 = g.row(bh, c * C);
    const int n = g.rows(c);
    S* cc = gs.cc + e * 4 * C * C;
    load_factors(a, g, bh, c, n, f);
    // A = K K^T in M0, QK = Q K^T in M1 (q, k in T0, T1); QK enters only the decay gradients.
    for (int k0 = 0; k0 < K; k0 += kTile) {
      const int nk = min(kTile, K - k0);
      const bool first = k0 == 0;
      if (gated)
        stage_keys(T0, T1, lt, a, f.rq, f.rk, g, bh, c, n, k0, nk);
      else
        stage_keys(T1, lt, a.k, f.rk, g, bh, c, n, k0, nk);
      __syncthreads();
      accumulate_abt<S, IO, TC, Shared, nw>(M0, lt, T1, T1, lt, C, nk, first);
      if (gated) accumulate_abt<S, IO, TC, Shared, nw>(M1, lt, T0, T1, lt, C, nk, first);
      __syncthreads();
    }
    for (int x = threadIdx.x; x < C * C; x += blockDim.x) {
      const int r = x / C, l = x - r * C;
      cc[x] = M0[r * lt + l];
      if (gated) cc[C * C + x] = M1[r * lt + l];
    }
    __syncthreads();
    for (int j0 = 0; j0 < V; j0 += kTile) {  // dO Vn^T in M0, dY Vn^T in M1; rowsum(dY o V), dv
      const int nv = min(kTile, V - j0);
      const bool first = j0 == 0;
      if constexpr (std::is_same_v<S, Op>) {  // Vn, dY (cp.async) under dO
        copy_rows(T1, lt, ws.u + e * C * V + j0, V, C, nv, async);
        copy_rows(T2, lt, ws.dy + e * C * V + j0, V, C, nv, async);
        cp_async_commit();
        stage_scaled(T0, lt, C, n, nv, gr.dout + row0 * V + j0, g.H * V, nullptr);
        cp_async_wait<0>();
      } else {  // bf16 Vn, dY widened as they load, with dO
        const StageTile<S, IO> tiles[3] = {{T0, lt, nv, gr.dout + row0 * V + j0, g.H * V, nullptr},
                                           {T1, lt, nv, ws.u + e * C * V + j0, V, nullptr},
                                           {T2, lt, nv, ws.dy + e * C * V + j0, V, nullptr}};
        stage_tiles(tiles, C, n);
      }
      __syncthreads();
      accumulate_abt<S, IO, TC, Shared, nw>(M0, lt, T0, T1, lt, C, nv, first);
      accumulate_abt<S, IO, TC, Shared, nw>(M1, lt, T2, T1, lt, C, nv, first);
      for (int r = warp; r < n; r += nw) {  // one warp per row
        const int64_t row = row0 + r * g.H;
        S yv = S(0);
        for (int j = lane; j < nv; j += 32) {
          const S y = T2[r * lt + j];
          yv += y * value_cast<S>(a.v[row * V + j0 + j]);
          gr.dv[row * V + j0 + j] = value_cast<IO>(f.beta[r] * y);
        }
        yv = warp_reduce(yv, SumOp{});
        if (lane == 0) f.yv[r] += yv;
      }
      __syncthreads();
    }
    for (int x = threadIdx.x; x < C * C; x += blockDim.x) {
      const int r = x / C, l = x - r * C;
      const S m = decay(f.Gam, gated, r, l);
      cc[2 * C * C + x] = (s * M0[r * lt + l]) * m;
      cc[3 * C * C + x] = r > l ? -M1[r * lt + l] * m : S(0);
    }
    for (int x = threadIdx.x; x < kFactors; x += blockDim.x)
      gs.factors[e * kFactors + x] = f.beta[x];
    __syncthreads();  // the buffers are read before the next item rewrites them
  }
}

// The V loop's operand tiles in the workspace's type, `buffers` sets of three (dO, dY, S, then
// Vn, dS, S; row stride l16: half_stride in bf16), three f32 sums (TileSum: summed there with
// FMA products, written once from registers with tensor-core products) and the factors. Two
// sets when two blocks an SM still fit (bf16: about 107 KiB): the next value tile then loads
// under this one's products. After the V loop the sets' space holds q, k and dP in f32. The
// kernel runs 256 threads with any products: at 512 the 64 registers a thread that two blocks
// an SM leave spill.
struct KeysLayout {
  int64_t f, sets, set_size, dq, dk, X, red, total;
  int l16, buffers;
  KeysLayout(Arena ar, bool tc, bool half, int buffers_)
      : l16(half ? half_stride(kTile) : row_stride(kTile, tc)), buffers(buffers_) {
    const int64_t tile = int64_t(C) * row_stride(kTile, tc);
    f = ar.take(kFactors);
    set_size = 3 * int64_t(C) * l16 / (half ? 2 : 1);
    sets = ar.take(std::max(buffers * set_size, 3 * tile));
    for (int64_t* t : {&dq, &dk, &X}) *t = ar.take(tile);
    red = ar.take(32);
    total = ar.at;
  }
};

template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(kNt, TC ? 2 : 1)
    delta_grad_keys_kernel(DeltaRuleArgs<IO> a, DeltaRuleGrad<IO> gr, Geo g, ChunksOf<S, IO> ws,
                           GradScratch<S> gs, KeysLayout lay, S* scratch) {
  static_assert(kTile == C, "a C x C matrix takes a tile's place");
  using Op = OperandOf<S, IO>;
  static_assert(std::is_same_v<Op, IO>, "dO joins the workspace's tiles as it is");
  S* base = block_base<S, Shared>(scratch, lay.total);
  const Factors<S> f(base + lay.f);
  constexpr int nw = kNt / 32, lt = row_stride(kTile, TC);
  S *T0 = base + lay.sets, *T1 = T0 + C * lt, *T2 = T1 + C * lt, *dq = base + lay.dq;
  S *dk = base + lay.dk, *X = base + lay.X, *red = base + lay.red;
  const int K = g.K, V = g.V, KT = (K + kTile - 1) / kTile, VT = (V + kTile - 1) / kTile;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, l16 = lay.l16;
  const bool async = Shared, gated = a.g != nullptr, ahead = lay.buffers == 2;
  const S s = static_cast<S>(a.scale);
  auto tile = [&](int b, int i) {
    return reinterpret_cast<Op*>(base + lay.sets + b * lay.set_size) + i * C * l16;
  };
  for (int64_t item = blockIdx.x; item < g.B * g.H * g.NC * KT; item += gridDim.x) {
    const int64_t e = item / KT, bh = e / g.NC, c = e - bh * g.NC, row0 = g.row(bh, c * C);
    const int kti = static_cast<int>(item - e * KT), k0 = kti * kTile, nk = min(kTile, K - k0);
    const int n = g.rows(c);
    copy_rows(f.beta, kFactors, gs.factors + e * kFactors, kFactors, 1, kFactors, async);
    cp_async_commit();
    const Op *Sg = ws.states + e * K * V + k0 * V, *dSg = ws.dso + e * K * V + k0 * V;
    // Stage t of the V loop, a commit group: t < VT, value tile t's dO (rows past n zero), dY
    // and S; t >= VT, value tile t - VT's Vn, dS and, with a gate, S.
    auto fetch = [&](int t, int b) {
      const int j0 = (t % VT) * kTile, nv = min(kTile, V - j0);
      if (t < VT) {
        copy_rows(tile(b, 0), l16, gr.dout + row0 * V + j0, g.H * V, n, nv, async);
        stage_rows(tile(b, 0) + n * l16, l16, C - n, nv, [](int, int) { return value_cast<Op>(0.f); });
        copy_rows(tile(b, 1), l16, ws.dy + e * C * V + j0, V, C, nv, async);
      } else {
        copy_rows(tile(b, 0), l16, ws.u + e * C * V + j0, V, C, nv, async);
        copy_rows(tile(b, 1), l16, dSg + j0, V, nk, nv, async);
      }
      if (t < VT || gated) copy_rows(tile(b, 2), l16, Sg + j0, V, nk, nv, async);
      cp_async_commit();
    };
    // Stage t's set, once the next stage is fetched (ahead) or this one (in turn).
    auto begin = [&](int t) {
      const int b = ahead ? t & 1 : 0;
      if (!ahead) fetch(t, 0);
      else if (t + 1 < 2 * VT) fetch(t + 1, b ^ 1);
      else cp_async_commit();  // an empty group: the wait below counts alike
      if (ahead)
        cp_async_wait<1>();
      else
        cp_async_wait<0>();
      __syncthreads();
      return b;
    };
    auto cols = [&](int t) { return min(kTile, V - (t % VT) * kTile); };
    if (ahead) fetch(0, 0);
    // dq_S = dO S^T and X = dY S^T, then dk_lam = Vn dS^T and, with a gate, <S, dS>, over this
    // tile's keys (the sums in registers with tensor-core products).
    {
      TileSum<S, IO, TC, nw> sq{dq, lt}, sx{X, lt};
      for (int t = 0; t < VT; ++t) {
        const int b = begin(t), nv = cols(t);
        const Op* St = tile(b, 2);
        sq.add(nk, nv, operand_a<Op, TC, Shared>(tile(b, 0), l16), operand_b<Op, TC, Shared>(St, l16),
               t == 0);
        sx.add(nk, nv, operand_a<Op, TC, Shared>(tile(b, 1), l16), operand_b<Op, TC, Shared>(St, l16),
               t == 0);
        __syncthreads();  // the set is free for the stage after next
      }
      sq.out(nk);
      sx.out(nk);
    }
    S sds = S(0);
    {
      TileSum<S, IO, TC, nw> sk{dk, lt};
      for (int t = VT; t < 2 * VT; ++t) {
        const int b = begin(t), nv = cols(t);
        const Op *dS = tile(b, 1), *St = tile(b, 2);
        sk.add(nk, nv, operand_a<Op, TC, Shared>(tile(b, 0), l16), operand_b<Op, TC, Shared>(dS, l16),
               t == VT);
        if (gated)  // a warp a row
          for (int i = warp; i < nk; i += nw)
            for (int j = lane; j < nv; j += 32)
              sds += value_cast<S>(St[i * l16 + j]) * value_cast<S>(dS[i * l16 + j]);
        __syncthreads();
      }
      sk.out(nk);
    }
    if (gated) sds = block_reduce(sds, SumOp{}, S(0), red);
    copy_rows(T2, lt, gs.cc + (e * 4 + 2) * C * C, C, C, C, async);  // dP, under the rest
    cp_async_commit();
    stage_keys(T0, T1, lt, a, f.rq, f.rk, g, bh, c, n, k0, nk);  // q and k of the tile's keys
    __syncthreads();
    // The tile's row sums of the V products: eq = rowsum(Q o s gam dO S^T), el = rowsum(K o
    // lam Vn dS^T), ek = rowsum(K o X). With them (the same thread an entry) the products'
    // first terms of dq = s diag(gam) dO S^T + dP K and dk = diag(lam) Vn dS^T
    // - diag(gam beta) X + dP^T Q + (diag(beta) D + (diag(beta) D)^T) K (this tile's columns;
    // X folds into dk, then holds D).
    S* sums = gs.sums + (e * KT + kti) * kRowSums * C;
    for (int r = warp; r < C; r += nw) {
      S eq = S(0), el = S(0), ek = S(0);
      for (int i = lane; i < nk; i += 32) {
        const S q = dq[r * lt + i], k = dk[r * lt + i], x = X[r * lt + i];
        eq += T0[r * lt + i] * q;
        el += T1[r * lt + i] * k;
        ek += T1[r * lt + i] * x;
        dq[r * lt + i] = (s * f.gam[r]) * q;
        dk[r * lt + i] = f.lam[r] * k - (f.gam[r] * f.beta[r]) * x;
      }
      eq = warp_reduce(eq, SumOp{});
      el = warp_reduce(el, SumOp{});
      ek = warp_reduce(ek, SumOp{});
      if (lane == 0) {
        sums[r] = s * f.gam[r] * eq;
        sums[C + r] = f.lam[r] * el;
        sums[2 * C + r] = ek;
      }
    }
    if (threadIdx.x == 0) gs.sds[e * KT + kti] = sds;
    cp_async_wait<0>();
    __syncthreads();
    copy_rows(X, lt, gs.cc + (e * 4 + 3) * C * C, C, C, C, async);
    cp_async_commit();
    product<S, IO, TC, nw>(
        C, nk, C, [&](int r, int l) { return T2[r * lt + l]; },
        [&](int l, int i) { return T1[l * lt + i]; },
        [&](int r, int i, S x) { dq[r * lt + i] += x; });
    product<S, IO, TC, nw>(
        C, nk, C, [&](int r, int l) { return T2[l * lt + r]; },
        [&](int l, int i) { return T0[l * lt + i]; },
        [&](int r, int i, S x) { dk[r * lt + i] += x; });
    cp_async_wait<0>();
    __syncthreads();
    product<S, IO, TC, nw>(  // D is strictly lower: one of the two terms is zero
        C, nk, C,
        [&](int r, int l) { return f.beta[r] * X[r * lt + l] + f.beta[l] * X[l * lt + r]; },
        [&](int l, int i) { return T1[l * lt + i]; },
        [&](int r, int i, S x) { dk[r * lt + i] += x; });
    __syncthreads();
    S* dqg = gs.dqk + e * 2 * C * K + k0;
    for (int r = warp; r < C; r += nw) {  // the L2-norm backward's row sums, the columns out
      S pq = S(0), pk = S(0);
      for (int i = lane; i < nk; i += 32) {
        pq += T0[r * lt + i] * dq[r * lt + i];
        pk += T1[r * lt + i] * dk[r * lt + i];
        dqg[r * K + i] = dq[r * lt + i];
        dqg[C * K + r * K + i] = dk[r * lt + i];
      }
      pq = warp_reduce(pq, SumOp{});
      pk = warp_reduce(pk, SumOp{});
      if (lane == 0) {
        sums[3 * C + r] = pq;
        sums[4 * C + r] = pk;
      }
    }
    __syncthreads();  // the buffers are read before the next item rewrites them
  }
}

struct RowsSumLayout {
  int64_t f, A, QK, dPE, D, e0, dlam, sums, total;
  RowsSumLayout(Arena ar, bool tc) {
    const int lc = row_stride(C, tc);
    f = ar.take(kFactors);
    for (int64_t* t : {&A, &QK, &dPE, &D}) *t = ar.take(int64_t(C) * lc);
    e0 = ar.take(C);
    dlam = ar.take(C);
    sums = ar.take(kRowSums * C + 1);  // the sums over key tiles, then <S, dS>
    total = ar.at;
  }
};

template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(kNt)
    delta_grad_rows_kernel(DeltaRuleArgs<IO> a, DeltaRuleGrad<IO> gr, Geo g, GradScratch<S> gs,
                           RowsSumLayout lay, S* scratch) {
  S* base = block_base<S, Shared>(scratch, lay.total);
  const Factors<S> f(base + lay.f);
  S *A = base + lay.A, *QK = base + lay.QK, *dPE = base + lay.dPE, *D = base + lay.D;
  S *e0 = base + lay.e0, *dlam = base + lay.dlam, *sums = base + lay.sums;
  constexpr int nw = kNt / 32, lc = row_stride(C, TC);
  const int K = g.K, KT = (K + kTile - 1) / kTile, tid = threadIdx.x, lane = tid & 31;
  const int warp = tid >> 5;
  const bool async = Shared, gated = a.g != nullptr;
  for (int64_t e = blockIdx.x; e < g.B * g.H * g.NC; e += gridDim.x) {
    const int64_t bh = e / g.NC, c = e - bh * g.NC;
    const int n = g.rows(c);
    copy_rows(f.beta, kFactors, gs.factors + e * kFactors, kFactors, 1, kFactors, async);
    S* mats[4] = {A, QK, dPE, D};
    for (int m = 0; m < 4; ++m)
      if (m != 1 || gated)  // QK enters only the decay gradients
        copy_rows(mats[m], lc, gs.cc + (e * 4 + m) * C * C, C, C, C, async);
    cp_async_commit();
    for (int x = tid; x <= kRowSums * C; x += kNt) {  // the key tiles in order
      const S* src = x < kRowSums * C ? gs.sums + e * KT * kRowSums * C + x : gs.sds + e * KT;
      const int64_t step = x < kRowSums * C ? kRowSums * C : 1;
      S acc = S(0);
      for (int t = 0; t < KT; ++t) acc += src[t * step];
      sums[x] = acc;
    }
    cp_async_wait<0>();
    __syncthreads();
    const S *eq = sums, *el = sums + C, *ek = sums + 2 * C, *pq = sums + 3 * C;
    const S* pk = sums + 4 * C;
    const S sds = sums[kRowSums * C];
    // e0 = rowsum(Q o dQ_S) (+ gam_n <S, dS> on the last row) - gam beta rowsum(K o X);
    // dbeta = rowsum(dY o V) - gam rowsum(K o X) + rowsum(D o A).
    for (int r = warp; r < n; r += nw) {
      S da = S(0);
      for (int l = lane; l < r; l += 32) da += D[r * lc + l] * A[r * lc + l];
      da = warp_reduce(da, SumOp{});
      if (lane == 0) {
        e0[r] = eq[r] + (r == n - 1 ? f.gam[n - 1] * sds : S(0)) - (f.gam[r] * f.beta[r]) * ek[r];
        dlam[r] = el[r];
        gr.dbeta[g.row(bh, c * C + r)] = value_cast<IO>(f.yv[r] - f.gam[r] * ek[r] + da);
      }
    }
    __syncthreads();
    if (gated) decay_gradients<kNt>(dPE, QK, D, A, lc, f.beta, e0, dlam, n, gr.dg, g, bh, c);
    // The L2-norm backward (du = (dx - <dx, x> x) / |u|), rows out.
    const S* dqs = gs.dqk + e * 2 * C * K;
    for (int r = warp; r < n; r += nw) {
      const int64_t row = g.row(bh, c * C + r);
      const S sq = a.l2norm_qk ? pq[r] : S(0), sk = a.l2norm_qk ? pk[r] : S(0);
      for (int i = lane; i < K; i += 32) {
        const S qn = value_cast<S>(a.q[row * K + i]) * f.rq[r];
        const S kn = value_cast<S>(a.k[row * K + i]) * f.rk[r];
        gr.dq[row * K + i] = value_cast<IO>(f.rq[r] * (dqs[r * K + i] - sq * qn));
        gr.dk[row * K + i] = value_cast<IO>(f.rk[r] * (dqs[C * K + r * K + i] - sk * kn));
      }
    }
    __syncthreads();  // the buffers are read before the next item rewrites them
  }
}

template <class S, class IO, bool TC>
void tiled_gradients(const DeltaRuleArgs<IO>& a, const DeltaRuleGrad<IO>& gr, const Geo& g,
                     const ChunksOf<S, IO>& ws, const char* op) {
  const int64_t items = g.B * g.H * g.NC, KT = (g.K + kTile - 1) / kTile;
  Arena ar;
  const int64_t cc = ar.take(items * 4 * C * C), factors = ar.take(items * kFactors);
  const int64_t dqk = ar.take(items * 2 * C * g.K), sums = ar.take(items * KT * kRowSums * C);
  const int64_t sds = ar.take(items * KT);
  Tensor buf = scratch_of<S>(ar.at);
  S* b = static_cast<S*>(buf.raw_data());
  const GradScratch<S> gs{b + cc, b + factors, b + dqk, b + sums, b + sds};
  const ScoresLayout scores(Arena{}, TC);
  launch_items<S>(delta_grad_scores_kernel<S, IO, TC, true>,
                  delta_grad_scores_kernel<S, IO, TC, false>, wide_threads(TC), items, scores.total,
                  op, a, gr, g, ws, gs, scores);
  constexpr bool half = !std::is_same_v<OperandOf<S, IO>, S>;
  const KeysLayout two(Arena{}, TC, half, 2), one(Arena{}, TC, half, 1);
  const size_t limit = shared_memory_limit();  // two blocks an SM: each under half of it
  const KeysLayout& keys = TC && 2 * size_t(two.total) * sizeof(S) + 1024 <= limit ? two : one;
  launch_items<S>(delta_grad_keys_kernel<S, IO, TC, true>, delta_grad_keys_kernel<S, IO, TC, false>,
                  kNt, items * KT, keys.total, op, a, gr, g, ws, gs, keys);
  const RowsSumLayout rows(Arena{}, TC);
  launch_items<S>(delta_grad_rows_kernel<S, IO, TC, true>, delta_grad_rows_kernel<S, IO, TC, false>,
                  kNt, items, rows.total, op, a, gr, g, gs, rows);
}

#define HLA_TILED_GRADIENTS(S, IO, TC)                                                     \
  template void tiled_gradients<S, IO, TC>(const DeltaRuleArgs<IO>&, const DeltaRuleGrad<IO>&, \
                                           const Geo&, const ChunksOf<S, IO>&, const char*);
HLA_DELTA_CHUNK_INSTANTIATE(HLA_TILED_GRADIENTS)
#undef HLA_TILED_GRADIENTS

}  // namespace delta_chunk
}  // namespace hla::cuda
