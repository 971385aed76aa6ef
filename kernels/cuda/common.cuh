// Shared helpers of the CUDA kernels (not a public header): argument checks, dtype dispatch,
// the strided indexer, launch sizes and deterministic block/warp reductions.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_check.h"
#include "tensor/tensor.h"

namespace hla::cuda {

constexpr int kMaxRank = 8;
constexpr int kThreads = 256;

// Throws unless t is a defined CUDA tensor ("mixing devices" names both).
inline void require_cuda(const Tensor& t, const char* op, const char* name = "input") {
  check_defined(t, op, name);
  if (t.device() != Device::CUDA)
    throw Error(op, std::string(name) + " on cuda (all operands on one device)",
                std::string("a ") + device_name(t.device()) + " tensor",
                "move it with .to(Device::CUDA)");
}

template <class T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) for the CUDA compute types f32 and f64 (C++17: the .cu files compile as
// C++17, the newest dialect CMake 3.25 knows for nvcc):
//   visit_cuda_float(x.dtype(), "exp", [&](auto tag_) { using T = typename decltype(tag_)::type; });
template <class F>
decltype(auto) visit_cuda_float(DType t, const char* op, F&& f) {
  if (t == DType::f32) return f(TypeTag<float>{});
  if (t == DType::f64) return f(TypeTag<double>{});
  throw Error(op, "a f32 or f64 tensor on cuda", dtype_name(t),
              t == DType::bf16 ? "bf16 kernels are not implemented yet: call .to(DType::f32)"
                               : "integer tensors hold indices; convert with .to(DType::f32)");
}

inline Tensor cuda_empty(const Shape& shape, DType dtype) {
  return Tensor::empty(shape, dtype, Device::CUDA);
}
inline Tensor cuda_zeros(const Shape& shape, DType dtype) {
  Tensor t = cuda_empty(shape, dtype);
  if (t.numel())
    CUDA_CHECK(cudaMemsetAsync(t.raw_data(), 0, t.numel() * dtype_size(dtype),
                               Context::get().stream()));
  return t;
}

// Maps a row-major linear index over `shape` to an element offset through `strides`
// (stride 0 = broadcast). Passed to kernels by value.
struct Indexer {
  int rank = 0;
  bool contiguous = true;  // offset(i) == i
  int64_t size[kMaxRank] = {};
  int64_t stride[kMaxRank] = {};
  __host__ __device__ int64_t offset(int64_t i) const {
    if (contiguous) return i;
    int64_t off = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const int64_t s = size[d];
      off += (i % s) * stride[d];
      i /= s;
    }
    return off;
  }
};

inline Indexer make_indexer(const Tensor& t, const char* op) {
  Indexer ix;
  if (t.dim() > kMaxRank)
    throw Error(op, "a tensor of rank <= " + std::to_string(kMaxRank) + " on cuda",
                "rank " + std::to_string(t.dim()), "reshape to fewer dimensions");
  ix.rank = static_cast<int>(t.dim());
  ix.contiguous = t.is_contiguous();
  for (int d = 0; d < ix.rank; ++d) {
    ix.size[d] = t.shape()[d];
    ix.stride[d] = t.strides()[d];
  }
  return ix;
}

// Grid for a grid-stride loop over n elements.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > (1 << 20) ? (1 << 20) : b));
}

inline cudaStream_t stream() { return Context::get().stream(); }

// ---- device reductions (fixed order for a fixed blockDim: deterministic)
struct SumOp {
  template <class A>
  __device__ A operator()(A a, A b) const { return a + b; }
};
struct MaxOp {
  template <class A>
  __device__ A operator()(A a, A b) const { return a > b ? a : b; }
};

template <class A, class Op>
__device__ inline A warp_reduce(A v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Reduces v over the block; every thread gets the result. `shm` holds >= 32 values of A.
// blockDim.x must be a multiple of 32.
template <class A, class Op>
__device__ inline A block_reduce(A v, Op op, A identity, A* shm) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_reduce(v, op);
  if (lane == 0) shm[warp] = v;
  __syncthreads();
  A r = lane < nwarps ? shm[lane] : identity;
  r = warp_reduce(r, op);
  __syncthreads();  // shm may be reused by the caller right after
  return r;
}

template <class T>
__device__ inline T sigmoid_dev(T x) {
  return x >= T(0) ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x));
}

}  // namespace hla::cuda
