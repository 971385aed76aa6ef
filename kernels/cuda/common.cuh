// Shared helpers of the CUDA kernels (not a public header): argument checks, dtype dispatch,
// storage/compute types with their conversions, the strided indexer, launch sizes and
// deterministic block/warp reductions.
//
// Storage and compute: a tensor kernel reads elements of a storage type S and computes in
// compute_t<S>: S itself for f32 and f64, float for bf16 (__nv_bfloat16). Loads convert with
// value_cast<C>(x[i]), stores round back with value_cast<S>(v); sums accumulate in float or
// wider, never in bf16.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_check.h"
#include "tensor/tensor.h"

namespace hla {

// __nv_bfloat16 has hla::bf16's bit layout (the top 16 bits of an f32), so a bf16 tensor's
// elements are read on the device as __nv_bfloat16: Tensor::data<__nv_bfloat16>() checks
// DType::bf16.
static_assert(sizeof(__nv_bfloat16) == sizeof(bf16), "bf16 and __nv_bfloat16 share 16 bits");
template <>
constexpr DType dtype_of<__nv_bfloat16>() { return DType::bf16; }

}  // namespace hla

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

// ---- storage and compute types

using bf16_dev = __nv_bfloat16;

// The arithmetic type of a storage type: float for bf16, else the type itself.
template <class S>
struct ComputeType {
  using type = S;
};
template <>
struct ComputeType<bf16_dev> {
  using type = float;
};
template <class S>
using compute_t = typename ComputeType<S>::type;

// value_cast<To>(v): the value of v as To, as the host's hla::convert (tensor/dtype_dispatch.h):
// to bf16 rounded to nearest, ties to even (__float2bfloat16_rn; from f64 __double2bfloat16, one
// rounding, not through float's; integers through float); from bf16 through float (exact).
template <class To>
struct ValueCast {
  template <class From>
  __host__ __device__ static To from(From v) { return static_cast<To>(v); }
  __host__ __device__ static To from(bf16_dev v) { return static_cast<To>(__bfloat162float(v)); }
};
template <>
struct ValueCast<bf16_dev> {
  template <class From>
  __host__ __device__ static bf16_dev from(From v) {
    return __float2bfloat16_rn(static_cast<float>(v));
  }
  __host__ __device__ static bf16_dev from(double v) { return __double2bfloat16(v); }
  __host__ __device__ static bf16_dev from(bf16_dev v) { return v; }
};
template <class To, class From>
__host__ __device__ __forceinline__ To value_cast(From v) {
  return ValueCast<To>::from(v);
}

// Calls f(TypeTag<T>{}) for the types of the kernels that compute in their storage type, f32 and
// f64 (the recurrences and the optimizer; C++17: the .cu files compile as C++17, the newest
// dialect CMake 3.25 knows for nvcc):
//   visit_cuda_float(x.dtype(), "gla", [&](auto tag_) {
//     using T = typename decltype(tag_)::type;
//   });
template <class F>
decltype(auto) visit_cuda_float(DType t, const char* op, F&& f) {
  if (t == DType::f32) return f(TypeTag<float>{});
  if (t == DType::f64) return f(TypeTag<double>{});
  throw Error(op, "a f32 or f64 tensor on cuda", dtype_name(t),
              t == DType::bf16 ? "this kernel computes in f32 or f64: call .to(DType::f32)"
                               : "integer tensors hold indices; convert with .to(DType::f32)");
}

// Calls f(TypeTag<S>{}) for the storage types of the tensor kernels: f32, f64 and bf16 (which
// computes in compute_t<S> = float):
//   visit_cuda_storage(x.dtype(), "exp", [&](auto tag_) {
//     using S = typename decltype(tag_)::type;
//     using C = compute_t<S>;
//   });
template <class F>
decltype(auto) visit_cuda_storage(DType t, const char* op, F&& f) {
  if (t == DType::f32) return f(TypeTag<float>{});
  if (t == DType::f64) return f(TypeTag<double>{});
  if (t == DType::bf16) return f(TypeTag<bf16_dev>{});
  throw Error(op, "a f32, f64 or bf16 tensor on cuda", dtype_name(t),
              "integer tensors hold indices; convert with .to(DType::f32)");
}

// Parameters (norm and conv weights) of an op on activations x: x's dtype, or f32 when x is
// bf16 (fp32 master weights used as they are, no per-step bf16 copy).
inline void check_param_dtype(const Tensor& x, const Tensor& w, const char* op,
                              const char* name) {
  if (w.dtype() == x.dtype() || (x.dtype() == DType::bf16 && w.dtype() == DType::f32)) return;
  throw Error(op,
              std::string(name) + " of x's dtype " + dtype_name(x.dtype()) +
                  (x.dtype() == DType::bf16 ? " or f32" : ""),
              dtype_name(w.dtype()), "convert one with .to(dtype)");
}

// Calls f(TypeTag<S>{}, TypeTag<W>{}) for activations of storage type S and parameters of storage
// type W (W = S, or W = float for bf16 S); the dtypes were checked by check_param_dtype.
template <class F>
decltype(auto) visit_cuda_storage_param(DType x, DType w, const char* op, F&& f) {
  return visit_cuda_storage(x, op, [&](auto xtag_) {
    using S = typename decltype(xtag_)::type;
    if constexpr (std::is_same_v<S, bf16_dev>) {
      if (w == DType::f32) return f(xtag_, TypeTag<float>{});
    }
    return f(xtag_, xtag_);
  });
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
  bool narrow = true;      // every index < 2^31: the walk divides in 32 bits
  int64_t size[kMaxRank] = {};
  int64_t stride[kMaxRank] = {};
  __host__ __device__ int64_t offset(int64_t i) const {
    if (contiguous) return i;
    int64_t off = 0;
    if (narrow) {  // a 32-bit division is several times cheaper than a 64-bit one on the GPU
      uint32_t j = static_cast<uint32_t>(i);
      for (int d = rank - 1; d >= 0; --d) {
        const uint32_t s = static_cast<uint32_t>(size[d]);
        off += static_cast<int64_t>(j % s) * stride[d];
        j /= s;
      }
      return off;
    }
    for (int d = rank - 1; d >= 0; --d) {
      const int64_t s = size[d];
      off += (i % s) * stride[d];
      i /= s;
    }
    return off;
  }
};

// For kernels that move rows 16 bytes at a time: hla::Error unless p (if given) is 16-byte aligned.
inline void check_aligned(const void* p, const char* op, const char* name) {
  if (p && reinterpret_cast<uintptr_t>(p) % 16 != 0)
    throw Error(op, std::string(name) + " 16-byte aligned", "an address 16-byte misaligned",
                "pass a freshly allocated contiguous tensor");
}

inline Indexer make_indexer(const Tensor& t, const char* op) {
  Indexer ix;
  if (t.dim() > kMaxRank)
    throw Error(op, "a tensor of rank <= " + std::to_string(kMaxRank) + " on cuda",
                "rank " + std::to_string(t.dim()), "reshape to fewer dimensions");
  ix.rank = static_cast<int>(t.dim());
  ix.contiguous = t.is_contiguous();
  ix.narrow = t.numel() < (int64_t(1) << 31);
  for (int d = 0; d < ix.rank; ++d) {
    ix.size[d] = t.shape()[d];
    ix.stride[d] = t.strides()[d];
  }
  return ix;
}

// 16 bytes of S (8 bf16, 4 f32, 2 f64): one load or store of the pack kernels.
template <class S>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / sizeof(S);
  S v[kSize];
};

// Whether tensors can take the pack kernels: contiguous, 16-byte aligned data (undefined ones,
// an optional operand left out, do not count).
inline bool packable(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->defined() &&
        (!t->is_contiguous() || reinterpret_cast<uintptr_t>(t->raw_data()) % 16 != 0))
      return false;
  return true;
}

// Elements the pack kernels take: n rounded down to whole packs when every tensor is packable,
// else none (the scalar kernels take the rest).
template <class S>
int64_t packed_elements(int64_t n, std::initializer_list<const Tensor*> ts) {
  return packable(ts) ? n / Pack<S>::kSize * Pack<S>::kSize : 0;
}
// A tensor's data as packs of S.
template <class S>
Pack<S>* packs(Tensor& t) {
  return reinterpret_cast<Pack<S>*>(t.data<S>());
}
template <class S>
const Pack<S>* packs(const Tensor& t) {
  return reinterpret_cast<const Pack<S>*>(t.data<S>());
}

// Grid for a grid-stride loop over n elements.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > (1 << 20) ? (1 << 20) : b));
}

inline cudaStream_t stream() { return Context::get().stream(); }

// ---- dynamic shared memory
// The most a block may opt into on this device (227 KiB on H100 / H200).
inline size_t shared_memory_limit() { return Context::get().props().sharedMemPerBlockOptin; }
// Lets `kernel` take `bytes` of dynamic shared memory: past the device's limit an internal error
// naming `op`; above the default 48 KiB the opt-in attribute.
template <class Kernel>
void allow_shared_memory(Kernel* kernel, size_t bytes, const char* op) {
  const size_t limit = shared_memory_limit();
  HLA_CHECK(bytes <= limit, op << ": a block needs " << bytes
                               << " bytes of shared memory, the device allows " << limit);
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)));
}

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
// sigmoid_dev for the computations of storage type S: for bf16 (whose results are rounded to
// 8 significant bits) e^-x on the multifunction unit and one reciprocal, branch-free (~4
// instructions against sigmoid_dev's ~25: exp and an IEEE division, in either branch); relative
// error ~1e-6 (2^-20) against bf16's 2^-9; e^-x = inf gives 0, as it should. f32 and f64 keep
// sigmoid_dev.
template <class S, class T>
__device__ inline T sigmoid_of(T x) {
  if constexpr (std::is_same_v<S, bf16_dev>)
    return __frcp_rn(1.f + __expf(-x));
  else
    return sigmoid_dev(x);
}
// logsigmoid(x) = min(x, 0) - log1p(e^-|x|), without overflow.
template <class T>
__device__ inline T log_sigmoid_dev(T x) {
  return (x < T(0) ? x : T(0)) - log1p(exp(-fabs(x)));
}
// log_sigmoid_dev for the computations of storage type S: e^-|x| on the multifunction unit for
// bf16 (as sigmoid_of), log1p exact; f32 and f64 keep log_sigmoid_dev.
template <class S, class T>
__device__ inline T log_sigmoid_of(T x) {
  if constexpr (std::is_same_v<S, bf16_dev>)
    return (x < 0.f ? x : 0.f) - log1pf(__expf(-fabsf(x)));
  else
    return log_sigmoid_dev(x);
}

}  // namespace hla::cuda
