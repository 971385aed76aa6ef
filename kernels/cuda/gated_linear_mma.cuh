// What the two tensor-core files of the gated linear family share: gated_linear_mma.cu (the state
// passes, and every kernel of the per-key decay) and gated_linear_scalar_mma.cu (the output and
// gradient kernels of a decay shared by a head's keys). Chunks of kN = kernels::kChunk = 64 rows,
// one warp per 16-row sub-chunk, kBlock = 128 threads a block.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gated_linear_geometry.cuh"
#include "kernels/recurrence.h"

namespace hla::cuda::gla_mma {

// e^x on the multifunction unit, as __expf computes it: ex2.approx of x log2(e), relative error
// about 1e-7 near 0 and 7e-6 at |x| = 100 (CUDA Math API: 2 + 1.17 |x| ulp), against the 4e-3
// of the bf16 rounding every operand here takes. The .ftz form is one MUFU.EX2 after the
// multiply; __expf (no ftz) adds a range test and two predicated multiplies to return
// denormals. The results are the same bits down to 2^-126; below it they flush to 0. Every
// exponential here is a decay factor of at most 1 or scales one, so a flushed factor stands for
// a term that has decayed away.
__device__ __forceinline__ float fast_exp(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x * 1.4426950408889634f));
  return y;
}

constexpr int kN = static_cast<int>(kernels::kChunk);  // rows per chunk
constexpr int kSub = 16;                               // rows per sub-chunk: one warp, mma M
constexpr int kWarps = kN / kSub;
constexpr int kBlock = 32 * kWarps;

// The device pointers of one call.
struct Operands {
  const bf16_dev* q;
  const bf16_dev* k;
  const bf16_dev* v;
  const bf16_dev* dout;  // backward only
  const float* G;        // [B*H, T, Kg]
  float scale;
};

__device__ inline int rows_in_chunk(const Geometry& g, int64_t c) {
  const int64_t t0 = c * kN;
  return static_cast<int>(g.T - t0 < kN ? g.T - t0 : kN);
}

// Rows [0, rows) of a row-major bf16 matrix in global memory (row stride `stride`, `cols` a
// multiple of 8) into shared memory (row stride ld), zeros for rows in [rows, total_rows), by
// 16-byte copies with the block's kThreads threads.
template <int kThreads = kBlock>
__device__ inline void stage(bf16_dev* dst, int ld, const bf16_dev* src, int64_t stride, int rows,
                             int cols, int total_rows) {
  const int vecs = cols / 8;
  for (int x = threadIdx.x; x < total_rows * vecs; x += kThreads) {
    const int r = x / vecs, col = x % vecs * 8;
    *reinterpret_cast<uint4*>(dst + r * ld + col) =
        r < rows ? *reinterpret_cast<const uint4*>(src + r * stride + col) : make_uint4(0, 0, 0, 0);
  }
}

struct GradPointers {
  bf16_dev* dq;
  bf16_dev* dk;
  bf16_dev* dv;
  float* dg;  // null without a gate tensor
};

// ---- launchers

template <int K_, int V_>
struct HeadSizes {
  static constexpr int K = K_, V = V_;
};

// Calls f(HeadSizes<K, V>{}) for the supported head sizes; hla::Error otherwise.
template <class F>
void with_head_sizes(int64_t K, int64_t V, const char* op, F&& f) {
  if (K == 64 && V == 64) return f(HeadSizes<64, 64>{});
  if (K == 64 && V == 128) return f(HeadSizes<64, 128>{});
  if (K == 128 && V == 64) return f(HeadSizes<128, 64>{});
  if (K == 128 && V == 128) return f(HeadSizes<128, 128>{});
  if (K == 64 && V == 256) return f(HeadSizes<64, 256>{});
  if (K == 128 && V == 256) return f(HeadSizes<128, 256>{});
  throw Error(op, "head sizes K in {64, 128} and V in {64, 128, 256}",
              "K=" + std::to_string(K) + ", V=" + std::to_string(V),
              "gated_linear_chunk_forward/backward (f32) take any head size");
}

// The states entering every chunk of the forward (cols = v, init = h0) or reverse (cols = do,
// init = dhT) recurrence, and the state after the last chunk (gated_linear_states.cu). With
// `decayed` ([B*H, T, K] bf16) the forward walk also writes the rows it decays,
// k_r e^{G_last - G_r} (chunk_dv's operand).
void chunk_states(const Operands& op, const Geometry& g, const bf16_dev* cols, const float* init,
                  bf16_dev* per_chunk, float* final_state, bool reverse,
                  bf16_dev* decayed = nullptr);

// The scalar-decay kernels (gated_linear_scalar_mma.cu) for Kg = 1 (ScalarPerHead, FixedPerHead,
// None), given the states entering each chunk (and, backward, C = dL/dS leaving each chunk):
//   o [B,T,H,V] = the chunk outputs                      (forward)
//   dq, dk, dv, and dg when gp.dg is not null            (backward; dg [B,T,H])
void scalar_decay_output(const Operands& op, const Geometry& g, const bf16_dev* states,
                         bf16_dev* o);
void scalar_decay_gradients(const Operands& op, const GradPointers& gp, const Geometry& g,
                            const bf16_dev* states, const bf16_dev* dstates);

}  // namespace hla::cuda::gla_mma
