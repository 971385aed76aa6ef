// HGRN's elementwise recurrence on CUDA (kernels/cuda/recurrence_cuda.h): the step-by-step tier
// and the chunked parallel scan. Same maths and contracts as kernels/reference/hgrn.cpp and
// kernels/cpu/recurrence/hgrn_{recurrent,chunk}.cpp.
//
// Shapes (row-major, contiguous device pointers):
//   x, g, o, dout, dx, dg [B,T,D]        h0, hT, dhT, dh0 [B,D]
//   h_t = exp(g_t) h_{t-1} + x_t        o_t = h_t        (h_{-1} = h0 or 0; hT = h_{T-1})
// Backward, dh = dL/dh_t carried back in time from dh = dhT (or 0):
//   dh += do_t;  dx_t = dh;  dh <- exp(g_t) dh;   finally dh0 = dh
//   dg_t = exp(g_t) h_{t-1} dx_t                  (a forward walk once dx is known)
//
// Every thread owns one channel (b, d) over a range of steps and walks it; consecutive threads own
// consecutive d, so every step's loads and stores are coalesced. kUnroll steps' loads are issued
// together before their (serial) arithmetic, for memory-level parallelism. The three walks:
//   forward walk   h <- exp(g_t) h + x_t, o_t = h
//   reverse walk   dh += do_t, dx_t = dh, dh <- exp(g_t) dh
//   gate walk      dg_t = exp(g_t) h dx_t, h <- exp(g_t) h + x_t   (reads back the dx it wrote)
// Recurrent tier: one thread per (b, d) over the whole sequence: the forward walk; the reverse
// walk then the gate walk for the backward.
//
// Chunk tier, forward, when B * ceil(D / 32) >= the multiprocessor count (enough channel tiles to
// fill the GPU): one pass. A block owns 32 channels of one batch row and 16 time lanes (one warp
// each) of 16 steps; it scans the sequence window by window (256 steps), the lanes' x and exp(g)
// held in registers: each lane's end state from zero and its decay exp(sum of its log gates) go
// to shared memory, each lane folds the lanes before it into the window's carry, rescans its
// steps from there and writes o; the last lane's end state is the next window's carry.
// Bytes: reads 2N, writes N (N = B*T*D elements), the floor.
//
// The backward takes the same one-pass form, windows from the last, when the tiles fill the GPU
// and the forward's o is given: h_{t-1} = o_{t-1} (h0 or 0 at t = 0), so dg_t needs no forward
// recompute. Bytes: reads 3N (g, do, o), writes 2N (dx, dg), the floor.
//
// Chunk tier otherwise (few channel tiles: parallel over time too, or no o for the backward):
// the sequence is cut into n chunks of L steps (the last one partial),
//   L = the smallest power of two >= kMinChunkLen with n = ceil(T / L) <= kTargetChunks,
// so the B*n*D threads of passes 1 and 3 fill the GPU at any T while pass 2 walks few chunks.
// Lambda(c) is the sum of the log gates over chunk c; every decay across chunks is exp(Lambda).
//   pass 1, one thread per (b, c, d): Lambda(c) and the chunk's end state from a zero start,
//           hl(c); for the backward also e(c) = sum_t do_t exp(g_first + ... + g_t), which is the
//           reverse walk of the chunk from dh = 0 (one forward loop reads x, g, do once)
//   pass 2, one thread per (b, d), chunk after chunk (both recurrences are linear in the carry):
//           H(0) = h0, H(c+1) = hl(c) + exp(Lambda(c)) H(c), hT = H(n)   (state entering c)
//           G(n) = dhT, G(c) = e(c) + exp(Lambda(c)) G(c+1), dh0 = G(0)  (dL/d state entering c)
//   pass 3, one thread per (b, c, d): the forward walk from H(c) (forward); the reverse walk from
//           G(c+1), then the gate walk from H(c) (backward)
// Bytes moved, in elements (M = B*n*D <= N/L + B*D, the per-chunk buffers):
//   forward:  pass 1 reads 2N, writes 2M; pass 2 reads 2M, writes M (+ hT); pass 3 reads 2N + M,
//             writes N.  Total 5N + 6M; the floor (read x and g, write o) is 3N.
//   backward: pass 1 reads 3N, writes 3M; pass 2 reads 4M (Lambda twice), writes 2M (+ dh0);
//             pass 3 reads 3N + 2M and writes 2N, plus a second read of g and dx by the gate walk
//             (the thread's own L steps, just touched: mostly served from L2). Total 8N + 11M;
//             the floor (read x, g, do, write dx, dg) is 5N.
// Measured on an H200, three-pass forms (f32, B=8, T=2048, D=1024, L=32; a 3N-byte device copy
// takes 50 us): the forward's passes take 40 + 8 + 53 us, the backward's 54 + 11 + 101 us, each
// streaming pass at 3.3 to 3.8 TB/s.
// Any B, T, D > 0. Gradients are overwritten, never accumulated.
//
// Storage types S: f32 and f64 (hgrn_*: every pointer of type S) and bf16 (hgrn_*_bf16: x, g, o,
// dout, dx, dg in bf16; h0, hT, dhT, dh0 in f32). The kernels are templates over S and compute in
// C = compute_t<S> (float for bf16): every load converts to C, the state h, dh, every exp and
// product and the per-chunk buffers are C, and each stored element is rounded to S once. So the
// bf16 kernels do the f32 kernels' arithmetic on the same values; only o, dx and dg are rounded,
// and the gate walk reads back the rounded dx (one more bf16 rounding in dg). Half the bytes: the
// one-pass forward moves 3N * 2 bytes.
// Channel pairs: with one bf16 channel a thread, every load is 2 bytes and a thread keeps half
// the bytes in flight of f32 (measured on an H200: no faster than f32). So when D is even and
// every bf16 pointer 4-byte aligned, the bf16 calls run the same kernels on pairs of adjacent
// channels: storage __nv_bfloat162 (4 bytes, two channels), compute FloatPair (two floats, the
// walks' arithmetic elementwise), D/2 pair-channels; h0, hT, dhT, dh0 and the per-chunk buffers
// are the same f32 arrays read as pairs. Each channel's arithmetic is unchanged.
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/recurrence_cuda.h"

namespace hla::cuda {

// Two adjacent channels' values in the compute type, with the elementwise arithmetic of the
// walks (hidden friends: found for FloatPair arguments only, so float's exp is not hidden).
struct FloatPair {
  float a, b;
  friend __device__ FloatPair operator+(FloatPair x, FloatPair y) { return {x.a + y.a, x.b + y.b}; }
  friend __device__ FloatPair operator*(FloatPair x, FloatPair y) { return {x.a * y.a, x.b * y.b}; }
  friend __device__ FloatPair& operator+=(FloatPair& x, FloatPair y) { return x = x + y; }
  friend __device__ FloatPair& operator*=(FloatPair& x, FloatPair y) { return x = x * y; }
  friend __device__ FloatPair exp(FloatPair x) { return {expf(x.a), expf(x.b)}; }
};
static_assert(sizeof(FloatPair) == 2 * sizeof(float) && alignof(FloatPair) == alignof(float),
              "FloatPair reads an f32 [.., D] array as [.., D/2] pairs");
using bf16x2_dev = __nv_bfloat162;
static_assert(sizeof(bf16x2_dev) == 4 && alignof(bf16x2_dev) == 4,
              "a pair loads as one 32-bit word");

template <>
struct ComputeType<bf16x2_dev> {
  using type = FloatPair;
};
template <>
struct ValueCast<FloatPair> {
  __device__ static FloatPair from(bf16x2_dev v) {
    const float2 f = __bfloat1622float2(v);
    return {f.x, f.y};
  }
};
template <>
struct ValueCast<bf16x2_dev> {  // rounds each channel to nearest, ties to even
  __device__ static bf16x2_dev from(FloatPair v) { return __floats2bfloat162_rn(v.a, v.b); }
};

using kernels::HgrnArgs;
using kernels::HgrnDims;
using kernels::HgrnGrad;
using kernels::HgrnOut;

namespace {

constexpr int kUnroll = 8;  // steps whose loads are issued together
// Blocks of kThreads per multiprocessor the streaming kernels are compiled for: at most 64
// registers a thread when computing in f32 (f32, bf16 and bf16 pairs; measured faster than the
// ~100 the unrolled loads take otherwise: the occupancy hides more latency), 128 in f64 (no
// spills). The loads are held in registers as stored and converted where used: a bf16 pair is
// then one register, so the pair kernels keep f32's bytes in flight at f32's occupancy (ptxas,
// sm_90: every kernel within its bound without spills except the pair form of pass 3 of the
// forward, 16 bytes: a few words a thread, in L1). The one-pass kernels have their own bound.
template <class S>
constexpr int kMinBlocks = std::is_same_v<compute_t<S>, double> ? 2 : 4;
// Channels per element of S: the one-pass forward's decision counts channels, not elements.
template <class S>
constexpr int64_t kChannelsPer = std::is_same_v<S, bf16x2_dev> ? 2 : 1;
constexpr int64_t kMinChunkLen = 16;
constexpr int64_t kTargetChunks = 64;

int64_t chunk_len(int64_t T) {
  int64_t L = kMinChunkLen;
  while (L * kTargetChunks < T) L *= 2;
  return L;
}

// The device pointers of one call: sequences [B,T,D] in storage type S, states [B,D] and the
// per-chunk buffers in the compute type C. Optional pointers are null.
template <class S>
struct ScanForward {
  using C = compute_t<S>;
  HgrnDims d;
  const S* x;
  const S* g;
  const C* h0;
  S* o;
  C* hT;
};
template <class S>
struct ScanBackward {
  using C = compute_t<S>;
  HgrnDims d;
  const S* x;
  const S* g;
  const C* h0;
  const S* o;  // the forward's output or null
  const S* dout;
  const C* dhT;
  S* dx;
  S* dg;
  C* dh0;
};

// ---- the walks over `len` steps of one channel; element t sits at at + t * D.
// dx is written by the reverse walk and read back by the gate walk of the same thread, so it is
// never marked __restrict__ (that would allow the read-only cache path for it).

template <class S, class C = compute_t<S>>
__device__ inline C forward_walk(const S* __restrict__ x, const S* __restrict__ g,
                                 S* __restrict__ o, int64_t at, int64_t D, int64_t len, C h) {
  for (int64_t t0 = 0; t0 < len; t0 += kUnroll) {
    // held as stored, converted where used: in bf16 this keeps the three-pass forward's pass 3
    // within its 64 registers (converted on load it spills)
    S xs[kUnroll] = {}, gs[kUnroll] = {};
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (t0 + u < len) {
        xs[u] = x[at + (t0 + u) * D];
        gs[u] = g[at + (t0 + u) * D];
      }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (t0 + u < len) {
        h = exp(value_cast<C>(gs[u])) * h + value_cast<C>(xs[u]);
        o[at + (t0 + u) * D] = value_cast<S>(h);
      }
  }
  return h;
}

template <class S, class C = compute_t<S>>
__device__ inline C reverse_walk(const S* __restrict__ dout, const S* __restrict__ g, S* dx,
                                 int64_t at, int64_t D, int64_t len, C dh) {
  for (int64_t t1 = len - 1; t1 >= 0; t1 -= kUnroll) {  // steps t1, t1 - 1, ..., t1 - kUnroll + 1
    S ds[kUnroll] = {}, gs[kUnroll] = {};
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (t1 - u >= 0) {
        ds[u] = dout[at + (t1 - u) * D];
        gs[u] = g[at + (t1 - u) * D];
      }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (t1 - u >= 0) {
        dh += value_cast<C>(ds[u]);
        dx[at + (t1 - u) * D] = value_cast<S>(dh);
        dh *= exp(value_cast<C>(gs[u]));
      }
  }
  return dh;
}

template <class S, class C = compute_t<S>>
__device__ inline void gate_walk(const S* __restrict__ x, const S* __restrict__ g, const S* dx,
                                 S* __restrict__ dg, int64_t at, int64_t D, int64_t len, C h) {
  for (int64_t t0 = 0; t0 < len; t0 += kUnroll) {
    S xs[kUnroll] = {}, gs[kUnroll] = {}, dxs[kUnroll] = {};
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (t0 + u < len) {
        xs[u] = x[at + (t0 + u) * D];
        gs[u] = g[at + (t0 + u) * D];
        dxs[u] = dx[at + (t0 + u) * D];
      }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (t0 + u < len) {
        const C f = exp(value_cast<C>(gs[u]));
        dg[at + (t0 + u) * D] = value_cast<S>(f * h * value_cast<C>(dxs[u]));
        h = f * h + value_cast<C>(xs[u]);
      }
  }
}

// ---- recurrent tier: thread p = b * D + d

template <class S, class C = compute_t<S>>
__global__ void __launch_bounds__(kThreads, kMinBlocks<S>)
    hgrn_recurrent_fwd_kernel(const S* __restrict__ x, const S* __restrict__ g,
                              const C* __restrict__ h0,  // [B,D] or null
                              S* __restrict__ o,         // [B,T,D] overwritten
                              C* __restrict__ hT,        // [B,D] or null
                              int64_t B, int64_t T, int64_t D) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < B * D;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = p / D, d = p - b * D;
    const C h = forward_walk<S>(x, g, o, b * T * D + d, D, T, h0 ? h0[p] : C{});
    if (hT) hT[p] = h;
  }
}

template <class S, class C = compute_t<S>>
__global__ void __launch_bounds__(kThreads, kMinBlocks<S>)
    hgrn_recurrent_bwd_kernel(const S* __restrict__ x, const S* __restrict__ g,
                              const C* __restrict__ h0,    // [B,D] or null
                              const S* __restrict__ dout,  // [B,T,D]
                              const C* __restrict__ dhT,   // [B,D] or null
                              S* dx,                       // [B,T,D] overwritten
                              S* __restrict__ dg,          // [B,T,D] overwritten
                              C* __restrict__ dh0,         // [B,D] or null
                              int64_t B, int64_t T, int64_t D) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < B * D;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = p / D, d = p - b * D, at = b * T * D + d;
    const C dh = reverse_walk<S>(dout, g, dx, at, D, T, dhT ? dhT[p] : C{});
    if (dh0) dh0[p] = dh;
    gate_walk<S>(x, g, dx, dg, at, D, T, h0 ? h0[p] : C{});
  }
}

// ---- chunk tier. Per-chunk buffers are [B, n, D] in the compute type: chunk thread
// p = (b * n + c) * D + d owns entry p of each.

struct ChunkGrid {
  int64_t B, T, D, L, n;
  __device__ int64_t at(int64_t p) const {  // offset of the chunk's first step in [B,T,D]
    const int64_t d = p % D, bc = p / D, c = bc % n, b = bc / n;
    return (b * T + c * L) * D + d;
  }
  __device__ int64_t len(int64_t p) const {
    const int64_t c = (p / D) % n;
    return min(L, T - c * L);
  }
};

// Pass 1: Lambda(c), hl(c) and, when dout is given, e(c).
template <class S, class C = compute_t<S>>
__global__ void __launch_bounds__(kThreads, kMinBlocks<S>)
    hgrn_chunk_summary_kernel(ChunkGrid cg, const S* __restrict__ x, const S* __restrict__ g,
                              const S* __restrict__ dout,  // [B,T,D] or null
                              C* __restrict__ lambda,      // [B,n,D]
                              C* __restrict__ h_local,     // [B,n,D]
                              C* __restrict__ d_local) {   // [B,n,D] or null
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < cg.B * cg.n * cg.D;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t at = cg.at(p), len = cg.len(p), D = cg.D;
    C lam = C{}, h = C{}, e = C{};
    for (int64_t t0 = 0; t0 < len; t0 += kUnroll) {
      S xs[kUnroll] = {}, gs[kUnroll] = {}, ds[kUnroll] = {};
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        if (t0 + u < len) {
          xs[u] = x[at + (t0 + u) * D];
          gs[u] = g[at + (t0 + u) * D];
          if (dout) ds[u] = dout[at + (t0 + u) * D];
        }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        if (t0 + u < len) {
          const C gv = value_cast<C>(gs[u]);
          h = exp(gv) * h + value_cast<C>(xs[u]);
          lam += gv;
          if (dout) e += value_cast<C>(ds[u]) * exp(lam);
        }
    }
    lambda[p] = lam;
    h_local[p] = h;
    if (d_local) d_local[p] = e;
  }
}

// Pass 2: thread p = b * D + d links the chunks of its channel. The backward carry (only when
// d_local is given) runs in the same loop, chunk n-1-i beside chunk i, so the two chains' loads
// overlap. Everything here is in the compute type C.
template <class C>
__global__ void __launch_bounds__(kThreads)
    hgrn_chunk_carry_kernel(ChunkGrid cg, const C* __restrict__ lambda,
                            const C* __restrict__ h_local,
                            const C* __restrict__ h0,       // [B,D] or null
                            C* __restrict__ h_in,           // [B,n,D]: H(c)
                            C* __restrict__ hT,             // [B,D] or null
                            const C* __restrict__ d_local,  // [B,n,D] or null
                            const C* __restrict__ dhT,      // [B,D] or null
                            C* __restrict__ d_after,        // [B,n,D]: G(c+1)
                            C* __restrict__ dh0) {          // [B,D] or null
  const int64_t D = cg.D, n = cg.n;
  const bool backward = d_local != nullptr;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < cg.B * D;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = p / D, d = p - b * D, first = b * n * D + d;  // entry of chunk c: first + c*D
    C h = h0 ? h0[p] : C{};
    C dh = dhT ? dhT[p] : C{};
    for (int64_t i0 = 0; i0 < n; i0 += kUnroll) {
      C lf[kUnroll] = {}, hl[kUnroll] = {}, lb[kUnroll] = {}, dl[kUnroll] = {};
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        if (i0 + u < n) {
          const int64_t qf = first + (i0 + u) * D, qb = first + (n - 1 - i0 - u) * D;
          lf[u] = lambda[qf];
          hl[u] = h_local[qf];
          if (backward) {
            lb[u] = lambda[qb];
            dl[u] = d_local[qb];
          }
        }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        if (i0 + u < n) {
          const int64_t qf = first + (i0 + u) * D, qb = first + (n - 1 - i0 - u) * D;
          h_in[qf] = h;
          h = hl[u] + exp(lf[u]) * h;
          if (backward) {
            d_after[qb] = dh;
            dh = dl[u] + exp(lb[u]) * dh;
          }
        }
    }
    if (hT) hT[p] = h;
    if (dh0) dh0[p] = dh;
  }
}

// Pass 3 of the forward: each chunk's forward walk from the state entering it.
template <class S, class C = compute_t<S>>
__global__ void __launch_bounds__(kThreads, kMinBlocks<S>)
    hgrn_chunk_fwd_kernel(ChunkGrid cg, const S* __restrict__ x, const S* __restrict__ g,
                          const C* __restrict__ h_in, S* __restrict__ o) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < cg.B * cg.n * cg.D;
       p += int64_t(gridDim.x) * blockDim.x)
    forward_walk<S>(x, g, o, cg.at(p), cg.D, cg.len(p), h_in[p]);
}

// Pass 3 of the backward: each chunk's reverse walk from the gradient entering it from after,
// then its gate walk from the state entering it.
template <class S, class C = compute_t<S>>
__global__ void __launch_bounds__(kThreads, kMinBlocks<S>)
    hgrn_chunk_bwd_kernel(ChunkGrid cg, const S* __restrict__ x, const S* __restrict__ g,
                          const S* __restrict__ dout, const C* __restrict__ h_in,
                          const C* __restrict__ d_after, S* dx, S* __restrict__ dg) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < cg.B * cg.n * cg.D;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t at = cg.at(p), len = cg.len(p);
    reverse_walk<S>(dout, g, dx, at, cg.D, len, d_after[p]);
    gate_walk<S>(x, g, dx, dg, at, cg.D, len, h_in[p]);
  }
}

// The one-pass chunk forward: block = (b, tile of kTileCh channels) with kLanes time lanes of
// kLaneSteps steps (thread (lane, ch); a warp is one lane of 32 channels); thread (lane, ch) holds
// its steps' x and g in registers as stored (exp(g) is computed in both scans: the kernel is bound
// by memory, not by exp). Per window of kWindow steps: lane summaries to shared memory; each lane
// folds the summaries of the lanes before it into the window's carry; it then rescans its steps
// from that state and writes o; the last lane's end state is the next window's carry. Steps past T
// and channels past D are identity steps (x = 0, g = 0), so they pass the carry through unchanged.
// The next window's loads are issued before this window's scans (a second register set), so the
// memory streams under the scans, the barriers and the carry chain instead of after them.
constexpr int kTileCh = 32;
constexpr int kLanes = 16;
constexpr int kLaneSteps = 16;
constexpr int kWindow = kLanes * kLaneSteps;

// A lane's kLaneSteps elements of seq from step t0 (element t0 at seq[at]); identity steps
// (zero, nothing read) past T or for a channel past D. shift = 1 reads the step before each
// (o_{t-1}), zero before step 0.
template <class S>
__device__ inline void load_lane(S (&dst)[kLaneSteps], const S* __restrict__ seq, int64_t at,
                                 int64_t D, int64_t t0, int64_t T, bool live, int shift = 0) {
  const S zero = value_cast<S>(compute_t<S>{});
#pragma unroll
  for (int s = 0; s < kLaneSteps; ++s) {
    const bool in = live && t0 + s < T && t0 + s >= shift;
    dst[s] = in ? seq[at + (s - shift) * D] : zero;
  }
}

// Two register sets of x and g: compiled for one block of 512 threads a multiprocessor (128
// registers), which the benchmark shape's 128 blocks have anyway (f64, a reference dtype, spills).
template <class S, class C = compute_t<S>>
__global__ void __launch_bounds__(kTileCh* kLanes, 1)
    hgrn_window_fwd_kernel(const S* __restrict__ x, const S* __restrict__ g,
                           const C* __restrict__ h0,  // [B,D] or null
                           S* __restrict__ o,         // [B,T,D] overwritten
                           C* __restrict__ hT,        // [B,D] or null
                           int64_t T, int64_t D) {
  __shared__ C lane_h[kLanes][kTileCh];      // a lane's end state from a zero start
  __shared__ C lane_decay[kLanes][kTileCh];  // exp(sum of the lane's log gates)
  __shared__ C carry[kTileCh];               // the state entering the window
  const int ch = threadIdx.x % kTileCh, lane = threadIdx.x / kTileCh;
  const int64_t tiles = (D + kTileCh - 1) / kTileCh;
  const int64_t b = blockIdx.x / tiles, d = (blockIdx.x % tiles) * kTileCh + ch;
  const bool live = d < D;
  if (lane == 0) carry[ch] = live && h0 ? h0[b * D + d] : C{};
  const int64_t t_lane = int64_t(lane) * kLaneSteps, at0 = (b * T + t_lane) * D + d;
  S xs[kLaneSteps], gs[kLaneSteps];  // this window's steps, as stored
  load_lane(xs, x, at0, D, t_lane, T, live);
  load_lane(gs, g, at0, D, t_lane, T, live);
  C h = C{};
  for (int64_t w0 = 0; w0 < T; w0 += kWindow) {
    const int64_t t0 = w0 + t_lane, at = at0 + w0 * D;
    S xn[kLaneSteps], gn[kLaneSteps];  // the next window's (nothing read past T)
    load_lane(xn, x, at + kWindow * D, D, t0 + kWindow, T, live);
    load_lane(gn, g, at + kWindow * D, D, t0 + kWindow, T, live);
    C lam = C{};
    h = C{};
#pragma unroll
    for (int s = 0; s < kLaneSteps; ++s) {
      const C gv = value_cast<C>(gs[s]);
      h = exp(gv) * h + value_cast<C>(xs[s]);
      lam += gv;
    }
    lane_h[lane][ch] = h;
    lane_decay[lane][ch] = exp(lam);
    __syncthreads();  // every lane's summary and the window's carry written
    h = carry[ch];
    for (int j = 0; j < lane; ++j) h = lane_h[j][ch] + lane_decay[j][ch] * h;
    __syncthreads();  // every read of carry and the summaries done before they are rewritten
#pragma unroll
    for (int s = 0; s < kLaneSteps; ++s) {
      h = exp(value_cast<C>(gs[s])) * h + value_cast<C>(xs[s]);
      if (live && t0 + s < T) o[at + s * D] = value_cast<S>(h);
      xs[s] = xn[s];
      gs[s] = gn[s];
    }
    if (lane == kLanes - 1) carry[ch] = h;
  }
  if (lane == kLanes - 1 && live && hT) hT[b * D + d] = h;
}

// The one-pass chunk backward: the one-pass forward's blocks walking the windows from the last,
// with h_{t-1} read from the forward's output o (h0 or 0 before the first step) instead of being
// recomputed from x. Per window: each lane's reverse walk from zero gives its e (the gradient it
// sends to the state before it) and its decay exp(sum of its log gates); each lane folds the
// summaries of the lanes after it into the carry entering the window from after (dhT for the
// last), rescans its steps from there backwards and writes dx_t = dh and
// dg_t = exp(g_t) o_{t-1} dx_t; the first lane's end carry is the next window's (dh0 after the
// first window). Bytes: reads 3N (g, do, o), writes 2N (dx, dg), the floor.
// The next (earlier) window's g and do are loaded under this window's scans as in the forward;
// o is read at the window's start and used only by the rescan (registers: 64 + 16 held loads a
// thread within 128, one block of 512 threads a multiprocessor; f64, a reference dtype, spills).
template <class S, class C = compute_t<S>>
__global__ void __launch_bounds__(kTileCh* kLanes, 1)
    hgrn_window_bwd_kernel(const S* __restrict__ g, const S* __restrict__ o,
                           const C* __restrict__ h0,    // [B,D] or null
                           const S* __restrict__ dout,  // [B,T,D]
                           const C* __restrict__ dhT,   // [B,D] or null
                           S* __restrict__ dx,          // [B,T,D] overwritten
                           S* __restrict__ dg,          // [B,T,D] overwritten
                           C* __restrict__ dh0,         // [B,D] or null
                           int64_t T, int64_t D) {
  __shared__ C lane_e[kLanes][kTileCh];      // a lane's gradient to the state before it, from 0
  __shared__ C lane_decay[kLanes][kTileCh];  // exp(sum of the lane's log gates)
  __shared__ C carry[kTileCh];               // the gradient entering the window from after
  const int ch = threadIdx.x % kTileCh, lane = threadIdx.x / kTileCh;
  const int64_t tiles = (D + kTileCh - 1) / kTileCh;
  const int64_t b = blockIdx.x / tiles, d = (blockIdx.x % tiles) * kTileCh + ch;
  const bool live = d < D;
  if (lane == kLanes - 1) carry[ch] = live && dhT ? dhT[b * D + d] : C{};
  const C h_first = live && h0 ? h0[b * D + d] : C{};  // h_{-1}
  const int64_t t_lane = int64_t(lane) * kLaneSteps, at0 = (b * T + t_lane) * D + d;
  const int64_t w_last = (T - 1) / kWindow * kWindow;
  S gs[kLaneSteps], ds[kLaneSteps];  // this window's steps, as stored
  load_lane(gs, g, at0 + w_last * D, D, w_last + t_lane, T, live);
  load_lane(ds, dout, at0 + w_last * D, D, w_last + t_lane, T, live);
  C dh = C{};
  for (int64_t w0 = w_last; w0 >= 0; w0 -= kWindow) {
    const int64_t t0 = w0 + t_lane, at = at0 + w0 * D;
    S hs[kLaneSteps];  // hs[s] = o_{t0+s-1}, read by the rescan
    load_lane(hs, o, at, D, t0, T, live, 1);
    S gn[kLaneSteps], ds_next[kLaneSteps];  // the window before (nothing read before step 0)
    const int64_t tp = t0 - kWindow;
    load_lane(gn, g, at - kWindow * D, D, tp, w0 > 0 ? T : 0, live);
    load_lane(ds_next, dout, at - kWindow * D, D, tp, w0 > 0 ? T : 0, live);
    C lam = C{};
    dh = C{};
#pragma unroll
    for (int s = kLaneSteps - 1; s >= 0; --s) {
      const C gv = value_cast<C>(gs[s]);
      dh = exp(gv) * (dh + value_cast<C>(ds[s]));
      lam += gv;
    }
    lane_e[lane][ch] = dh;
    lane_decay[lane][ch] = exp(lam);
    __syncthreads();  // every lane's summary and the window's carry written
    dh = carry[ch];
    for (int j = kLanes - 1; j > lane; --j) dh = lane_e[j][ch] + lane_decay[j][ch] * dh;
    __syncthreads();  // every read of carry and the summaries done before they are rewritten
#pragma unroll
    for (int s = kLaneSteps - 1; s >= 0; --s) {
      const C f = exp(value_cast<C>(gs[s]));
      dh += value_cast<C>(ds[s]);
      const C h_prev = t0 + s > 0 ? value_cast<C>(hs[s]) : h_first;
      if (live && t0 + s < T) {
        dx[at + s * D] = value_cast<S>(dh);
        dg[at + s * D] = value_cast<S>(f * h_prev * dh);
      }
      dh *= f;
      gs[s] = gn[s];
      ds[s] = ds_next[s];
    }
    if (lane == 0) carry[ch] = dh;
  }
  if (lane == 0 && live && dh0) dh0[b * D + d] = dh;
}

// ---- launchers, generic over the storage type

void check_dims(const HgrnDims& d, bool has_inputs, const char* op) {
  HLA_CHECK(d.B > 0 && d.T > 0 && d.D > 0, op << ": B,T,D = " << d.B << "," << d.T << "," << d.D);
  HLA_CHECK(has_inputs, op << ": x and g are required");
}

// Scratch of n elements of the compute type C (f32, f64 or FloatPair: two f32).
template <class C>
Tensor scratch_of(int64_t n) {
  if constexpr (std::is_same_v<C, double>) return cuda_empty({n}, DType::f64);
  return cuda_empty({n * int64_t(sizeof(C) / sizeof(float))}, DType::f32);
}

ChunkGrid chunk_grid(const HgrnDims& d) {
  const int64_t L = chunk_len(d.T);
  return {d.B, d.T, d.D, L, (d.T + L - 1) / L};
}

template <class S>
void recurrent_forward(const ScanForward<S>& s, const char* op) {
  check_dims(s.d, s.x && s.g, op);
  HLA_CHECK(s.o, "o is required");
  const int64_t B = s.d.B, T = s.d.T, D = s.d.D;
  hgrn_recurrent_fwd_kernel<S>
      <<<grid_for(B * D), kThreads, 0, stream()>>>(s.x, s.g, s.h0, s.o, s.hT, B, T, D);
  CUDA_CHECK(cudaGetLastError());
}

template <class S>
void recurrent_backward(const ScanBackward<S>& s, const char* op) {
  check_dims(s.d, s.x && s.g, op);
  HLA_CHECK(s.dout && s.dx && s.dg, "dout, dx and dg are required");
  const int64_t B = s.d.B, T = s.d.T, D = s.d.D;
  hgrn_recurrent_bwd_kernel<S><<<grid_for(B * D), kThreads, 0, stream()>>>(
      s.x, s.g, s.h0, s.dout, s.dhT, s.dx, s.dg, s.dh0, B, T, D);
  CUDA_CHECK(cudaGetLastError());
}

// The one-pass kernels' blocks (a batch row and kTileCh channels each), or 0 when they would not
// fill the GPU (a block of pairs does the work of two) and the three-pass forms run instead.
template <class S>
unsigned one_pass_blocks(const HgrnDims& d, const char* op) {
  const int64_t blocks = d.B * ((d.D + kTileCh - 1) / kTileCh);
  if (blocks * kChannelsPer<S> < Context::get().props().multiProcessorCount) return 0;
  HLA_CHECK(blocks < (int64_t(1) << 31), op << ": B*D too large");
  return static_cast<unsigned>(blocks);
}

template <class S>
void chunk_forward(const ScanForward<S>& s, const char* op) {
  using C = compute_t<S>;
  check_dims(s.d, s.x && s.g, op);
  HLA_CHECK(s.o, "o is required");
  if (const unsigned blocks = one_pass_blocks<S>(s.d, op)) {
    hgrn_window_fwd_kernel<S><<<blocks, kTileCh * kLanes, 0, stream()>>>(
        s.x, s.g, s.h0, s.o, s.hT, s.d.T, s.d.D);
    CUDA_CHECK(cudaGetLastError());
    return;
  }
  const ChunkGrid cg = chunk_grid(s.d);
  const int64_t M = cg.B * cg.n * cg.D;
  const Tensor scratch = scratch_of<C>(3 * M);  // lambda | h_local | h_in
  C* lambda = static_cast<C*>(const_cast<void*>(scratch.raw_data()));
  C* h_local = lambda + M;
  C* h_in = h_local + M;
  hgrn_chunk_summary_kernel<S, C>
      <<<grid_for(M), kThreads, 0, stream()>>>(cg, s.x, s.g, nullptr, lambda, h_local, nullptr);
  CUDA_CHECK(cudaGetLastError());
  hgrn_chunk_carry_kernel<C><<<grid_for(cg.B * cg.D), kThreads, 0, stream()>>>(
      cg, lambda, h_local, s.h0, h_in, s.hT, nullptr, nullptr, nullptr, nullptr);
  CUDA_CHECK(cudaGetLastError());
  hgrn_chunk_fwd_kernel<S><<<grid_for(M), kThreads, 0, stream()>>>(cg, s.x, s.g, h_in, s.o);
  CUDA_CHECK(cudaGetLastError());
}

template <class S>
void chunk_backward(const ScanBackward<S>& s, const char* op) {
  using C = compute_t<S>;
  check_dims(s.d, s.x && s.g, op);
  HLA_CHECK(s.dout && s.dx && s.dg, "dout, dx and dg are required");
  // the one-pass backward reads h_{t-1} from o
  if (const unsigned blocks = s.o ? one_pass_blocks<S>(s.d, op) : 0) {
    hgrn_window_bwd_kernel<S><<<blocks, kTileCh * kLanes, 0, stream()>>>(
        s.g, s.o, s.h0, s.dout, s.dhT, s.dx, s.dg, s.dh0, s.d.T, s.d.D);
    CUDA_CHECK(cudaGetLastError());
    return;
  }
  const ChunkGrid cg = chunk_grid(s.d);
  const int64_t M = cg.B * cg.n * cg.D;
  const Tensor scratch = scratch_of<C>(5 * M);  // lambda | h_local | d_local | h_in | d_after
  C* lambda = static_cast<C*>(const_cast<void*>(scratch.raw_data()));
  C* h_local = lambda + M;
  C* d_local = h_local + M;
  C* h_in = d_local + M;
  C* d_after = h_in + M;
  hgrn_chunk_summary_kernel<S, C>
      <<<grid_for(M), kThreads, 0, stream()>>>(cg, s.x, s.g, s.dout, lambda, h_local, d_local);
  CUDA_CHECK(cudaGetLastError());
  hgrn_chunk_carry_kernel<C><<<grid_for(cg.B * cg.D), kThreads, 0, stream()>>>(
      cg, lambda, h_local, s.h0, h_in, nullptr, d_local, s.dhT, d_after, s.dh0);
  CUDA_CHECK(cudaGetLastError());
  hgrn_chunk_bwd_kernel<S>
      <<<grid_for(M), kThreads, 0, stream()>>>(cg, s.x, s.g, s.dout, h_in, d_after, s.dx, s.dg);
  CUDA_CHECK(cudaGetLastError());
}

// ---- the public structs as ScanForward / ScanBackward

template <class S>
ScanForward<S> scan_of(const HgrnArgs<S>& a, const HgrnOut<S>& out) {
  return {a.d, a.x, a.g, a.h0, out.o, out.hT};
}
template <class S>
ScanBackward<S> scan_of(const HgrnArgs<S>& a, const HgrnGrad<S>& grad) {
  return {a.d, a.x, a.g, a.h0, grad.o, grad.dout, grad.dhT, grad.dx, grad.dg, grad.dh0};
}

// hla::bf16 has __nv_bfloat16's bits (common.cuh).
const bf16_dev* dev_ptr(const bf16* p) {
  return reinterpret_cast<const bf16_dev*>(p);
}
bf16_dev* dev_ptr(bf16* p) {
  return reinterpret_cast<bf16_dev*>(p);
}

ScanForward<bf16_dev> scan_of(const HgrnBf16Args& a, const HgrnBf16Out& out) {
  return {a.d, dev_ptr(a.x), dev_ptr(a.g), a.h0, dev_ptr(out.o), out.hT};
}
ScanBackward<bf16_dev> scan_of(const HgrnBf16Args& a, const HgrnBf16Grad& grad) {
  return {
      a.d,      dev_ptr(a.x),     dev_ptr(a.g),     a.h0,    dev_ptr(grad.o), dev_ptr(grad.dout),
      grad.dhT, dev_ptr(grad.dx), dev_ptr(grad.dg), grad.dh0};
}

// ---- the same calls on channel pairs (header): D even, every bf16 pointer 4-byte aligned
bool pairs_fit(int64_t D, std::initializer_list<const void*> bf16_pointers) {
  if (D % 2 != 0) return false;
  for (const void* p : bf16_pointers)
    if (p && reinterpret_cast<uintptr_t>(p) % 4 != 0) return false;
  return true;
}
const bf16x2_dev* pairs(const bf16_dev* p) {
  return reinterpret_cast<const bf16x2_dev*>(p);
}
bf16x2_dev* pairs(bf16_dev* p) {
  return reinterpret_cast<bf16x2_dev*>(p);
}
const FloatPair* pairs(const float* p) {
  return reinterpret_cast<const FloatPair*>(p);
}
FloatPair* pairs(float* p) {
  return reinterpret_cast<FloatPair*>(p);
}
kernels::HgrnDims pair_dims(kernels::HgrnDims d) {
  return {d.B, d.T, d.D / 2};
}

ScanForward<bf16x2_dev> pairs_of(const ScanForward<bf16_dev>& s) {
  return {pair_dims(s.d), pairs(s.x), pairs(s.g), pairs(s.h0), pairs(s.o), pairs(s.hT)};
}
ScanBackward<bf16x2_dev> pairs_of(const ScanBackward<bf16_dev>& s) {
  return {pair_dims(s.d), pairs(s.x),   pairs(s.g),  pairs(s.h0), pairs(s.o),
          pairs(s.dout),  pairs(s.dhT), pairs(s.dx), pairs(s.dg), pairs(s.dh0)};
}
bool pairs_fit(const ScanForward<bf16_dev>& s) {
  return pairs_fit(s.d.D, {s.x, s.g, s.o});
}
bool pairs_fit(const ScanBackward<bf16_dev>& s) {
  return pairs_fit(s.d.D, {s.x, s.g, s.o, s.dout, s.dx, s.dg});
}

// Runs run(scan) on channel pairs when they fit, else on single channels.
template <class Scan, class Run>
void on_pairs_if_fit(const Scan& s, Run&& run) {
  if (pairs_fit(s)) return run(pairs_of(s));
  run(s);
}

}  // namespace

template <class S>
void hgrn_recurrent_forward(const HgrnArgs<S>& a, const HgrnOut<S>& out) {
  recurrent_forward(scan_of(a, out), "hgrn_recurrent_forward (cuda)");
}
template <class S>
void hgrn_recurrent_backward(const HgrnArgs<S>& a, const HgrnGrad<S>& grad) {
  recurrent_backward(scan_of(a, grad), "hgrn_recurrent_backward (cuda)");
}
template <class S>
void hgrn_chunk_forward(const HgrnArgs<S>& a, const HgrnOut<S>& out) {
  chunk_forward(scan_of(a, out), "hgrn_chunk_forward (cuda)");
}
template <class S>
void hgrn_chunk_backward(const HgrnArgs<S>& a, const HgrnGrad<S>& grad) {
  chunk_backward(scan_of(a, grad), "hgrn_chunk_backward (cuda)");
}

template void hgrn_recurrent_forward<float>(const HgrnArgs<float>&, const HgrnOut<float>&);
template void hgrn_recurrent_forward<double>(const HgrnArgs<double>&, const HgrnOut<double>&);
template void hgrn_recurrent_backward<float>(const HgrnArgs<float>&, const HgrnGrad<float>&);
template void hgrn_recurrent_backward<double>(const HgrnArgs<double>&, const HgrnGrad<double>&);
template void hgrn_chunk_forward<float>(const HgrnArgs<float>&, const HgrnOut<float>&);
template void hgrn_chunk_forward<double>(const HgrnArgs<double>&, const HgrnOut<double>&);
template void hgrn_chunk_backward<float>(const HgrnArgs<float>&, const HgrnGrad<float>&);
template void hgrn_chunk_backward<double>(const HgrnArgs<double>&, const HgrnGrad<double>&);

void hgrn_recurrent_forward_bf16(const HgrnBf16Args& a, const HgrnBf16Out& out) {
  on_pairs_if_fit(scan_of(a, out), [](const auto& s) {
    recurrent_forward(s, "hgrn_recurrent_forward_bf16 (cuda)");
  });
}
void hgrn_recurrent_backward_bf16(const HgrnBf16Args& a, const HgrnBf16Grad& grad) {
  on_pairs_if_fit(scan_of(a, grad), [](const auto& s) {
    recurrent_backward(s, "hgrn_recurrent_backward_bf16 (cuda)");
  });
}
void hgrn_chunk_forward_bf16(const HgrnBf16Args& a, const HgrnBf16Out& out) {
  on_pairs_if_fit(scan_of(a, out),
                  [](const auto& s) { chunk_forward(s, "hgrn_chunk_forward_bf16 (cuda)"); });
}
void hgrn_chunk_backward_bf16(const HgrnBf16Args& a, const HgrnBf16Grad& grad) {
  on_pairs_if_fit(scan_of(a, grad),
                  [](const auto& s) { chunk_backward(s, "hgrn_chunk_backward_bf16 (cuda)"); });
}

}  // namespace hla::cuda
