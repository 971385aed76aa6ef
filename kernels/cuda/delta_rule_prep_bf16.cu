// prep of the chunked delta rule for bf16 storage with heads up to 128 wide: the same workspace
// matrices as delta_prep_kernel (delta_rule_chunk.cu; the equations in delta_rule_chunk.cuh),
// from one round trip to memory a chunk.
//
// Per (head, chunk) block of 256 threads, with Kr, Qr, Vr the chunk's raw bf16 rows (rows past
// n zero), rk, rq their inverse norms, M the decay mask:
//   A = Kr Kr^T, Qr Kr^T                       bf16 tensor cores from shared memory (ldmatrix)
//   L_rl = beta_r (rk_r rk_l A_rl M_rl) for r > l;  P_rl = rq_r rk_l (Qr Kr^T)_rl M_rl
//   diag(lam) K = lam_r (rk_r Kr_r),  diag(gam) Q = gam_r (rq_r Qr_r)
//   Ti = (I + L)^{-1}                          diagonal blocks by FMAs, block rows by 3xTF32
//                                              products (invert_unit_lower_tc)
//   U = bf16(Ti diag(beta)) Vr,  W = bf16(Ti diag(beta gam rk)) Kr
// The norms scale the products' results (and Ti's columns) instead of the staged rows, so that
// q, k and v are read once, by cp.async, before any barrier but the decays' scan; the staged
// rows are exact (raw bf16), each product rounds one operand to bf16 where delta_prep_kernel
// rounds both. Shared memory: q, k, v rows in bf16 and L, Ti in f32, ~69 KiB at K = V = 64
// (three blocks an SM; delta_prep_kernel's f32 tiles take ~94 KiB, two), ~91 KiB at 128.
#include "kernels/cuda/delta_rule_chunk.cuh"

namespace hla::cuda {
namespace delta_chunk {
namespace {

constexpr int kMaxWidth = 128;  // widest K, V staged whole
constexpr int kLc = row_stride(C, true);  // L and Ti rows (f32)
constexpr int kLt = half_stride(C);       // Ti diag(beta) and Ti diag(beta gam rk) rows (bf16)

// Offsets in floats; the bf16 rows at half_stride (whole 16-byte words, distinct banks for
// ldmatrix). Ti diag(beta) takes q's rows and Ti diag(beta gam rk) L's once they are free.
struct Prep16Layout {
  int64_t f, q, k, v, L, ti, tmp, total;
  int lk, lv;
  Prep16Layout(Arena ar, int K, int V) : lk(half_stride(K)), lv(half_stride(V)) {
    f = ar.take(kFactors);
    q = ar.take(int64_t(C) * lk / 2);
    k = ar.take(int64_t(C) * lk / 2);
    v = ar.take(int64_t(C) * lv / 2);
    L = ar.take(int64_t(C) * kLc);
    ti = ar.take(int64_t(C) * kLc);
    tmp = ar.take(int64_t(kSolve) * kLc);
    total = ar.at;
  }
};

// dst[r][:] (global, row length width) = scale[r] * (norm[r] * src[r][:]) for all C rows.
__device__ __forceinline__ void scaled_rows_out(bf16_dev* dst, const bf16_dev* src, int ld,
                                                int width, const float* norm, const float* scale) {
  const TileRows tile(width / 8);
  for (int it = threadIdx.x; it < C * tile.words; it += blockDim.x) {
    const int r = tile.row(it), c = (it - r * tile.words) * 8;
    const uint4 raw = *reinterpret_cast<const uint4*>(src + r * ld + c);
    bf16_dev h[8];
    memcpy(h, &raw, sizeof(h));
    const float nr = norm[r], s = scale[r];
    uint32_t o[4];
#pragma unroll
    for (int u = 0; u < 4; ++u)
      o[u] = pack_bf16(s * (nr * value_cast<float>(h[2 * u])),
                       s * (nr * value_cast<float>(h[2 * u + 1])));
    *reinterpret_cast<uint4*>(dst + r * width + c) = make_uint4(o[0], o[1], o[2], o[3]);
  }
}

// Three blocks an SM at K = V = 64 (their shared memory's count; two at 128): the bound keeps
// the registers within 85 a thread, so that the third fits.
__global__ void __launch_bounds__(kNt, 3)
    delta_prep_bf16_kernel(DeltaRuleArgs<bf16_dev> a, Geo g, ChunksOf<float, bf16_dev> ws,
                           Prep16Layout lay) {
  float* base = block_base<float, true>(nullptr, lay.total);
  const Factors<float> f(base + lay.f);
  auto half = [&](int64_t at) { return reinterpret_cast<bf16_dev*>(base + at); };
  bf16_dev *qs = half(lay.q), *ks = half(lay.k), *vs = half(lay.v);
  bf16_dev *tb = qs, *tw = half(lay.L);  // Ti diag(beta), Ti diag(beta gam rk) after the solve
  float *L = base + lay.L, *ti = base + lay.ti, *tmp = base + lay.tmp;
  const int K = g.K, V = g.V, lk = lay.lk, lv = lay.lv;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const bool gated = a.g != nullptr;
  for (int64_t e = blockIdx.x; e < g.B * g.H * g.NC; e += gridDim.x) {
    const int64_t bh = e / g.NC, c = e - bh * g.NC, row0 = g.row(bh, c * C), H = g.H;
    const int n = g.rows(c);
    load_decays(a, f, row0, H, n);
    fetch_rows(qs, lk, a.q + row0 * K, H * K, K, n);
    fetch_rows(ks, lk, a.k + row0 * K, H * K, K, n);
    fetch_rows(vs, lv, a.v + row0 * V, H * V, V, n);
    cp_async_commit();
    __syncthreads();  // beta, the log decays
    if (warp == 0) scan_decays(f.Gam);
    cp_async_wait<0>();
    __syncthreads();  // the rows, Gam
    MmaTile<8> kk, qk;
    mma_tile_accumulate<8, Rounding::Bf16>(kk, 0, 0, C, C, K, Rows16{ks, lk}, Rows16{ks, lk});
    mma_tile_accumulate<8, Rounding::Bf16>(qk, 0, 0, C, C, K, Rows16{qs, lk}, Rows16{ks, lk});
    for (int r = warp; r < C; r += kNt / 32) {  // the row factors, a warp a row
      float sq = 0.f, sk = 0.f;
      for (int i = 2 * lane; i < K; i += 64) {
        const float2 x = pair_of(qs + r * lk + i), y = pair_of(ks + r * lk + i);
        sq += x.x * x.x + x.y * x.y;
        sk += y.x * y.x + y.y * y.y;
      }
      sq = warp_reduce(sq, SumOp{});
      sk = warp_reduce(sk, SumOp{});
      if (lane == 0) {
        const bool in = r < n;
        f.rq[r] = inverse_norm(sq, a.l2norm_qk);
        f.rk[r] = inverse_norm(sk, a.l2norm_qk);
        f.gam[r] = in ? exp(f.Gam[r]) : 0.f;
        f.lam[r] = in ? exp(f.Gam[n - 1] - f.Gam[r]) : 0.f;
      }
    }
    __syncthreads();  // the factors
    bf16_dev* p_out = ws.p + e * C * C;
    auto masked = [&](int r, int l, float x, const float* left) {
      return left[r] * f.rk[l] * x * decay(f.Gam, gated, r, l);
    };
    mma_tile_pairs(kk, 0, 0, [&](int r, int l, float x0, float x1) {
      L[r * kLc + l] = r > l ? f.beta[r] * masked(r, l, x0, f.rk) : 0.f;
      L[r * kLc + l + 1] = r > l + 1 ? f.beta[r] * masked(r, l + 1, x1, f.rk) : 0.f;
    });
    mma_tile_pairs(qk, 0, 0, [&](int r, int l, float x0, float x1) {
      *reinterpret_cast<uint32_t*>(p_out + r * C + l) =
          pack_bf16(masked(r, l, x0, f.rq), masked(r, l + 1, x1, f.rq));
    });
    scaled_rows_out(ws.kl + e * C * K, ks, lk, K, f.rk, f.lam);
    scaled_rows_out(ws.qg + e * C * K, qs, lk, K, f.rq, f.gam);
    if (tid == 0) ws.gn[e] = f.gam[n - 1];
    __syncthreads();  // L whole; q's rows read
    invert_unit_lower_tc(L, ti, tmp, kLc);
    store_rows(ws.ti + e * C * C, C, ti, kLc, C, C);
    for (int x = 2 * tid; x < C * C; x += 2 * kNt) {  // the product operands from Ti's columns
      const int r = x / C, l = x - r * C;
      const float t0 = ti[r * kLc + l], t1 = ti[r * kLc + l + 1];
      const float b0 = f.beta[l], b1 = f.beta[l + 1];
      *reinterpret_cast<uint32_t*>(tb + r * kLt + l) = pack_bf16(t0 * b0, t1 * b1);
      *reinterpret_cast<uint32_t*>(tw + r * kLt + l) =
          pack_bf16(t0 * (b0 * f.gam[l] * f.rk[l]), t1 * (b1 * f.gam[l + 1] * f.rk[l + 1]));
    }
    __syncthreads();
    for (int j0 = 0; j0 < V; j0 += kTile) {  // U = Ti diag(beta) Vr
      MmaTile<8> u;
      mma_tile_accumulate<8, Rounding::Bf16>(u, 0, j0, C, V, C, Rows16{tb, kLt}, Cols16{vs, lv});
      bf16_dev* out = ws.u + e * C * V;
      mma_tile_pairs(u, 0, j0, [&](int r, int j, float x0, float x1) {
        if (j < V) *reinterpret_cast<uint32_t*>(out + r * V + j) = pack_bf16(x0, x1);
      });
    }
    for (int i0 = 0; i0 < K; i0 += kTile) {  // W = Ti diag(beta gam rk) Kr
      MmaTile<8> w;
      mma_tile_accumulate<8, Rounding::Bf16>(w, 0, i0, C, K, C, Rows16{tw, kLt}, Cols16{ks, lk});
      bf16_dev* out = ws.w + e * C * K;
      mma_tile_pairs(w, 0, i0, [&](int r, int i, float x0, float x1) {
        if (i < K) *reinterpret_cast<uint32_t*>(out + r * K + i) = pack_bf16(x0, x1);
      });
    }
    __syncthreads();  // the buffers are read before the next item rewrites them
  }
}

}  // namespace

bool prep_bf16(const DeltaRuleArgs<bf16_dev>& a, const Geo& g,
               const ChunksOf<float, bf16_dev>& ws, const char* op) {
  const Prep16Layout lay(Arena{}, g.K, g.V);
  const size_t bytes = static_cast<size_t>(lay.total) * sizeof(float);
  const bool aligned = (reinterpret_cast<uintptr_t>(a.q) | reinterpret_cast<uintptr_t>(a.k) |
                        reinterpret_cast<uintptr_t>(a.v)) % 16 == 0;
  if (g.K % 8 != 0 || g.V % 8 != 0 || g.K > kMaxWidth || g.V > kMaxWidth || !aligned ||
      bytes > shared_memory_limit())
    return false;
  allow_shared_memory(delta_prep_bf16_kernel, bytes, op);
  delta_prep_bf16_kernel<<<static_cast<unsigned>(g.B * g.H * g.NC), kNt, bytes, stream()>>>(
      a, g, ws, lay);
  CUDA_CHECK(cudaGetLastError());
  return true;
}

}  // namespace delta_chunk
}  // namespace hla::cuda
