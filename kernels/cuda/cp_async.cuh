// Asynchronous copies (cp.async, sm_80+): global to shared memory without registers, so that the
// next tile's loads run under this tile's products. A thread's copies since its last commit form
// one group; cp_async_wait<N> returns once at most N of the thread's groups are still in flight
// (then a barrier makes every thread's landed copies visible to the block).
#pragma once

#include <cstdint>

namespace hla::cuda {

// 16 bytes (4, 8 for cp_async_4, cp_async_8) from src to shared dst (a shared-memory byte
// address, or a generic pointer into shared memory), or zeros when !valid (src is then not
// read).
__device__ inline void cp_async_16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ inline void cp_async_16(void* dst, const void* src, bool valid) {
  cp_async_16(static_cast<uint32_t>(__cvta_generic_to_shared(dst)), src, valid);
}
__device__ inline void cp_async_4(void* dst, const void* src, bool valid) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(src),
               "r"(valid ? 4 : 0));
}
__device__ inline void cp_async_8(void* dst, const void* src, bool valid) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(s), "l"(src),
               "r"(valid ? 8 : 0));
}
__device__ inline void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ inline void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

}  // namespace hla::cuda
