// cuda::Context: the one place that holds the CUDA backend's process-wide state (style.md,
// "global mutable state"): the stream every kernel and copy runs on, the cuBLAS handle bound to
// it, the device properties, and the stream-ordered allocator (cudaMallocAsync from the device's
// default memory pool, whose release threshold is raised so that freed blocks are reused and a
// training step does no cudaMalloc after the first).
//
//   cuda::Context& ctx = cuda::Context::get();      // created on first use; throws without a GPU
//   kernel<<<grid, block, 0, ctx.stream()>>>(...);
//
// One GPU (device 0), one stream. Host-visible results (copies to the CPU) synchronise the stream.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace hla::cuda {

class Context {
 public:
  // The process's context (device 0). Throws hla::Error when no GPU is visible.
  static Context& get();

  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  // The pool allocate() draws from (its statistics: kernels/cuda/memory_stats.h).
  cudaMemPool_t pool() const { return pool_; }
  const cudaDeviceProp& props() const { return props_; }

  // Stream-ordered device memory; nbytes == 0 gives nullptr.
  void* allocate(size_t nbytes);
  void deallocate(void* ptr) noexcept;
  void synchronize();

  // TF32 tensor-core mode for f32 matmul (10-bit mantissa products, fp32 accumulation).
  // Off by default: f32 matmul is then exact IEEE fp32 (tests hold it to 1e-5 of the CPU).
  bool tf32 = false;

  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

 private:
  Context();
  cudaStream_t stream_ = nullptr;
  cudaMemPool_t pool_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cudaDeviceProp props_{};
};

// True when this process sees at least one CUDA device (queried once, at start-up).
bool device_present();
// Registers the CUDA storage backend with tensor/storage.h when a device is present; a no-op
// otherwise and on repeated calls. Runs from a static initialiser of this library (which CMake
// links whole, so the initialiser is never dropped); calling it again is harmless.
void init();

}  // namespace hla::cuda
