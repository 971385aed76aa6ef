// The memory statistics of the CUDA pool (kernels/cuda/memory_stats.h): a 64 MiB tensor shows up
// in `used` and its peak, the peak survives the free, and a reset after releasing the cache
// brings the peak back below it.
#include "tests/cuda/cuda_test_helpers.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/memory_stats.h"
#include "kernels/cuda/ops_cuda.h"

using namespace hla;

TEST_CASE("cuda memory statistics follow an allocation and its release", "[cuda]") {
  HLA_REQUIRE_GPU();
  constexpr uint64_t kBytes = uint64_t(64) << 20;
  cuda::release_cached_memory();
  cuda::reset_peak_memory_stats();
  const cuda::MemoryStats before = cuda::memory_stats();
  {
    const Tensor t = Tensor::empty({int64_t(kBytes / 4)}, DType::f32, Device::CUDA);
    cuda::synchronize();
    const cuda::MemoryStats during = cuda::memory_stats();
    CHECK(during.used_bytes >= before.used_bytes + kBytes);
    CHECK(during.used_peak_bytes >= during.used_bytes);
    CHECK(during.reserved_bytes >= during.used_bytes);
  }
  cuda::synchronize();
  const cuda::MemoryStats after = cuda::memory_stats();
  CHECK(after.used_bytes < before.used_bytes + kBytes);
  CHECK(after.used_peak_bytes >= before.used_bytes + kBytes);

  cuda::release_cached_memory();
  cuda::reset_peak_memory_stats();
  const cuda::MemoryStats reset = cuda::memory_stats();
  CHECK(reset.used_peak_bytes < before.used_bytes + kBytes);
  CHECK(reset.reserved_bytes < after.reserved_bytes);
}
#endif
