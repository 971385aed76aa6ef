// Rotary position embedding on CUDA (kernels/ops.h, ops::rotary): for x [B,T,H,d], half = d / 2,
//   y[..., i] = x1 cos - x2 sin,  y[..., half + i] = x2 cos + x1 sin,  angle (offset + t)
//   base^(-2i/d)
// and the inverse rotation (the backward) with sin negated. One thread per (b, t, i): the angle
// depends on t and i only, so its cos / sin are computed once and applied to the pair (i, half + i)
// of every head of that row (sincosf takes ~40 instructions: computed per (row, i) they bounded
// the kernel at ~6x its bytes' time). The inverse frequencies come from the caller
// (ops::rotary_inverse_frequency, float), the angle and its cos / sin are computed in float as on
// the CPU. dtypes f32, f64, bf16 (computed in compute_t, each output rounded once).
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

constexpr int kMaxHalf = 256;  // head dims up to 512

struct RotaryDims {
  int64_t rows, T, H, half;  // rows = B * T * H
  int64_t offset;
  float sign;  // +1 forward, -1 inverse
  float inv_freq[kMaxHalf];
};

// I: the index type, uint32_t when every index fits (32-bit divisions are several times
// cheaper than 64-bit ones), else int64_t.
template <class S, class I>
__global__ void rotary_kernel(S* __restrict__ y, const S* __restrict__ x, RotaryDims d) {
  using C = compute_t<S>;
  const I half = static_cast<I>(d.half), T = static_cast<I>(d.T), H = static_cast<I>(d.H);
  const I n = static_cast<I>(d.rows / d.H * d.half);  // (b, t, i) triples
  for (I p = blockIdx.x * I(blockDim.x) + threadIdx.x; p < n; p += I(gridDim.x) * blockDim.x) {
    const I bt = p / half, i = p - bt * half, t = bt % T;
    const float theta = static_cast<float>(d.offset + static_cast<int64_t>(t)) * d.inv_freq[i];
    float sin_theta, cos_theta;
    sincosf(theta, &sin_theta, &cos_theta);
    const C c = cos_theta, s = d.sign * sin_theta;
    const int64_t head_stride = 2 * d.half;
    const int64_t first = static_cast<int64_t>(bt) * H * head_stride + static_cast<int64_t>(i);
#pragma unroll 4
    for (I h = 0; h < H; ++h) {
      const int64_t at = first + static_cast<int64_t>(h) * head_stride;
      const C x1 = value_cast<C>(x[at]), x2 = value_cast<C>(x[at + d.half]);
      y[at] = value_cast<S>(x1 * c - x2 * s);
      y[at + d.half] = value_cast<S>(x2 * c + x1 * s);
    }
  }
}

}  // namespace

Tensor rotary(const Tensor& x_in, int64_t offset, const std::vector<float>& inv_freq,
              bool inverse) {
  const char* op = inverse ? "rotary_backward" : "rotary";
  require_cuda(x_in, op, "x");
  if (x_in.dim() != 4 || x_in.size(3) % 2 != 0 || x_in.size(3) / 2 > kMaxHalf)
    throw Error(op, "x [B,T,H,d] with an even head dim d <= " + std::to_string(2 * kMaxHalf),
                to_string(x_in.shape()), "split the heads first (split_heads)");
  HLA_CHECK(static_cast<int64_t>(inv_freq.size()) == x_in.size(3) / 2,
            op << ": " << inv_freq.size() << " inverse frequencies for head dim " << x_in.size(3));
  const Tensor x = contiguous(x_in);
  RotaryDims d{};
  d.rows = x.size(0) * x.size(1) * x.size(2);
  d.T = x.size(1);
  d.H = x.size(2);
  d.half = x.size(3) / 2;
  d.offset = offset;
  d.sign = inverse ? -1.f : 1.f;
  for (int64_t i = 0; i < d.half; ++i) d.inv_freq[i] = inv_freq[i];
  return visit_cuda_storage(x.dtype(), op, [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    Tensor y = cuda_empty(x.shape(), x.dtype());
    if (d.rows == 0 || d.half == 0) return y;
    const int64_t n = d.rows / d.H * d.half;  // threads: one per (b, t, i)
    if (d.rows * d.half < (int64_t(1) << 31))
      rotary_kernel<S, uint32_t>
          <<<grid_for(n), kThreads, 0, stream()>>>(y.data<S>(), x.data<S>(), d);
    else
      rotary_kernel<S, int64_t>
          <<<grid_for(n), kThreads, 0, stream()>>>(y.data<S>(), x.data<S>(), d);
    CUDA_CHECK(cudaGetLastError());
    return y;
  });
}

}  // namespace hla::cuda
