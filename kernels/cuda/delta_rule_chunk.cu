// The chunked delta rule's forward kernels (prep, walk, output), the states both passes start
// from (forward_states) and delta_rule_chunk_forward. The algorithm, the layouts and what the
// kernels share: delta_rule_chunk.cuh.
#include "kernels/cuda/delta_rule_chunk.cuh"

namespace hla::cuda {
namespace delta_chunk {

// ---- prep: Ti, U, W, P, diag(lam) K, diag(gam) Q, gam_n of every chunk
// Over 64-key tiles (K K^T and Q K^T summed, diag(lam) K and diag(gam) Q out), then
// Ti = (I + L)^{-1}, U = Ti diag(beta) V over 64-value tiles and W = Ti diag(beta gam) K over
// 64-key tiles: no buffer wider than 64 columns (about 94 KiB in f32, two blocks an SM). L,
// free after the solve, then holds the V and K tiles of U and W, which the products read down
// their columns (so it has room for col_stride rows).

struct PrepLayout {
  int64_t f, t0, t1, L, P, ti, tmp, total;
  PrepLayout(Arena ar, bool tc) {
    const int lt = row_stride(kTile, tc), lc = row_stride(C, tc);
    f = ar.take(kFactors);
    t0 = ar.take(int64_t(C) * lt);
    t1 = ar.take(int64_t(C) * lt);
    L = ar.take(int64_t(C) * std::max(lc, col_stride(kTile, tc)));
    P = ar.take(int64_t(C) * lc);
    ti = ar.take(int64_t(C) * lc);
    tmp = ar.take(int64_t(kSolve) * lc);
    total = ar.at;
  }
};

// Two blocks an SM (their shared memory's count) bound the registers at 128; without the bound
// ptxas may take fewer and spill.
template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(kNt, Shared ? 2 : 1)
    delta_prep_kernel(DeltaRuleArgs<IO> a, Geo g, ChunksOf<S, IO> ws, PrepLayout lay,
                      S* scratch) {
  S* base = block_base<S, Shared>(scratch, lay.total);
  const Factors<S> f(base + lay.f);
  S *t0 = base + lay.t0, *t1 = base + lay.t1, *L = base + lay.L, *P = base + lay.P;
  S *ti = base + lay.ti, *tmp = base + lay.tmp;
  constexpr int lt = row_stride(kTile, TC), lc = row_stride(C, TC), lb = col_stride(kTile, TC);
  const int K = g.K, V = g.V;
  const bool gated = a.g != nullptr;
  for (int64_t e = blockIdx.x; e < g.B * g.H * g.NC; e += gridDim.x) {
    const int64_t bh = e / g.NC, c = e - bh * g.NC;
    const int n = g.rows(c);
    load_factors(a, g, bh, c, n, f);
    for (int k0 = 0; k0 < K; k0 += kTile) {  // K K^T and Q K^T; diag(lam) K, diag(gam) Q out
      const int nk = min(kTile, K - k0);
      const bool first = k0 == 0;
      stage_keys(t0, t1, lt, a, f.rq, f.rk, g, bh, c, n, k0, nk);
      __syncthreads();
      accumulate_abt<S, IO, TC, Shared>(L, lc, t1, t1, lt, C, nk, first);
      accumulate_abt<S, IO, TC, Shared>(P, lc, t0, t1, lt, C, nk, first);
      store_rows(ws.kl + e * C * K + k0, K, t1, lt, C, nk, f.lam);
      store_rows(ws.qg + e * C * K + k0, K, t0, lt, C, nk, f.gam);
      __syncthreads();
    }
    // L = tril_{-1}(diag(beta)(K K^T o M)) in place; P = (Q K^T) o M out, four columns of a
    // row a thread (one 16-byte store of P in f32).
    static_assert(C % 4 == 0, "four columns in one row");
    for (int x = 4 * threadIdx.x; x < C * C; x += 4 * blockDim.x) {
      const int r = x / C, l0 = x - r * C;
      S p[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int l = l0 + u;
        const S m = decay(f.Gam, gated, r, l);
        L[r * lc + l] = r > l ? f.beta[r] * (L[r * lc + l] * m) : S(0);
        p[u] = P[r * lc + l] * m;
      }
      auto* out = ws.p + e * C * C + x;  // aligned: whole C x C blocks from an aligned base
      if constexpr (std::is_same_v<decltype(out), bf16_dev*>) {
        *reinterpret_cast<uint2*>(out) = make_uint2(pack_bf16(p[0], p[1]), pack_bf16(p[2], p[3]));
      } else if constexpr (std::is_same_v<S, float>) {
        *reinterpret_cast<float4*>(out) = make_float4(p[0], p[1], p[2], p[3]);
      } else {
#pragma unroll
        for (int u = 0; u < 4; ++u) out[u] = p[u];
      }
    }
    if (threadIdx.x == 0) ws.gn[e] = f.gam[n - 1];
    __syncthreads();
    if constexpr (TC)  // products on the tensor cores: the inverse's block rows too
      invert_unit_lower_tc(L, ti, tmp, lc);
    else
      invert_unit_lower(L, ti, tmp, lc);
    store_rows(ws.ti + e * C * C, C, ti, lc, C, C);
    // U and W tile by tile: the operand tile in L (free now), the product into t0 or P (free
    // too), then out a row of 16 bytes a store, not an element a store from the fragments.
    const int64_t row0 = g.row(bh, c * C);
    for (int j0 = 0; j0 < V; j0 += kTile) {  // U = Ti diag(beta) V
      const int nv = min(kTile, V - j0);
      stage_scaled(L, lb, C, n, nv, a.v + row0 * V + j0, g.H * V, f.beta);
      __syncthreads();  // L staged; the previous tile's rows of t0 stored
      product<S, IO, TC>(
          C, nv, C, operand_a<S, TC, Shared>(ti, lc), [&](int l, int j) { return L[l * lb + j]; },
          [&](int r, int j, S x) { t0[r * lt + j] = x; });
      __syncthreads();
      store_rows(ws.u + e * C * V + j0, V, t0, lt, C, nv);
    }
    for (int k0 = 0; k0 < K; k0 += kTile) {  // W = Ti diag(beta gam) K
      const int nk = min(kTile, K - k0);
      if (K > kTile)
        stage_keys(L, lb, a.k, f.rk, g, bh, c, n, k0, nk);
      else  // the one key tile, still in t1 from the first loop
        store_rows(L, lb, t1, lt, C, nk);
      __syncthreads();  // L staged; the previous tile's rows of P stored
      product<S, IO, TC>(
          C, nk, C, operand_a<S, TC, Shared>(ti, lc),
          [&](int l, int i) { return (f.beta[l] * f.gam[l]) * L[l * lb + i]; },
          [&](int r, int i, S x) { P[r * lc + i] = x; });
      __syncthreads();
      store_rows(ws.w + e * C * K + k0, K, P, lc, C, nk);
    }
    __syncthreads();  // L and P are read before the next item rewrites them
  }
}

// ---- walk: the states and Vn = U - W S, chunks in order, 64 value columns per block

// The walk's state slice St [K][lw], `buffers` sets of a chunk's W [C][lk] (read along its
// rows) and U / Vn [C][lu] (after W), and one diag(lam) K [C][lkt] (read down its columns).
// Two sets when they fit in shared memory: the next chunk's W and U then load under this
// chunk's products, and its diag(lam) K, which only the second product reads, under the
// first. In bf16 (half) W, U / Vn and diag(lam) K take half_stride and half the space, and St
// is kept in bf16 as well (Kept: S16) for the products.
struct WalkLayout {
  int64_t S_, sets, set_size, kl, S16, total;
  int buffers, cols, lk, lkt, lu;
  WalkLayout(Arena ar, int K, bool tc, bool half, int buffers_, int cols_)
      : buffers(buffers_),
        cols(cols_),
        lk(half ? half_stride(K) : row_stride(K, tc)),
        lkt(half ? half_stride(K) : col_stride(K, tc)),
        lu(half ? kCopyStride : col_stride(cols_, tc)) {
    const int per = half ? 2 : 1;
    S_ = ar.take(int64_t(K) * walk_stride(cols, tc));
    set_size = (int64_t(C) * lk + int64_t(C) * lu) / per;
    sets = ar.take(buffers * set_size);
    kl = ar.take(int64_t(C) * lkt / per);
    S16 = half ? ar.take(int64_t(K) * kCopyStride / per) : 0;
    total = ar.at;
  }
};

template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(wide_threads(TC), TC ? 1 : kWalkBlocks)
    delta_walk_kernel(const IO* __restrict__ h0, IO* __restrict__ hT, Geo g, ChunksOf<S, IO> ws,
                      WalkLayout lay, S* scratch) {
  using Op = OperandOf<S, IO>;
  constexpr int per = sizeof(S) / sizeof(Op);
  S* base = block_base<S, Shared>(scratch, lay.total);
  Op* Kl = reinterpret_cast<Op*>(base + lay.kl);
  const bool async = Shared, ahead = lay.buffers == 2;
  const int K = g.K, V = g.V, cols = lay.cols, lk = lay.lk, lkt = lay.lkt, lu = lay.lu;
  const int lw = walk_stride(cols, TC);
  const int n_slices = (V + cols - 1) / cols;
  // The state, and its bf16 copy for the products in the shared instance of the bf16 path;
  // U / Vn in the workspace's type, read by ldmatrix there.
  const Kept<S, Shared && per == 2> St{base + lay.S_, lw,
                                       reinterpret_cast<bf16_dev*>(base + lay.S16)};
  using KeptVn = Kept<Op, false, Shared && per == 2>;
  for (int64_t item = blockIdx.x; item < g.B * g.H * n_slices; item += gridDim.x) {
    const int64_t bh = item / n_slices;
    const int j0 = static_cast<int>(item - bh * n_slices) * cols;
    const int nv = min(cols, V - j0);
    const int64_t state = bh * K * V;
    // Chunk c's W and U into set b, and its diag(lam) K: a commit group each.
    auto fetch_wu = [&](int64_t c, int b) {
      const int64_t e = bh * g.NC + c;
      S* set = base + lay.sets + b * lay.set_size;
      copy_rows(reinterpret_cast<Op*>(set), lk, ws.w + e * C * K, K, C, K, async);
      copy_rows(reinterpret_cast<Op*>(set) + C * lk, lu, ws.u + e * C * V + j0, V, C, nv, async);
      cp_async_commit();
    };
    auto fetch_kl = [&](int64_t c) {
      copy_rows(Kl, lkt, ws.kl + (bh * g.NC + c) * C * K, K, C, K, async);
      cp_async_commit();
    };
    St.stage(K, nv,
             [&](int i, int j) { return h0 ? value_cast<S>(h0[state + i * V + j0 + j]) : S(0); });
    if (ahead) fetch_wu(0, 0);
    for (int64_t c = 0; c < g.NC; ++c) {
      const int64_t e = bh * g.NC + c;
      const int b = ahead ? static_cast<int>(c & 1) : 0;
      S* set = base + lay.sets + b * lay.set_size;
      const Op* X = reinterpret_cast<const Op*>(set);  // W
      const KeptVn vn{reinterpret_cast<Op*>(set) + C * lk, lu, nullptr};
      __syncthreads();  // the previous chunk's products are done: St final, its buffers free
      // The groups in flight, oldest first: ahead, W U (c), diag(lam) K (c), W U (c + 1) (an
      // empty group on the last chunk, so that the waits count alike); else W U, diag(lam) K.
      if (!ahead) fetch_wu(c, 0);
      fetch_kl(c);
      if (ahead) {
        if (c + 1 < g.NC) fetch_wu(c + 1, b ^ 1);
        else cp_async_commit();
      }
      store_rows(ws.states + e * K * V + j0, V, St.x, lw, K, nv);
      if (ahead)
        cp_async_wait<2>();
      else
        cp_async_wait<1>();
      __syncthreads();
      product<S, IO, TC, wide_threads(TC) / 32>(
          C, nv, K, operand_a<Op, TC, Shared>(X, lk), St.operand(),
          [&](int r, int j, S ws_) { vn.set(r, j, vn.at(r, j) - ws_); });
      if (ahead)  // and diag(lam) K
        cp_async_wait<1>();
      else
        cp_async_wait<0>();
      __syncthreads();
      store_rows(ws.u + e * C * V + j0, V, vn.x, lu, C, nv);
      const S gn = ws.gn[e];
      product<S, IO, TC, wide_threads(TC) / 32>(
          K, nv, C, operand_t<Op, TC, Shared>(Kl, lkt), vn.operand(),
          [&](int i, int j, S kv) { St.set(i, j, gn * St.at(i, j) + kv); });
    }
    __syncthreads();
    if (hT)
      unstage_rows(St.x, lw, K, nv,
                   [&](int i, int j, S x) { hT[state + i * V + j0 + j] = value_cast<IO>(x); });
    __syncthreads();  // St is read before the next item rewrites it
  }
}

// ---- output: O = s [diag(gam) Q S + P Vn], 64 value columns per block

// diag(gam) Q and P are read along their rows (row_stride), S, Vn and qs down their columns
// (col_stride); in bf16 (half) all but qs take half_stride and half the space.
struct OutputLayout {
  int64_t qg, St, P, vn, qs, total;
  int lk, lc, ls;  // the row strides of diag(gam) Q, P, and S and Vn
  OutputLayout(Arena ar, int K, bool tc, bool half)
      : lk(half ? half_stride(K) : row_stride(K, tc)),
        lc(half ? half_stride(C) : row_stride(C, tc)),
        ls(half ? half_stride(kOutputColumns) : col_stride(kOutputColumns, tc)) {
    const int per = half ? 2 : 1;
    qg = ar.take(int64_t(C) * lk / per);
    St = ar.take(int64_t(K) * ls / per);
    P = ar.take(int64_t(C) * lc / per);
    vn = ar.take(int64_t(C) * ls / per);
    qs = ar.take(int64_t(C) * col_stride(kOutputColumns, tc));
    total = ar.at;
  }
};

template <class S, class IO, bool TC, bool Shared>
__global__ void __launch_bounds__(kNt)
    delta_output_kernel(Geo g, ChunksOf<S, IO> ws, S scale, IO* __restrict__ o, OutputLayout lay,
                        S* scratch) {
  using Op = OperandOf<S, IO>;
  S* base = block_base<S, Shared>(scratch, lay.total);
  auto op = [&](int64_t at) { return reinterpret_cast<Op*>(base + at); };
  Op *qg = op(lay.qg), *P = op(lay.P), *St = op(lay.St), *vn = op(lay.vn);
  S* qs = base + lay.qs;  // diag(gam) Q S
  const bool async = Shared;
  constexpr int lo = col_stride(kOutputColumns, TC);
  const int K = g.K, V = g.V, lk = lay.lk, lc = lay.lc, ls = lay.ls;
  const int n_slices = (V + kOutputColumns - 1) / kOutputColumns;
  for (int64_t item = blockIdx.x; item < g.B * g.H * g.NC * n_slices; item += gridDim.x) {
    const int64_t e = item / n_slices, bh = e / g.NC, c = e - bh * g.NC;
    const int j0 = static_cast<int>(item - e * n_slices) * kOutputColumns;
    const int nv = min(kOutputColumns, V - j0), n = g.rows(c);
    const int64_t row0 = g.row(bh, c * C);
    copy_rows(qg, lk, ws.qg + e * C * K, K, C, K, async);  // the four tiles in one round trip
    copy_rows(St, ls, ws.states + e * K * V + j0, V, K, nv, async);
    copy_rows(P, lc, ws.p + e * C * C, C, C, C, async);
    copy_rows(vn, ls, ws.u + e * C * V + j0, V, C, nv, async);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    product<S, IO, TC>(
        C, nv, K, operand_a<Op, TC, Shared>(qg, lk), operand_c<Op, TC, Shared>(St, ls),
        [&](int r, int j, S x) { qs[r * lo + j] = x; });
    product<S, IO, TC>(  // same shape: each thread reads back only its own qs entries
        C, nv, C, operand_a<Op, TC, Shared>(P, lc), operand_c<Op, TC, Shared>(vn, ls),
        [&](int r, int j, S x) {
          if (r < n)
            o[(row0 + r * g.H) * V + j0 + j] = value_cast<IO>(scale * (qs[r * lo + j] + x));
        });
    __syncthreads();  // the buffers are read before the next item rewrites them
  }
}

// prep and walk: the chunks' matrices and states (Vn in ws.u), hT when asked.
template <class S, class IO, bool TC>
void forward_states(const DeltaRuleArgs<IO>& a, const Geo& g, const ChunksOf<S, IO>& ws,
                    IO* hT, const char* op) {
  bool prepped = false;
  if constexpr (std::is_same_v<IO, bf16_dev>) prepped = prep_bf16(a, g, ws, op);
  if (!prepped) {
    const PrepLayout prep(Arena{}, TC);
    launch_items<S>(delta_prep_kernel<S, IO, TC, true>, delta_prep_kernel<S, IO, TC, false>, kNt,
                    g.B * g.H * g.NC, prep.total, op, a, g, ws, prep);
  }
  const int cols = walk_columns(g);
  const int64_t slices = (g.V + cols - 1) / cols;
  constexpr bool half = !std::is_same_v<OperandOf<S, IO>, S>;
  const WalkLayout two(Arena{}, g.K, TC, half, 2, cols), one(Arena{}, g.K, TC, half, 1, cols);
  const WalkLayout& walk = size_t(two.total) * sizeof(S) <= shared_memory_limit() ? two : one;
  launch_items<S>(delta_walk_kernel<S, IO, TC, true>, delta_walk_kernel<S, IO, TC, false>,
                  wide_threads(TC), g.B * g.H * slices, walk.total, op, a.h0, hT, g, ws, walk);
}

#define HLA_FORWARD_STATES(S, IO, TC)                                                      \
  template void forward_states<S, IO, TC>(const DeltaRuleArgs<IO>&, const Geo&,             \
                                          const ChunksOf<S, IO>&, IO*, const char*);
HLA_DELTA_CHUNK_INSTANTIATE(HLA_FORWARD_STATES)
#undef HLA_FORWARD_STATES

namespace {

template <class S, class IO, bool TC>
void chunk_forward(const DeltaRuleArgs<IO>& a, const DeltaRuleOut<IO>& out, const char* op) {
  const Geo g = geo_of(a.d);
  Workspace<S, IO> ws(g, false);
  forward_states<S, IO, TC>(a, g, ws.ptrs, out.hT, op);
  const int64_t slices = (g.V + kOutputColumns - 1) / kOutputColumns;
  const OutputLayout lay(Arena{}, g.K, TC, !std::is_same_v<OperandOf<S, IO>, S>);
  launch_items<S>(delta_output_kernel<S, IO, TC, true>, delta_output_kernel<S, IO, TC, false>, kNt,
                  g.B * g.H * g.NC * slices, lay.total, op, g, ws.ptrs, static_cast<S>(a.scale),
                  out.o, lay);
}

struct RunForward {
  const char* op;
  template <class C, class IO, bool TC, class Args, class Out>
  void operator()(const Args& args, const Out& o) const {
    chunk_forward<C, IO, TC>(args, o, op);
  }
};

}  // namespace
}  // namespace delta_chunk

template <class S>
void delta_rule_chunk_forward(const DeltaRuleArgs<S>& a, const DeltaRuleOut<S>& out) {
  const char* op = "delta_rule_chunk_forward (cuda)";
  delta_chunk::check_args(a, op);
  HLA_CHECK(out.o, "o is required");
  delta_chunk::with_kernel_types(a, out, delta_chunk::RunForward{op});
}

template void delta_rule_chunk_forward<float>(const DeltaRuleArgs<float>&, const DeltaRuleOut<float>&);
template void delta_rule_chunk_forward<double>(const DeltaRuleArgs<double>&, const DeltaRuleOut<double>&);
template void delta_rule_chunk_forward<bf16>(const DeltaRuleArgs<bf16>&, const DeltaRuleOut<bf16>&);

}  // namespace hla::cuda
