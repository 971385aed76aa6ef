// The CUDA context (stream, cuBLAS handle, device properties, stream-ordered allocator), the
// pool's memory statistics (kernels/cuda/memory_stats.h) and the registration of the CUDA
// storage backend (allocate, deallocate, copy, fill_zero, copy_within, convert) with
// tensor/storage.h at start-up.
// With no visible GPU nothing is registered, so a CPU-only run behaves, and fails, exactly as a
// build without CUDA.
#include "kernels/cuda/context.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/memory_stats.h"
#include "kernels/cuda/ops_cuda.h"
#include "tensor/storage.h"

namespace hla::cuda {

Context::Context() {
  if (!device_present())
    throw Error("cuda", "a visible CUDA device", "none", "run on a machine with a GPU");
  CUDA_CHECK(cudaSetDevice(0));
  CUDA_CHECK(cudaGetDeviceProperties(&props_, 0));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  // Keep freed blocks in the pool instead of returning them to the driver at each sync.
  CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool_, 0));
  uint64_t threshold = UINT64_MAX;
  CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &threshold));
  CUBLAS_CHECK(cublasCreate(&cublas_));
  CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
}

Context& Context::get() {
  // Never destroyed: tensors freed during static destruction still find a live context.
  static Context* ctx = new Context();
  return *ctx;
}

void* Context::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  void* p = nullptr;
  CUDA_CHECK(cudaMallocAsync(&p, nbytes, stream_));
  return p;
}

void Context::deallocate(void* ptr) noexcept {
  if (!ptr) return;
  const cudaError_t e = cudaFreeAsync(ptr, stream_);
  // At process exit the runtime may already be unloading; the memory goes with it.
  if (e != cudaSuccess && e != cudaErrorCudartUnloading && e != cudaErrorContextIsDestroyed)
    std::fprintf(stderr, "hla: cudaFreeAsync failed: %s\n", cudaGetErrorString(e));
}

void Context::synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

bool device_present() {
  static const bool present = [] {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky "no device / no driver" error
      return false;
    }
    return n > 0;
  }();
  return present;
}

void set_tf32(bool on) { Context::get().tf32 = on; }
bool tf32_enabled() { return Context::get().tf32; }
void synchronize() { Context::get().synchronize(); }
int multiprocessor_count() {
  return Context::get().props().multiProcessorCount;
}

static uint64_t pool_attribute(cudaMemPool_t pool, cudaMemPoolAttr attr) {
  uint64_t value = 0;
  CUDA_CHECK(cudaMemPoolGetAttribute(pool, attr, &value));
  return value;
}

MemoryStats memory_stats() {
  const cudaMemPool_t pool = Context::get().pool();
  MemoryStats s;
  s.used_bytes = pool_attribute(pool, cudaMemPoolAttrUsedMemCurrent);
  s.reserved_bytes = pool_attribute(pool, cudaMemPoolAttrReservedMemCurrent);
  // A watermark reset to 0 rises again only with the next allocation: never report it below
  // the current value.
  s.used_peak_bytes = std::max(s.used_bytes, pool_attribute(pool, cudaMemPoolAttrUsedMemHigh));
  s.reserved_peak_bytes =
      std::max(s.reserved_bytes, pool_attribute(pool, cudaMemPoolAttrReservedMemHigh));
  return s;
}

void reset_peak_memory_stats() {
  const cudaMemPool_t pool = Context::get().pool();
  // The runtime accepts only 0 for the watermarks.
  uint64_t zero = 0;
  CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero));
  CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &zero));
}

void release_cached_memory() {
  Context& ctx = Context::get();
  // Blocks freed by queued cudaFreeAsync calls return to the pool only once the stream gets there.
  ctx.synchronize();
  CUDA_CHECK(cudaMemPoolTrimTo(ctx.pool(), 0));
}

namespace {

void* backend_allocate(size_t nbytes) { return Context::get().allocate(nbytes); }
void backend_deallocate(void* ptr) { Context::get().deallocate(ptr); }

void backend_copy(void* dst, Device dst_device, const void* src, Device src_device,
                  size_t nbytes) {
  Context& ctx = Context::get();
  const cudaMemcpyKind kind =
      dst_device == Device::CUDA
          ? (src_device == Device::CUDA ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
          : (src_device == Device::CUDA ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, ctx.stream()));
  // Host memory is pageable and may be reused or read right after return.
  if (kind != cudaMemcpyDeviceToDevice) ctx.synchronize();
}

void backend_fill_zero(void* dst, size_t nbytes) {
  CUDA_CHECK(cudaMemsetAsync(dst, 0, nbytes, Context::get().stream()));
}

}  // namespace

void init() {
  static bool done = false;
  if (done) return;
  done = true;
  if (!device_present()) return;
  DeviceBackend b;
  b.allocate = backend_allocate;
  b.deallocate = backend_deallocate;
  b.copy = backend_copy;
  b.fill_zero = backend_fill_zero;
  b.copy_within = [](Tensor& dst, const Tensor& src) { copy_strided(dst, src); };
  b.convert = [](Tensor& dst, const Tensor& src) { convert_dtype(dst, src); };
  register_device_backend(Device::CUDA, b);
}

namespace {
// Start-up registration (see init()).
[[maybe_unused]] const bool g_registered = (init(), true);
}  // namespace

}  // namespace hla::cuda
