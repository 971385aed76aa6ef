// The masks of softmax attention's contract (kernels/reference/softmax_attention.cpp) on CUDA,
// shared by the f32 tiled kernels (attention_tiled.cu) and the bf16 tensor-core ones
// (attention_mma.cu): which key j a query i attends, and the key / query ranges a tile needs.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace hla::cuda {

struct MaskRule {
  int64_t T;
  bool causal;
  int64_t window;
  __device__ bool allowed(int64_t i, int64_t j) const {
    return i < T && j < T && (!causal || j <= i) && (window <= 0 || j >= i - window + 1);
  }
  // Whether every query of [i0, i1) sees every key of [j0, j1): such tiles skip the mask.
  __device__ bool covers(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    return i1 <= T && j1 <= T && (!causal || j1 - 1 <= i0) && (window <= 0 || j0 >= i1 - window);
  }
  // Keys seen by queries [i0, i1): [first, last]
  __device__ int64_t first_key(int64_t i0) const {
    return window > 0 ? (i0 - window + 1 > 0 ? i0 - window + 1 : 0) : 0;
  }
  __device__ int64_t last_key(int64_t i1) const { return causal ? i1 - 1 : T - 1; }
  // Queries that see keys [j0, j1): [first, last]
  __device__ int64_t first_query(int64_t j0) const { return causal ? j0 : 0; }
  __device__ int64_t last_query(int64_t j1) const {
    return window > 0 ? (j1 + window - 2 < T - 1 ? j1 + window - 2 : T - 1) : T - 1;
  }
};

}  // namespace hla::cuda
