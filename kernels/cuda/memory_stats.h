// Memory statistics of the CUDA backend: the stream-ordered pool (the device's default
// cudaMemPool, kernels/cuda/context.h) from which every CUDA tensor is allocated.
//
//   used      bytes in live allocations (tensors, optimizer state, saved activations)
//   reserved  bytes the pool holds from the driver: used plus freed blocks kept for reuse
//   *_peak    the high-water mark of each since the start or the last reset_peak_memory_stats()
//
//   cuda::release_cached_memory();      // reserved -> used (optional: a clean reserved peak)
//   cuda::reset_peak_memory_stats();
//   run_training_step();
//   double gib = double(cuda::memory_stats().used_peak_bytes) / (1 << 30);
//
// The analogue of torch.cuda.max_memory_allocated() is used_peak_bytes, of max_memory_reserved()
// reserved_peak_bytes. cuBLAS workspaces and the CUDA context itself are outside the pool.
// Plain C++ (no CUDA headers), so CPU sources can include it. Every call needs a visible GPU
// (hla::Error otherwise).
#pragma once

#include <cstdint>

namespace hla::cuda {

struct MemoryStats {
  uint64_t used_bytes = 0;
  uint64_t used_peak_bytes = 0;
  uint64_t reserved_bytes = 0;
  uint64_t reserved_peak_bytes = 0;
};

// The pool's counters now.
MemoryStats memory_stats();
// Restarts both peaks from the current values.
void reset_peak_memory_stats();
// Waits for queued work, then returns the pool's unused blocks to the driver.
void release_cached_memory();

}  // namespace hla::cuda
