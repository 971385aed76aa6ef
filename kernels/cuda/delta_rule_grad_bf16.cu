// The one-kernel grad of the chunked delta rule for bf16 storage with heads up to 64 wide: dq,
// dk, dv, dbeta and dg of every chunk from the backward's workspace (S, the outgoing dS, Vn, dY;
// the equations in delta_rule_chunk.cuh), every matrix of a chunk in bf16 shared memory and
// every product on bf16 tensor cores from ldmatrix fragments.
//
// Per (head, chunk) block of 256 threads (two blocks an SM), with q, k the chunk's L2-normalised
// rows (normalised in place, in bf16: the rounding delta_grad_kernel's products apply to them):
//   A = K K^T,  P = dO Vn^T,  Y = dY Vn^T (, Q K^T gated)     four 64 x 64 tiles in registers
//   dP = s P o M,  D = -tril_{-1}(Y) o M                      bf16 dP and diag(beta) D stored
//   rowsum(D o A), and with a gate E = dP o QK + diag(beta)(D o A) (f32, for dg)
//   K S (its rowsum against dY only), dq = s diag(gam) dO S^T, dk = diag(lam) Vn dS^T, dY S^T
//   dq += dP K;  dk += dP^T Q + (diag(beta) D) K + (diag(beta) D)^T K - diag(gam beta) dY S^T
// The accumulators of dq and dk stay in registers from their first product to their rows out;
// the row sums (rowsum(D o A), rowsum(dY o K S), the decay terms, the norms' <q, dq>, <k, dk>)
// reduce the registers' entries over the 4 lanes of a row and the 2 warps of its columns.
// dg_l = sum_{i >= l} e0_i + sum_{j < l} sum_{i >= l} E_ij: E's columns summed from the bottom
// up (E_ij becomes its column's sum over rows >= i), then each row's prefix below the diagonal.
// Shared memory: 9 bf16 [64][72] buffers (q, k, dO, Vn, dY, S, dS, dP, diag(beta) D; v staged in
// diag(beta) D's place for rowsum(dY o V)), E (gated) and the row sums: ~87 KiB, ~104 gated.
#include "kernels/cuda/delta_rule_chunk.cuh"

namespace hla::cuda {
namespace delta_chunk {
namespace {

constexpr int kMaxWidth = 64;             // widest K, V: one 64 x 64 output tile a product
constexpr int kWarps = kNt / 32;          // 8: MmaTile<8>, four n8 tiles a warp
constexpr int kGroups = kWarps / 4;       // warps sharing a row (column groups of a tile)
constexpr int kLh = half_stride(kMaxWidth);  // every bf16 buffer's row stride
constexpr int kLe = row_stride(C, true);  // E's rows (f32)
constexpr int kSegment = C / (kNt / C);   // rows of E a thread sums up its column

// The row sums a thread's registers contribute to, one [kGroups][C] slab each.
enum Part { kDA, kYKS, kEQ, kEL, kPQ, kPK, kParts };

// Offsets in floats; a bf16 buffer of C rows takes C * kLh / 2.
struct Grad16Layout {
  int64_t f, red, e0, dlam, misc, tot, q, k, dO, vn, dy, S, dS, dP, bD, E, total;
  Grad16Layout(Arena ar, bool gated) {
    const int64_t half = int64_t(C) * kLh / 2;
    f = ar.take(kFactors);
    red = ar.take(int64_t(kParts) * kGroups * C);
    e0 = ar.take(C);
    dlam = ar.take(C);
    misc = ar.take(32);
    tot = ar.take(int64_t(kNt / C) * C);
    q = ar.take(half);
    k = ar.take(half);
    dO = ar.take(half);
    vn = ar.take(half);
    dy = ar.take(half);
    S = ar.take(half);
    dS = ar.take(half);
    dP = ar.take(half);
    bD = ar.take(half);
    E = gated ? ar.take(int64_t(C) * kLe) : 0;
    total = ar.at;
  }
};

// The rows and first columns of the pairs (acc[j][2h], acc[j][2h + 1]) a thread holds of a 64 x 64
// MmaTile<kWarps>: row r0 + 8 h, columns c0 + 8 j and + 1 (mma_tile_pairs' order).
struct PairSpots {
  int r0, c0, group;
  __device__ PairSpots() {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    r0 = 16 * (warp & 3) + (lane >> 2);
    c0 = MmaTile<kWarps>::span * (warp >> 2) + 2 * (lane & 3);
    group = warp >> 2;
  }
};
constexpr int kPairs = MmaTile<kWarps>::NT;

// Row sums of a thread's entries (x[h]: its rows r0 and r0 + 8) over the 4 lanes of each row, into
// part's slab at the warp's column group.
__device__ __forceinline__ void row_partials(float (&x)[2], float* red, Part part,
                                             const PairSpots& at) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    x[h] += __shfl_xor_sync(0xffffffffu, x[h], 1);
    x[h] += __shfl_xor_sync(0xffffffffu, x[h], 2);
  }
  if ((threadIdx.x & 3) == 0)
#pragma unroll
    for (int h = 0; h < 2; ++h) red[(part * kGroups + at.group) * C + at.r0 + 8 * h] = x[h];
}
__device__ __forceinline__ float row_sum(const float* red, Part part, int r) {
  float s = 0.f;
#pragma unroll
  for (int q = 0; q < kGroups; ++q) s += red[(part * kGroups + q) * C + r];
  return s;
}

// Row sums of x o m over the thread's entries (r, i < width) of tile x, m bf16 rows at kLh, into
// part's slab (row_partials).
template <class Tile>
__device__ __forceinline__ void row_dots(const Tile& x, const bf16_dev* m, int width, float* red,
                                         Part part, const PairSpots& at) {
  float out[2] = {0.f, 0.f};
#pragma unroll
  for (int j = 0; j < kPairs; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = at.r0 + 8 * h, i = at.c0 + 8 * j;
      if (i < width) {
        const float2 y = pair_of(m + r * kLh + i);
        out[h] += x.acc[j][2 * h] * y.x + x.acc[j][2 * h + 1] * y.y;
      }
    }
  row_partials(out, red, part, at);
}

__global__ void __launch_bounds__(kNt, 2)
    delta_grad_bf16_kernel(DeltaRuleArgs<bf16_dev> a, DeltaRuleGrad<bf16_dev> gr, Geo g,
                           ChunksOf<float, bf16_dev> ws, Grad16Layout lay) {
  using Tile = MmaTile<kWarps>;
  constexpr Rounding kBf16 = Rounding::Bf16;
  float* base = block_base<float, true>(nullptr, lay.total);
  const Factors<float> f(base + lay.f);
  float *red = base + lay.red, *e0 = base + lay.e0, *dlam = base + lay.dlam;
  float *misc = base + lay.misc, *tot = base + lay.tot, *E = base + lay.E;
  auto half = [&](int64_t at) { return reinterpret_cast<bf16_dev*>(base + at); };
  bf16_dev *qs = half(lay.q), *ks = half(lay.k), *dOs = half(lay.dO), *vns = half(lay.vn);
  bf16_dev *dys = half(lay.dy), *Ss = half(lay.S), *dSs = half(lay.dS), *dPs = half(lay.dP);
  bf16_dev *bDs = half(lay.bD), *vs = bDs;  // v's rows until diag(beta) D is written
  const int K = g.K, V = g.V, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const bool gated = a.g != nullptr;
  const float s = static_cast<float>(a.scale);
  const PairSpots at;
  for (int64_t e = blockIdx.x; e < g.B * g.H * g.NC; e += gridDim.x) {
    const int64_t bh = e / g.NC, c = e - bh * g.NC, row0 = g.row(bh, c * C), H = g.H;
    const int n = g.rows(c);
    load_decays(a, f, row0, H, n);
    fetch_rows(qs, kLh, a.q + row0 * K, H * K, K, n);
    fetch_rows(ks, kLh, a.k + row0 * K, H * K, K, n);
    fetch_rows(dOs, kLh, gr.dout + row0 * V, H * V, V, n);
    fetch_rows(vs, kLh, a.v + row0 * V, H * V, V, n);
    fetch_rows(vns, kLh, ws.u + e * C * V, V, V, C);
    fetch_rows(dys, kLh, ws.dy + e * C * V, V, V, C);
    fetch_rows(Ss, kLh, ws.states + e * K * V, V, V, K);  // rows K..C-1 zero
    fetch_rows(dSs, kLh, ws.dso + e * K * V, V, V, K);
    cp_async_commit();
    __syncthreads();  // beta, the log decays
    if (warp == 0) scan_decays(f.Gam);
    cp_async_wait<0>();
    __syncthreads();  // the rows, Gam

    // A warp a row: the norms (q, k normalised in place), the factors, rowsum(dY o V), dv.
    for (int r = warp; r < C; r += kWarps) {
      float sq = 0.f, sk = 0.f, yv = 0.f;
      for (int i = 2 * lane; i < K; i += 64) {
        const float2 x = pair_of(qs + r * kLh + i), y = pair_of(ks + r * kLh + i);
        sq += x.x * x.x + x.y * x.y;
        sk += y.x * y.x + y.y * y.y;
      }
      const float rq = inverse_norm(warp_reduce(sq, SumOp{}), a.l2norm_qk);
      const float rk = inverse_norm(warp_reduce(sk, SumOp{}), a.l2norm_qk);
      if (a.l2norm_qk)
        for (int i = 2 * lane; i < K; i += 64) {
          const float2 x = pair_of(qs + r * kLh + i), y = pair_of(ks + r * kLh + i);
          *reinterpret_cast<uint32_t*>(qs + r * kLh + i) = pack_bf16(rq * x.x, rq * x.y);
          *reinterpret_cast<uint32_t*>(ks + r * kLh + i) = pack_bf16(rk * y.x, rk * y.y);
        }
      const int64_t row = row0 + r * H;
      for (int j = 2 * lane; j < V; j += 64) {
        const float2 y = pair_of(dys + r * kLh + j), x = pair_of(vs + r * kLh + j);
        yv += y.x * x.x + y.y * x.y;
        if (r < n)
          *reinterpret_cast<uint32_t*>(gr.dv + row * V + j) =
              pack_bf16(f.beta[r] * y.x, f.beta[r] * y.y);
      }
      yv = warp_reduce(yv, SumOp{});
      if (lane == 0) {
        const bool in = r < n;
        f.rq[r] = rq;
        f.rk[r] = rk;
        f.gam[r] = in ? exp(f.Gam[r]) : 0.f;
        f.lam[r] = in ? exp(f.Gam[n - 1] - f.Gam[r]) : 0.f;
        f.yv[r] = yv;
      }
    }
    float sds = 0.f;  // <S, dS> for the gate of the state carry
    if (gated) {
      for (int x = 2 * tid; x < K * C; x += 2 * kNt) {
        const int i = x / C, j = x - i * C;
        if (j < V) {
          const float2 p = pair_of(Ss + i * kLh + j), d = pair_of(dSs + i * kLh + j);
          sds += p.x * d.x + p.y * d.y;
        }
      }
      sds = block_reduce(sds, SumOp{}, 0.f, misc);
    }
    __syncthreads();  // the normalised rows, the factors; v read

    // The C x C tiles: dP and diag(beta) D out in bf16, rowsum(D o A), E.
    {
      Tile tA, tY, tP, tQK;
      mma_tile_accumulate<kWarps, kBf16>(tA, 0, 0, C, C, K, Rows16{ks, kLh}, Rows16{ks, kLh});
      mma_tile_accumulate<kWarps, kBf16>(tY, 0, 0, C, C, V, Rows16{dys, kLh}, Rows16{vns, kLh});
      mma_tile_accumulate<kWarps, kBf16>(tP, 0, 0, C, C, V, Rows16{dOs, kLh}, Rows16{vns, kLh});
      if (gated)
        mma_tile_accumulate<kWarps, kBf16>(tQK, 0, 0, C, C, K, Rows16{qs, kLh}, Rows16{ks, kLh});
      float da[2] = {0.f, 0.f};
#pragma unroll
      for (int j = 0; j < kPairs; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = at.r0 + 8 * h, l = at.c0 + 8 * j;
          float dp[2], bd[2], ee[2];
#pragma unroll
          for (int u = 0; u < 2; ++u) {
            const int x = 2 * h + u;
            const float m = decay(f.Gam, gated, r, l + u);
            const float d = r > l + u ? -tY.acc[j][x] * m : 0.f;
            dp[u] = s * tP.acc[j][x] * m;
            bd[u] = f.beta[r] * d;
            da[h] += d * tA.acc[j][x];
            ee[u] = gated && r > l + u
                        ? dp[u] * tQK.acc[j][x] + f.beta[r] * (d * tA.acc[j][x])
                        : 0.f;
          }
          *reinterpret_cast<uint32_t*>(dPs + r * kLh + l) = pack_bf16(dp[0], dp[1]);
          *reinterpret_cast<uint32_t*>(bDs + r * kLh + l) = pack_bf16(bd[0], bd[1]);
          if (gated) *reinterpret_cast<float2*>(E + r * kLe + l) = make_float2(ee[0], ee[1]);
        }
      row_partials(da, red, kDA, at);
    }

    // dq and dk from the states, dY S^T, rowsum(dY o K S) and the decay terms.
    Tile tq, tk, tys;
    {
      Tile tKS;
      mma_tile_accumulate<kWarps, kBf16>(tKS, 0, 0, C, V, K, Rows16{ks, kLh}, Cols16{Ss, kLh});
      row_dots(tKS, dys, V, red, kYKS, at);
    }
    mma_tile_accumulate<kWarps, kBf16>(tq, 0, 0, C, K, V, Rows16{dOs, kLh}, Rows16{Ss, kLh});
    mma_tile_accumulate<kWarps, kBf16>(tk, 0, 0, C, K, V, Rows16{vns, kLh}, Rows16{dSs, kLh});
    mma_tile_accumulate<kWarps, kBf16>(tys, 0, 0, C, K, V, Rows16{dys, kLh}, Rows16{Ss, kLh});
#pragma unroll
    for (int j = 0; j < kPairs; ++j)
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const int r = at.r0 + 8 * (x >> 1);
        tq.acc[j][x] *= s * f.gam[r];
        tk.acc[j][x] *= f.lam[r];
        tys.acc[j][x] *= -f.gam[r] * f.beta[r];
      }
    if (gated) {
      row_dots(tq, qs, K, red, kEQ, at);
      row_dots(tk, ks, K, red, kEL, at);
    }
    __syncthreads();  // dP, diag(beta) D

    mma_tile_accumulate<kWarps, kBf16>(tq, 0, 0, C, K, C, Rows16{dPs, kLh}, Cols16{ks, kLh});
    mma_tile_accumulate<kWarps, kBf16>(tk, 0, 0, C, K, C, Cols16{dPs, kLh}, Cols16{qs, kLh});
    mma_tile_accumulate<kWarps, kBf16>(tk, 0, 0, C, K, C, Rows16{bDs, kLh}, Cols16{ks, kLh});
    mma_tile_accumulate<kWarps, kBf16>(tk, 0, 0, C, K, C, Cols16{bDs, kLh}, Cols16{ks, kLh});
#pragma unroll
    for (int j = 0; j < kPairs; ++j)
#pragma unroll
      for (int x = 0; x < 4; ++x) tk.acc[j][x] += tys.acc[j][x];
    if (a.l2norm_qk) {
      row_dots(tq, qs, K, red, kPQ, at);
      row_dots(tk, ks, K, red, kPK, at);
    }
    __syncthreads();  // the row sums

    if (tid < n) {  // dbeta = rowsum(dY o (V - diag(gam) K S)) + rowsum(D o A); e0, dlam
      const int r = tid;
      const float yks = row_sum(red, kYKS, r);
      gr.dbeta[row0 + r * H] =
          value_cast<bf16_dev>(f.yv[r] - f.gam[r] * yks + row_sum(red, kDA, r));
      if (gated) {
        e0[r] = row_sum(red, kEQ, r) + (r == n - 1 ? f.gam[n - 1] * sds : 0.f) -
                f.gam[r] * f.beta[r] * yks;
        dlam[r] = row_sum(red, kEL, r);
      }
    }
    // The L2-norm backward (x = u / |u|: du = (dx - <dx, x> x) / |u|), rows out from registers.
#pragma unroll
    for (int j = 0; j < kPairs; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = at.r0 + 8 * h, i = at.c0 + 8 * j;
        if (r >= n || i >= K) continue;
        const float pq = a.l2norm_qk ? row_sum(red, kPQ, r) : 0.f;
        const float pk = a.l2norm_qk ? row_sum(red, kPK, r) : 0.f;
        const float2 x = pair_of(qs + r * kLh + i), y = pair_of(ks + r * kLh + i);
        const int64_t at_row = (row0 + r * H) * K + i;
        *reinterpret_cast<uint32_t*>(gr.dq + at_row) =
            pack_bf16(f.rq[r] * (tq.acc[j][2 * h] - pq * x.x),
                      f.rq[r] * (tq.acc[j][2 * h + 1] - pq * x.y));
        *reinterpret_cast<uint32_t*>(gr.dk + at_row) =
            pack_bf16(f.rk[r] * (tk.acc[j][2 * h] - pk * y.x),
                      f.rk[r] * (tk.acc[j][2 * h + 1] - pk * y.y));
      }

    if (gated) {  // dg
      __syncthreads();  // e0, dlam
      if (tid < n - 1) E[(n - 1) * kLe + tid] += dlam[tid];
      __syncthreads();
      // E's columns summed from the bottom up: a column's segment a thread, then the segments
      // below added.
      const int col = tid % C, seg = tid / C, r0 = seg * kSegment;
      float run[kSegment];
      float acc = 0.f;
#pragma unroll
      for (int i = kSegment - 1; i >= 0; --i) {
        acc += E[(r0 + i) * kLe + col];
        run[i] = acc;
      }
      tot[seg * C + col] = acc;
      __syncthreads();
      float below = 0.f;
      for (int q = seg + 1; q < kNt / C; ++q) below += tot[q * C + col];
#pragma unroll
      for (int i = 0; i < kSegment; ++i) E[(r0 + i) * kLe + col] = run[i] + below;
      __syncthreads();
      for (int l = warp; l < n; l += kWarps) {  // dg_l = sum_{i >= l} e0_i + sum_{j < l} E'_lj
        float acc_l = 0.f;
        for (int x = lane; x < n; x += 32)
          acc_l += x >= l ? e0[x] : E[l * kLe + x];
        acc_l = warp_reduce(acc_l, SumOp{});
        if (lane == 0) gr.dg[row0 + l * H] = value_cast<bf16_dev>(acc_l);
      }
    }
    __syncthreads();  // the buffers are read before the next item rewrites them
  }
}

}  // namespace

bool grad_bf16(const DeltaRuleArgs<bf16_dev>& a, const DeltaRuleGrad<bf16_dev>& gr, const Geo& g,
               const ChunksOf<float, bf16_dev>& ws, const char* op) {
  const Grad16Layout lay(Arena{}, a.g != nullptr);
  const size_t bytes = static_cast<size_t>(lay.total) * sizeof(float);
  const auto addr = [](const void* p) { return reinterpret_cast<uintptr_t>(p); };
  const bool aligned =
      (addr(a.q) | addr(a.k) | addr(a.v) | addr(gr.dout)) % 16 == 0 &&
      (addr(gr.dq) | addr(gr.dk) | addr(gr.dv)) % 4 == 0;
  if (g.K % 8 != 0 || g.V % 8 != 0 || g.K > kMaxWidth || g.V > kMaxWidth || !aligned ||
      bytes > shared_memory_limit())
    return false;
  allow_shared_memory(delta_grad_bf16_kernel, bytes, op);
  delta_grad_bf16_kernel<<<static_cast<unsigned>(g.B * g.H * g.NC), kNt, bytes, stream()>>>(
      a, gr, g, ws, lay);
  CUDA_CHECK(cudaGetLastError());
  return true;
}

}  // namespace delta_chunk
}  // namespace hla::cuda
