// The GPU time of queued work, measured as triton.testing.do_bench measures it (the timer of fla's
// benchmarks, so both sides of a comparison are timed alike): a memset of a 256 MiB buffer first
// evicts the L2 cache, then two CUDA events on the stream bracket the work. While the GPU runs
// the memset (~60 us on an H100 / H200) the host queues the work's launches, so host overhead
// shorter than that is not counted; a longer one shows up as idle GPU time between the events.
#include <cstddef>

#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

constexpr size_t kFlushBytes = size_t(256) << 20;  // do_bench's cache buffer

// Owned events: destroyed also when the timed work throws.
struct EventPair {
  cudaEvent_t start = nullptr, stop = nullptr;
  EventPair() {
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~EventPair() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
};

}  // namespace

double flushed_gpu_ms(const std::function<void()>& body) {
  Context& ctx = Context::get();
  // Outside the pool (cudaMalloc), so the pool's memory statistics never count it; kept for the
  // process's life.
  static void* flush = [] {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, kFlushBytes));
    return p;
  }();
  EventPair ev;
  CUDA_CHECK(cudaMemsetAsync(flush, 0, kFlushBytes, ctx.stream()));
  CUDA_CHECK(cudaEventRecord(ev.start, ctx.stream()));
  body();
  CUDA_CHECK(cudaEventRecord(ev.stop, ctx.stream()));
  CUDA_CHECK(cudaEventSynchronize(ev.stop));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, ev.start, ev.stop));
  return double(ms);
}

}  // namespace hla::cuda
