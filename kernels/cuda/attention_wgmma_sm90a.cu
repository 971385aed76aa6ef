// defines: hla::cuda::attention_wgmma_runs, attention_wgmma_forward, attention_wgmma_backward
// (bf16, sm_90a)
//
// The forward of softmax attention (attention_mma.cu: the same function, masks, GQA mapping,
// online softmax with its stale running max, lse) and the backward's dQ and dK/dV on Hopper's
// warpgroup products (wgmma.cuh), which read their shared-memory operands without ldmatrix and
// run at the tensor cores' full rate. Layouts as attention_mma.cu, D = K = V in {64, 128}.
//
// Forward: one block of 2 warpgroups per (b, h, 128 queries); warpgroup w owns queries
// 64 w .. 64 w + 63 (its warp u the rows 16 u .. of those, as in attention_mma.cu). Per tile of
// 64 keys:
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
// Backward: dQ and dK/dV each in their own kernel as in attention_mma.cu (deterministic), on
// blocks of one warpgroup, several an SM (kDqBlocks, kDkdvBlocks).
#include <cuda_bf16.h>

#include <cstdint>

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
// The backward's kernels run blocks of one warpgroup, several an SM: each block's barriers are
// its own, so one block's softmax runs under another's products. On an H200 this beat blocks
// of two warpgroups sharing their tiles by 1.5-4% forward+backward. Blocks an SM: dQ 3 at
// D = 64 (153 registers a thread), 2 at D = 128 (196); dK/dV 3 (168; 3% faster than 2) and 2
// (245).
constexpr int kDqGroups = 1;
template <int D>
constexpr int kDqBlocks = D == 64 ? 3 : 2;
template <int D>
constexpr int kDkdvBlocks = D == 64 ? 3 : 2;

// A thread's 16-byte pieces (attention::TilePieces) of a swizzled [ROWS][D] tile (wgmma.cuh).
// kRowStep is a multiple of 8, so each further piece lies kRowStep rows on in the swizzled tile
// too: one add a piece there as well.
template <int D, int ROWS, int THREADS = kWgThreads>
struct Pieces : TilePieces<D, ROWS, THREADS> {
  using Base = TilePieces<D, ROWS, THREADS>;
  using Base::col, Base::kPieces, Base::kRowStep, Base::row;
  static_assert(kRowStep % 8 == 0, "whole swizzle periods a pass");
  uint32_t to = 2 * wgmma::swizzled(row, col, ROWS);  // bytes into the tile

  // The tile at shared address dst = rows of a head whose row `row` (this thread's first),
  // column col, is at `from`, rows stride apart; rows n.. zero (`any`: a readable address for
  // the copies that read nothing). By cp.async: the caller commits and waits.
  __device__ void load(uint32_t dst, const bf16_dev* from, int64_t stride, int n,
                       const bf16_dev* any) const {
    const int64_t step = kRowStep * stride;
    if (n >= ROWS) {  // every row inside T: no tests (the loop's tiles)
#pragma unroll
      for (int i = 0; i < kPieces; ++i, from += step)
        cp_async_16(dst + to + i * kRowStep * 128, from, true);
      return;
    }
#pragma unroll
    for (int i = 0; i < kPieces; ++i, from += step) {
      const bool valid = row + i * kRowStep < n;
      cp_async_16(dst + to + i * kRowStep * 128, valid ? from : any, valid);
    }
  }
};

// The start of the block's dynamic shared memory as a shared address, rounded up to the
// swizzle's alignment (the launch asks for kSwizzleAlign bytes more).
__device__ inline uint32_t aligned_shared_base() {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  return (raw + wgmma::kSwizzleAlign - 1) / wgmma::kSwizzleAlign * wgmma::kSwizzleAlign;
}

// A block of GROUPS warpgroups, 64 GROUPS queries (forward, dQ): its place in the grid and the
// keys it walks, this thread's warpgroup, rows and quad, and the copies of its query rows and
// key tiles.
template <int D, int GROUPS = kGroups>
struct QueryBlock {
  static constexpr int kBlockRows = GROUPS * kGroupRows, kThreads = GROUPS * kGroupThreads;
  QueryTile qt;
  int group, g, t;
  int row0;        // the thread's warp's first row in the block
  int64_t g0;      // the warpgroup's first query
  int64_t g_last;  // the last key its queries see (-1: it has no query below T)
  Pieces<D, kKeyTile, kThreads> kv;
  int64_t kv_stride;
  const bf16_dev *k, *v, *k_first, *v_first;  // this thread's first piece of the tile at key 0

  __device__ QueryBlock(const AttnDims& d, const MaskRule& mask, int n_tiles, const bf16_dev* k_,
                        const bf16_dev* v_)
      : qt(query_tile(d, mask, n_tiles, kBlockRows)),
        group(threadIdx.x / kGroupThreads),
        g(threadIdx.x % 32 / 4),
        t(threadIdx.x % 4),
        row0(kGroupRows * group + 16 * (threadIdx.x % kGroupThreads / 32)),
        g0(qt.i0 + kGroupRows * group),
        kv_stride(d.Hkv * D),
        k(k_),
        v(v_) {
    const int g_rows = qt.nq - kGroupRows * group;
    g_last = g_rows > 0 ? mask.last_key(g0 + (g_rows < kGroupRows ? g_rows : kGroupRows)) : -1;
    k_first = head_rows<D>(k, qt.b, d.T, d.Hkv, qt.c).p + kv.row * kv_stride + kv.col;
    v_first = head_rows<D>(v, qt.b, d.T, d.Hkv, qt.c).p + kv.row * kv_stride + kv.col;
  }
  // The block's rows of head qt.h of a [B,T,H,D] tensor (q, dO) into the tile at dst.
  __device__ void load_rows(uint32_t dst, const bf16_dev* src, const AttnDims& d) const {
    const Pieces<D, kBlockRows, kThreads> qp;
    const HeadRows rows = head_rows<D>(src, qt.b, d.T, d.H, qt.h);
    qp.load(dst, rows.p + (qt.i0 + qp.row) * rows.stride + qp.col, rows.stride, qt.nq, src);
  }
  // The key tile at j0: K into the tile at k_dst, V into the one at v_dst.
  __device__ void fetch_kv(uint32_t k_dst, uint32_t v_dst, int64_t j0, int64_t T) const {
    const int nk = static_cast<int>(T - j0 < kKeyTile ? T - j0 : kKeyTile);
    kv.load(k_dst, k_first + j0 * kv_stride, kv_stride, nk, k);
    kv.load(v_dst, v_first + j0 * kv_stride, kv_stride, nk, v);
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
  const uint32_t q_s = aligned_shared_base();        // Q [128][D]
  const uint32_t k_s = q_s + kRows * D * 2;          // K [kBuffers][64][D]
  const uint32_t v_s = k_s + kBuffers * kTileBytes;  // V [kBuffers][64][D]
  const MaskRule mask{d.T, causal, window};
  const QueryBlock<D> blk(d, mask, n_tiles, k, v);
  const QueryTile& qt = blk.qt;
  const int64_t T = d.T, i0 = qt.i0, last = qt.last, g0 = blk.g0, g_last = blk.g_last;
  const int group = blk.group, g = blk.g, t = blk.t, row0 = blk.row0;
  auto fetch_kv = [&](int buf, int64_t j0) {
    blk.fetch_kv(k_s + buf * kTileBytes, v_s + buf * kTileBytes, j0, T);
  };
  blk.load_rows(q_s, q, d);
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
      wgmma::mma_rs(acc, p[j], wgmma::advance(v_desc, vbuf * kTileBytes + wgmma::mn_major_step(j)));
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
  softmax.finish(acc, lse ? lse + qt.bh * T + i0 : nullptr, row0 + g, qt.nq, t);
  store_rows<D>(acc, 1.f, o, qt.b, i0, row0, qt.nq, T, d.H, qt.h, g, t);
#endif
}

// dQ of a block of kDqGroups warpgroups, 64 queries each (attention_mma.cu's dQ kernel on
// warpgroup products), the key tiles in turn, double-buffered. Per tile of 64 keys, a warpgroup:
//   S = Q K^T, dP = dO V^T   2 D / 16 products m64n64k16, Q, dO, K, V from shared memory
//   P = 2^(scale2 S - lse) (masked: 0), dS = P o (dP - D) in registers
//   dQ += dS K               4 products m64nDk16, dS from registers (bf16), K MN-major
// then dQ is scaled once and stored.
template <int D>
__global__ void __launch_bounds__(kDqGroups * kGroupThreads, kDqBlocks<D>)
    attention_wgmma_dq_kernel(AttnDims d, const bf16_dev* __restrict__ q,
                              const bf16_dev* __restrict__ k, const bf16_dev* __restrict__ v,
                              bool causal, int64_t window, float scale,
                              const bf16_dev* __restrict__ dout, const float* __restrict__ lse,
                              const float* __restrict__ Dsum,  // [B,H,T] dO . O
                              bf16_dev* __restrict__ dq,       // [B,T,H,D] overwritten
                              int n_tiles) {                   // query tiles per (b, h)
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int NS = kKeyTile / 8, NO = D / 8;
  constexpr uint32_t kTileBytes = kKeyTile * D * 2;
  constexpr int kBlockRows = kDqGroups * kGroupRows;
  const uint32_t q_s = aligned_shared_base();      // Q [kBlockRows][D]
  const uint32_t do_s = q_s + kBlockRows * D * 2;  // dO [kBlockRows][D]
  const uint32_t k_s = do_s + kBlockRows * D * 2;  // K [2][64][D]
  const uint32_t v_s = k_s + 2 * kTileBytes;   // V [2][64][D]
  const MaskRule mask{d.T, causal, window};
  const QueryBlock<D, kDqGroups> blk(d, mask, n_tiles, k, v);
  const QueryTile& qt = blk.qt;
  const int64_t T = d.T, i0 = qt.i0, last = qt.last, g0 = blk.g0, g_last = blk.g_last;
  const int g = blk.g, t = blk.t, row0 = blk.row0;
  blk.load_rows(q_s, q, d);
  blk.load_rows(do_s, dout, d);
  if (qt.j_begin <= last) blk.fetch_kv(k_s, v_s, qt.j_begin, T);
  cp_async_commit();
  const float scale2 = scale * kLog2e;  // the exponents in log2 units (fast_exp2)
  float lse_r[2], D_r[2];               // the thread's rows g and g + 8
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = row0 + g + 8 * half;
    lse_r[half] = r < qt.nq ? kLog2e * lse[qt.bh * T + i0 + r] : 0.f;
    D_r[half] = r < qt.nq ? Dsum[qt.bh * T + i0 + r] : 0.f;
  }
  const uint32_t rows_bytes = kGroupRows * blk.group * 128;  // the warpgroup's rows
  const wgmma::Desc q_desc = wgmma::k_major(q_s + rows_bytes),
                    do_desc = wgmma::k_major(do_s + rows_bytes), k_desc = wgmma::k_major(k_s),
                    v_desc = wgmma::k_major(v_s), k_mn = wgmma::mn_major(k_s, kKeyTile);
  float dq_acc[NO][4];
  zero(dq_acc);
  int buf = 0;
  for (int64_t j0 = qt.j_begin; j0 <= last; j0 += kKeyTile, buf ^= 1) {
    cp_async_wait<0>();  // this tile (and Q, dO) has landed
    wgmma::fence_shared_for_async();
    __syncthreads();  // for every thread; and every product has finished with the other buffer
    if (j0 + kKeyTile <= last)
      blk.fetch_kv(k_s + (buf ^ 1) * kTileBytes, v_s + (buf ^ 1) * kTileBytes, j0 + kKeyTile, T);
    cp_async_commit();
    if (j0 > g_last) continue;  // warpgroup-uniform: past it every key is masked for its rows
    const uint32_t tile = buf * kTileBytes;
    float s[NS][4], ds[NS][4];  // S, then P; dP, then dS: rows queries, columns keys
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wgmma::mma_ss_n64(s, wgmma::advance(q_desc, wgmma::k_major_step(kBlockRows, kk)),
                        wgmma::advance(k_desc, tile + wgmma::k_major_step(kKeyTile, kk)), kk > 0);
      wgmma::mma_ss_n64(ds, wgmma::advance(do_desc, wgmma::k_major_step(kBlockRows, kk)),
                        wgmma::advance(v_desc, tile + wgmma::k_major_step(kKeyTile, kk)), kk > 0);
    }
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_operands(s);
    wgmma::fence_operands(ds);
    const bool whole = mask.covers(g0, g0 + kGroupRows, j0, j0 + kKeyTile);
    ds_from_scores(s, ds, mask, whole, i0 + row0 + g, j0, t, scale2, lse_r, D_r);
    uint32_t a[kKeyTile / 16][4];  // dS in bf16: every A fragment formed before the products
#pragma unroll
    for (int j = 0; j < kKeyTile / 16; ++j) a_from_acc(a[j], ds, j);
    wgmma::fence();
#pragma unroll
    for (int j = 0; j < kKeyTile / 16; ++j) {  // dQ += dS K
      wgmma::mma_rs(dq_acc, a[j], wgmma::advance(k_mn, tile + wgmma::mn_major_step(j)));
    }
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_operands(dq_acc);
  }
  store_rows<D>(dq_acc, scale, dq, qt.b, i0, row0, qt.nq, T, d.H, qt.h, g, t);
#endif
}

// dK, dV of a block of one warpgroup and 64 keys (attention_mma.cu's dK/dV kernel on warpgroup
// products). The block walks the query tiles (64 queries) of every query head of its kv head's
// group that see its keys, in turn, double-buffered. Per query tile:
//   S^T = K Q^T, dP^T = V dO^T   2 D / 16 products m64n64k16 from shared memory (K-major)
//   P^T = 2^(scale2 S^T - lse) (masked: 0), dS^T = P^T o (dP^T - D) in registers (lse and D
//     of each column, a query, from shared memory)
//   dV += P^T dO, dK += dS^T Q   4 + 4 products m64nDk16, P^T and dS^T from registers (bf16),
//     dO and Q MN-major
// then dK is scaled once and both are stored. Each product is waited for before the code that
// reads it; the overlap comes from the other blocks on the SM (kDkdvBlocks), whose barriers are
// their own. Shared memory: K, V [64][D] and two buffers of Q, dO [64][D], lse, D [64].
template <int D>
__global__ void __launch_bounds__(kGroupThreads, kDkdvBlocks<D>)
    attention_wgmma_dkdv_kernel(AttnDims d, const bf16_dev* __restrict__ q,
                                const bf16_dev* __restrict__ k, const bf16_dev* __restrict__ v,
                                bool causal, int64_t window, float scale,
                                const bf16_dev* __restrict__ dout, const float* __restrict__ lse,
                                const float* __restrict__ Dsum,  // [B,H,T] dO . O
                                bf16_dev* __restrict__ dk, bf16_dev* __restrict__ dv,
                                int n_tiles) {  // key tiles per (b, kv head)
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int QT = kKeyTile, NQ = QT / 8, NO = D / 8;  // queries a step: the products' n
  constexpr uint32_t kTileBytes = kKeyTile * D * 2;
  const uint32_t k_s = aligned_shared_base();   // K [64][D]
  const uint32_t v_s = k_s + kTileBytes;        // V [64][D]
  const uint32_t q_s = v_s + kTileBytes;        // Q [2][64][D]
  const uint32_t do_s = q_s + 2 * kTileBytes;   // dO [2][64][D]
  float* const vec_s =                          // lse, D [2][2][64]
      static_cast<float*>(__cvta_shared_to_generic(do_s + 2 * kTileBytes));
  const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
  const int row0 = 16 * (threadIdx.x / 32);  // the warp's first key in the block
  const KeyTile kt = key_tile(d, n_tiles, kKeyTile);
  const int64_t b = kt.b, c = kt.c, T = d.T, j0 = kt.j0;
  const int nk = kt.nk;
  const MaskRule mask{T, causal, window};
  const float scale2 = scale * kLog2e;  // the exponents in log2 units (fast_exp2)
  {
    const Pieces<D, kKeyTile, kGroupThreads> kp;
    const int64_t stride = d.Hkv * D;
    const bf16_dev* k0 = head_rows<D>(k, b, T, d.Hkv, c).p + (j0 + kp.row) * stride + kp.col;
    const bf16_dev* v0 = head_rows<D>(v, b, T, d.Hkv, c).p + (j0 + kp.row) * stride + kp.col;
    kp.load(k_s, k0, stride, nk, k);
    kp.load(v_s, v0, stride, nk, v);
  }
  const QueryWalk qw(kt, mask, QT);
  const Pieces<D, QT, kGroupThreads> qp;
  const int64_t q_stride = d.H * D;
  // Q, dO, lse, D of query tile (hh, ii) into buffer buf, asynchronously
  auto fetch = [&](int64_t hh, int64_t ii, int buf) {
    const int nq = static_cast<int>(T - ii < QT ? T - ii : QT);
    const int64_t at = (ii + qp.row) * q_stride + qp.col;
    qp.load(q_s + buf * kTileBytes, head_rows<D>(q, b, T, d.H, hh).p + at, q_stride, nq, q);
    qp.load(do_s + buf * kTileBytes, head_rows<D>(dout, b, T, d.H, hh).p + at, q_stride, nq,
            dout);
    static_assert(2 * QT == kGroupThreads, "a thread a value of lse and D");
    const int x = static_cast<int>(threadIdx.x), r = x % QT;  // lse (x < QT) or D of query r
    const float* src = (x < QT ? lse : Dsum) + (b * d.H + hh) * T + ii;
    cp_async_4(vec_s + (buf * 2 + x / QT) * QT + r, src + (r < nq ? r : 0), r < nq);
  };
  const bool any = qw.any();
  if (any) fetch(qw.h_begin, qw.i_begin, 0);
  cp_async_commit();
  const wgmma::Desc k_desc = wgmma::k_major(k_s), v_desc = wgmma::k_major(v_s),
                    q_desc = wgmma::k_major(q_s), do_desc = wgmma::k_major(do_s),
                    q_mn = wgmma::mn_major(q_s, QT), do_mn = wgmma::mn_major(do_s, QT);
  float dk_acc[NO][4], dv_acc[NO][4];  // rows: the block's keys
  zero(dk_acc);
  zero(dv_acc);
  int buf = 0;
  for (int64_t h = qw.h_begin, i0 = qw.i_begin; any && h < qw.h_end; buf ^= 1) {
    int64_t h_next = h, i_next = i0;
    qw.next(h_next, i_next);
    cp_async_wait<0>();  // this tile (and K, V) has landed
    wgmma::fence_shared_for_async();
    __syncthreads();  // for every thread; and every product has finished with the other buffer
    if (h_next < qw.h_end) fetch(h_next, i_next, buf ^ 1);
    cp_async_commit();
    const uint32_t at = buf * kTileBytes;
    const float *lse_t = vec_s + buf * 2 * QT, *D_t = lse_t + QT;
    float pt[NQ][4], dst[NQ][4];  // S^T, then P^T; dP^T, then dS^T: rows keys, columns queries
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t step = wgmma::k_major_step(kKeyTile, kk);
      wgmma::mma_ss_n64(pt, wgmma::advance(k_desc, step), wgmma::advance(q_desc, at + step),
                        kk > 0);
      wgmma::mma_ss_n64(dst, wgmma::advance(v_desc, step), wgmma::advance(do_desc, at + step),
                        kk > 0);
    }
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_operands(pt);
    wgmma::fence_operands(dst);
    const bool whole = mask.covers(i0, i0 + QT, j0, j0 + kKeyTile);
    ds_t_from_scores(pt, dst, mask, whole, i0, j0 + row0 + g, t, scale2, lse_t, D_t);
    uint32_t pa[QT / 16][4], da[QT / 16][4];  // every A fragment before the products
#pragma unroll
    for (int j = 0; j < QT / 16; ++j) {
      a_from_acc(pa[j], pt, j);
      a_from_acc(da[j], dst, j);
    }
    wgmma::fence();
#pragma unroll
    for (int j = 0; j < QT / 16; ++j) {  // dV += P^T dO, dK += dS^T Q
      wgmma::mma_rs(dv_acc, pa[j], wgmma::advance(do_mn, at + wgmma::mn_major_step(j)));
      wgmma::mma_rs(dk_acc, da[j], wgmma::advance(q_mn, at + wgmma::mn_major_step(j)));
    }
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_operands(dv_acc);
    wgmma::fence_operands(dk_acc);
    h = h_next, i0 = i_next;
  }
  store_rows<D>(dk_acc, scale, dk, b, j0, row0, nk, T, d.Hkv, c, g, t);
  store_rows<D>(dv_acc, 1.f, dv, b, j0, row0, nk, T, d.Hkv, c, g, t);
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

template <int D>
void launch_dq(const AttentionArgs<bf16>& a, const AttentionBf16Grad& gr, const float* Dsum,
               const char* op) {
  const AttnDims& d = a.d;
  constexpr int kBlockRows = kDqGroups * kGroupRows;
  const size_t smem = static_cast<size_t>(2 * kBlockRows + 4 * kKeyTile) * D * sizeof(bf16_dev) +
                      wgmma::kSwizzleAlign;
  const int n_tiles = static_cast<int>((d.T + kBlockRows - 1) / kBlockRows);
  auto* kernel = attention_wgmma_dq_kernel<D>;
  allow_shared_memory(kernel, smem, op);
  kernel<<<static_cast<unsigned>(d.B * d.H * n_tiles), kDqGroups * kGroupThreads, smem,
           stream()>>>(
      d, dev_ptr(a.q), dev_ptr(a.k), dev_ptr(a.v), a.causal, a.window, static_cast<float>(a.scale),
      dev_ptr(gr.dout), gr.lse, Dsum, reinterpret_cast<bf16_dev*>(gr.dq), n_tiles);
  CUDA_CHECK(cudaGetLastError());
}

template <int D>
void launch_dkdv(const AttentionArgs<bf16>& a, const AttentionBf16Grad& gr, const float* Dsum,
                 const char* op) {
  const AttnDims& d = a.d;
  const size_t smem = static_cast<size_t>(6 * kKeyTile) * D * sizeof(bf16_dev) +
                      4 * kKeyTile * sizeof(float) + wgmma::kSwizzleAlign;
  const int n_tiles = static_cast<int>((d.T + kKeyTile - 1) / kKeyTile);
  auto* kernel = attention_wgmma_dkdv_kernel<D>;
  allow_shared_memory(kernel, smem, op);
  kernel<<<static_cast<unsigned>(d.B * d.Hkv * n_tiles), kGroupThreads, smem, stream()>>>(
      d, dev_ptr(a.q), dev_ptr(a.k), dev_ptr(a.v), a.causal, a.window, static_cast<float>(a.scale),
      dev_ptr(gr.dout), gr.lse, Dsum, reinterpret_cast<bf16_dev*>(gr.dk),
      reinterpret_cast<bf16_dev*>(gr.dv), n_tiles);
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

void attention_wgmma_backward(const AttentionArgs<bf16>& a, const AttentionBf16Grad& g,
                              const float* Dsum) {
  const char* op = "softmax_attention_mma_backward (cuda, wgmma)";
  HLA_CHECK(attention_wgmma_runs(), op << ": needs a compute capability 9.0 device");
  HLA_CHECK(a.d.K == a.d.V && (a.d.K == 64 || a.d.K == 128), op << ": K=V in {64, 128}");
  if (a.d.K == 64) {
    launch_dkdv<64>(a, g, Dsum, op);
    launch_dq<64>(a, g, Dsum, op);
  } else {
    launch_dkdv<128>(a, g, Dsum, op);
    launch_dq<128>(a, g, Dsum, op);
  }
}

}  // namespace hla::cuda
