// What the short convolution's two kernel families share (short_conv_window.cuh, the register
// walks of W <= 4; the tiled kernels of short_conv.cu, any W): the problem's sizes and the input
// at a time step, the cache standing in for the steps before t = 0.
//   x [B,T,D] (row-major), cache [B,D,W-1] (the W-1 inputs before t = 0, oldest first) or none.
#pragma once

#include "kernels/cuda/common.cuh"

namespace hla::cuda::conv {

struct ConvDims {
  int64_t B, T, D, W;
};

// Input at time t of sequence b, channel c: x for 0 <= t, the cache for -(W-1) <= t < 0 (zero
// without one); callers keep t >= -(W-1).
template <class S>
__device__ inline S input_at(const S* x, const S* cache, const ConvDims& d, int64_t b, int64_t t,
                             int64_t c) {
  if (t >= 0) return x[(b * d.T + t) * d.D + c];
  if (!cache) return value_cast<S>(0.0f);
  return cache[(b * d.D + c) * (d.W - 1) + (d.W - 1) + t];
}

}  // namespace hla::cuda::conv
