// defines: hla::cuda::attention_wgmma_runs, attention_wgmma_forward (bf16, sm_90a)
//
// The forward of softmax attention (attention_mma.cu: the same function, masks, GQA mapping,
// online softmax with its stale running max, lse) on Hopper's warpgroup products (wgmma.cuh),
// which read their shared-memory operands without ldmatrix and run at the tensor cores' full
// rate. Layouts as attention_mma.cu, D = K = V in {64, 128}.
//
// One block of 2 warpgroups per (b, h, 128 queries); warpgroup w owns queries 64 w .. 64 w + 63
// (its warp u the rows 16 u .. of those, as in attention_mma.cu). Per tile of 64 keys:
//   S = Q K^T     D / 16 products m64n64k16, Q and K from shared memory (K-major)
//   mask, online softmax on S in registers (attention::OnlineSoftmax), O rescaled if m moved
//   O += P V      4 products m64nDk16, P from registers (bf16), V from shared memory (MN-major)
// A warpgroup skips the key tiles past its last query's keys (causal: the block's diagonal
// tile, which only its second warpgroup sees). Two schedules (measured on an H200):
//   D = 64, in turn: each product is waited for before the softmax or the next tile; 128
//     registers a thread, so two blocks an SM overlap each other's softmax and products.
//   D = 128, overlapped: step j issues S of tile j and O += P V of tile j - 1, then runs tile
//     j's softmax while the tensor cores work; one block an SM (the accumulators need ~210
//     registers), so the overlap must come from within the warpgroup.
// Shared memory (128-byte swizzled tiles, wgmma.cuh): Q [128][D] and 2 F key tiles (K and V)
// loaded F tiles ahead by cp.async (F = 1 in turn, 2 overlapped), one barrier a step and a
// proxy fence that makes the copies visible to the products: D = 64 / 128: 48 / 160 KiB.
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/attention_mma.cuh"
#include "kernels/cuda/attention_wgmma.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/wgmma.cuh"

namespace hla::cuda {

using kernels::AttentionArgs;
using kernels::AttnDims;

namespace {

using namespace attention;

constexpr int kGroups = 2;                   // warpgroups a block
constexpr int kGroupRows = 64;               // queries a warpgroup (the products' m)
constexpr int kRows = kGroups * kGroupRows;  // queries a block
constexpr int kGroupThreads = 128;
constexpr int kWgThreads = kGroups * kGroupThreads;
// The schedule of head size D, and how many key tiles ahead it loads.
template <int D>
constexpr bool kOverlapped = D == 128;
template <int D>
constexpr int kAhead = kOverlapped<D> ? 2 : 1;

// A thread's 16-byte pieces of a swizzled [ROWS][D] tile (wgmma.cuh): the 8 columns col = 8
// (x % (D / 8)).. of rows row = x / (D / 8) + kRowStep i for thread x. kRowStep is a multiple of
// 8, so each further piece lies kRowStep rows on in the swizzled tile too: the addresses are
// formed once, then one add a piece.
template <int D, int ROWS>
struct Pieces {
  static constexpr int kChunks = D / kVec, kRowStep = kWgThreads / kChunks,
                       kCount = ROWS / kRowStep;
  static_assert(ROWS % kRowStep == 0 && kRowStep % 8 == 0, "whole swizzle periods a pass");
  int row = static_cast<int>(threadIdx.x) / kChunks;
  int col = static_cast<int>(threadIdx.x) % kChunks * kVec;
  uint32_t to = 2 * wgmma::swizzled(row, col, ROWS);  // bytes into the tile

  // The tile at shared address dst = rows of a head whose row `row` (this thread's first),
  // column col, is at `from`, rows stride apart; rows n.. zero (`any`: a readable address for
  // the copies that read nothing). By cp.async: the caller commits and waits.
  __device__ void load(uint32_t dst, const bf16_dev* from, int64_t stride, int n,
                       const bf16_dev* any) const {
    const int64_t step = kRowStep * stride;
    if (n >= ROWS) {  // every row inside T: no tests (the loop's tiles)
#pragma unroll
      for (int i = 0; i < kCount; ++i, from += step)
        cp_async_16(dst + to + i * kRowStep * 128, from, true);
      return;
    }
#pragma unroll
    for (int i = 0; i < kCount; ++i, from += step) {
      const bool valid = row + i * kRowStep < n;
      cp_async_16(dst + to + i * kRowStep * 128, valid ? from : any, valid);
    }
  }
};

template <int D>
__global__ void __launch_bounds__(kWgThreads, kOverlapped<D> ? 1 : 2)
    attention_wgmma_fwd_kernel(AttnDims d, const bf16_dev* __restrict__ q,
                               const bf16_dev* __restrict__ k, const bf16_dev* __restrict__ v,
                               bool causal, int64_t window, float scale,
                               bf16_dev* __restrict__ o,  // [B,T,H,D] overwritten
                               float* __restrict__ lse,   // [B,H,T] overwritten, or null
                               int n_tiles) {             // query tiles per (b, h)
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int NS = kKeyTile / 8, NO = D / 8, F = kAhead<D>, kBuffers = 2 * F;
  constexpr uint32_t kTileBytes = kKeyTile * D * 2;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t q_s =
      (raw + wgmma::kSwizzleAlign - 1) / wgmma::kSwizzleAlign * wgmma::kSwizzleAlign;  // Q [128][D]
  const uint32_t k_s = q_s + kRows * D * 2;          // K [kBuffers][64][D]
  const uint32_t v_s = k_s + kBuffers * kTileBytes;  // V [kBuffers][64][D]
  const int group = threadIdx.x / kGroupThreads, lane = threadIdx.x % 32, g = lane / 4,
            t = lane % 4;
  const int row0 = kGroupRows * group + 16 * (threadIdx.x % kGroupThreads / 32);
  const MaskRule mask{d.T, causal, window};
  const QueryTile qt = query_tile(d, mask, n_tiles, kRows);
  const int64_t T = d.T, bh = qt.bh, b = qt.b, h = qt.h, i0 = qt.i0, last = qt.last;
  const int nq = qt.nq;
  // The warpgroup's queries [g0, g0 + g_rows) and the last key they see.
  const int64_t g0 = i0 + kGroupRows * group;
  const int g_rows = nq - kGroupRows * group < kGroupRows ? nq - kGroupRows * group : kGroupRows;
  const int64_t g_last = g_rows > 0 ? mask.last_key(g0 + g_rows) : -1;

  const Pieces<D, kKeyTile> kv;
  const int64_t kv_stride = d.Hkv * D;
  const bf16_dev* k_first = head_rows<D>(k, b, T, d.Hkv, qt.c).p + kv.row * kv_stride + kv.col;
  const bf16_dev* v_first = head_rows<D>(v, b, T, d.Hkv, qt.c).p + kv.row * kv_stride + kv.col;
  auto fetch_kv = [&](int buf, int64_t j0) {  // the key tile at j0 into buffer buf
    const int nk = static_cast<int>(T - j0 < kKeyTile ? T - j0 : kKeyTile);
    kv.load(k_s + buf * kTileBytes, k_first + j0 * kv_stride, kv_stride, nk, k);
    kv.load(v_s + buf * kTileBytes, v_first + j0 * kv_stride, kv_stride, nk, v);
  };
  {
    const Pieces<D, kRows> qp;
    const HeadRows q_rows = head_rows<D>(q, b, T, d.H, h);
    qp.load(q_s, q_rows.p + (i0 + qp.row) * q_rows.stride + qp.col, q_rows.stride, nq, q);
  }
  // the first F key tiles, a commit group each (empty past the last)
#pragma unroll
  for (int i = 0; i < F; ++i) {
    if (qt.j_begin + i * kKeyTile <= last) fetch_kv(i, qt.j_begin + i * kKeyTile);
    cp_async_commit();
  }
  OnlineSoftmax softmax(scale);
  float acc[NO][4];
  zero(acc);
  // Descriptors: the warpgroup's rows of Q, and buffer 0 of K and of V (a buffer is kTileBytes
  // on); the k-steps' are offsets from these.
  const wgmma::Desc q_desc = wgmma::k_major(q_s + kGroupRows * group * 128),
                    k_desc = wgmma::k_major(k_s), v_desc = wgmma::mn_major(v_s, kKeyTile);
  // S = Q K^T of the key tile in buffer kbuf into s, issued and committed (not waited for)
  auto issue_scores = [&](float(&s)[NS][4], int kbuf) {
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      wgmma::mma_ss_n64(
          s, wgmma::advance(q_desc, wgmma::k_major_step(kRows, kk)),
          wgmma::advance(k_desc, kbuf * kTileBytes + wgmma::k_major_step(kKeyTile, kk)), kk > 0);
    wgmma::commit();
  };
  uint32_t p[kKeyTile / 16][4];  // P in bf16, the A fragments of O += P V
  float correction[2] = {1.f, 1.f};
  bool pending = false;  // overlapped: p holds a tile whose O += P V is still to issue
  // acc scaled by the last softmax step's correction, once the product that last wrote acc is
  // waited for (with S of the next tile issued, such writes would make ptxas serialize the
  // products)
  auto rescale = [&] {
    if (__any_sync(0xffffffffu, correction[0] != 1.f || correction[1] != 1.f))
#pragma unroll
      for (int nt = 0; nt < NO; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nt][e] *= correction[e / 2];
  };
  // O += P V of the tile in buffer vbuf, issued and committed
  auto issue_pv = [&](int vbuf) {
    wgmma::fence();
#pragma unroll
    for (int j = 0; j < kKeyTile / 16; ++j) {
      const wgmma::Desc b = wgmma::advance(v_desc, vbuf * kTileBytes + wgmma::mn_major_step(j));
      if constexpr (D == 64)
        wgmma::mma_rs_n64(acc, p[j], b);
      else
        wgmma::mma_rs_n128(acc, p[j], b);
    }
    wgmma::commit();
  };
  // Step j: tile j in buffer j % kBuffers; tile j + F loads into tile j - F's.
  int buf = 0;
  for (int64_t j0 = qt.j_begin; j0 <= last; j0 += kKeyTile, buf = (buf + 1) % kBuffers) {
    cp_async_wait<F - 1>();  // tile j has landed (later ones may still be in flight)
    wgmma::fence_shared_for_async();
    __syncthreads();  // for every thread; and every product has finished with tile j - F
    if (j0 + F * kKeyTile <= last) fetch_kv((buf + F) % kBuffers, j0 + F * kKeyTile);
    cp_async_commit();
    if (j0 > g_last) continue;  // warpgroup-uniform: past it every key is masked for its rows
    float s[NS][4];
    issue_scores(s, buf);
    if (kOverlapped<D> && pending) {
      issue_pv((buf + kBuffers - 1) % kBuffers);  // tile j - 1's
      wgmma::wait<1>();                           // S of tile j; O += P V may run on
    } else {
      wgmma::wait<0>();
    }
    wgmma::fence_operands(s);
    const bool whole = mask.covers(g0, g0 + kGroupRows, j0, j0 + kKeyTile);
    if (!whole) softmax.mask(s, mask, i0 + row0 + g, j0, t);
    softmax.step(s, whole, correction);
    if constexpr (kOverlapped<D>) {
      wgmma::wait<0>();  // O += P V of tile j - 1: p and acc are free
      wgmma::fence_operands(acc);
    }
    rescale();
#pragma unroll
    for (int j = 0; j < kKeyTile / 16; ++j) a_from_acc(p[j], s, j);
    // In turn, O += P V now; overlapped, at the next step unless this is the warpgroup's last
    // tile.
    pending = kOverlapped<D> && j0 + kKeyTile <= g_last;
    if (!pending) {
      issue_pv(buf);
      wgmma::wait<0>();
      wgmma::fence_operands(acc);
    }
  }
  softmax.finish(acc, lse ? lse + bh * T + i0 : nullptr, row0 + g, nq, t);
  store_rows<D>(acc, 1.f, o, b, i0, row0, nq, T, d.H, h, g, t);
#endif
}

const bf16_dev* dev_ptr(const bf16* p) {
  return reinterpret_cast<const bf16_dev*>(p);
}

template <int D>
void launch_forward(const AttentionArgs<bf16>& a, const AttentionBf16Out& out, const char* op) {
  const AttnDims& d = a.d;
  const size_t smem =
      static_cast<size_t>(kRows + 2 * 2 * kAhead<D> * kKeyTile) * D * sizeof(bf16_dev) +
      wgmma::kSwizzleAlign;
  const int n_tiles = static_cast<int>((d.T + kRows - 1) / kRows);
  auto* kernel = attention_wgmma_fwd_kernel<D>;
  allow_shared_memory(kernel, smem, op);
  kernel<<<static_cast<unsigned>(d.B * d.H * n_tiles), kWgThreads, smem, stream()>>>(
      d, dev_ptr(a.q), dev_ptr(a.k), dev_ptr(a.v), a.causal, a.window, static_cast<float>(a.scale),
      reinterpret_cast<bf16_dev*>(out.o), out.lse, n_tiles);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

bool attention_wgmma_runs() {
  const cudaDeviceProp& p = Context::get().props();
  return p.major == 9 && p.minor == 0;
}

void attention_wgmma_forward(const AttentionArgs<bf16>& a, const AttentionBf16Out& out) {
  const char* op = "softmax_attention_mma_forward (cuda, wgmma)";
  HLA_CHECK(attention_wgmma_runs(), op << ": needs a compute capability 9.0 device");
  HLA_CHECK(a.d.K == a.d.V && (a.d.K == 64 || a.d.K == 128), op << ": K=V in {64, 128}");
  if (a.d.K == 64)
    launch_forward<64>(a, out, op);
  else
    launch_forward<128>(a, out, op);
}

}  // namespace hla::cuda
