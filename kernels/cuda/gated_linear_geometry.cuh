// The geometry of one gated-linear chunked problem on CUDA, shared by the f32 kernels
// (gated_linear_chunk.cu) and the bf16 tensor-core ones (gated_linear_mma.cu): sizes and the flat
// offsets of q, k [B,T,H,K], v [B,T,H,V], per-head gates [B,T,H], the cumulative-decay scratch
// G [B*H, T, Kg] and the states [B,H,K,V] / per-chunk states [B*H, NT, K, V].
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace hla::cuda {

// Sizes and flat offsets of one problem; bh = b * H + h.
struct Geometry {
  int64_t B, T, H, K, V;
  int64_t NT;  // chunks per head
  int64_t Kg;  // columns of G: K for PerKey, 1 otherwise
  __host__ __device__ int64_t qk(int64_t bh, int64_t t) const {
    return ((bh / H * T + t) * H + bh % H) * K;
  }
  __host__ __device__ int64_t vrow(int64_t bh, int64_t t) const {
    return ((bh / H * T + t) * H + bh % H) * V;
  }
  __host__ __device__ int64_t head_gate(int64_t bh, int64_t t) const {
    return (bh / H * T + t) * H + bh % H;
  }
  __host__ __device__ int64_t g_row(int64_t bh, int64_t t) const { return (bh * T + t) * Kg; }
  __host__ __device__ int64_t state(int64_t bh) const { return bh * K * V; }
  __host__ __device__ int64_t chunk_state(int64_t bh, int64_t c) const {
    return (bh * NT + c) * K * V;
  }
};

}  // namespace hla::cuda
