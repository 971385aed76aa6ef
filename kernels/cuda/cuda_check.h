// CUDA_CHECK / CUBLAS_CHECK: every CUDA runtime and cuBLAS call goes through one of these. A
// failure throws hla::Error carrying file:line, the failed expression and the library's own
// error string (style.md P9b). Launches are followed by CUDA_CHECK(cudaGetLastError()).
//
//   CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream));
//   my_kernel<<<grid, block, 0, stream>>>(...);
//   CUDA_CHECK(cudaGetLastError());
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <sstream>
#include <string>

#include "tensor/error.h"

namespace hla::cuda::detail {

[[noreturn]] inline void cuda_failed(cudaError_t e, const char* expr, const char* file, int line) {
  std::ostringstream os;
  os << file << ":" << line << ": CUDA call `" << expr << "` failed: " << cudaGetErrorName(e)
     << " (" << cudaGetErrorString(e) << ")";
  throw ::hla::Error(os.str());
}

[[noreturn]] inline void cublas_failed(cublasStatus_t s, const char* expr, const char* file,
                                       int line) {
  std::ostringstream os;
  os << file << ":" << line << ": cuBLAS call `" << expr << "` failed: "
     << cublasGetStatusName(s) << " (" << cublasGetStatusString(s) << ")";
  throw ::hla::Error(os.str());
}

}  // namespace hla::cuda::detail

#define CUDA_CHECK(call)                                                        \
  do {                                                                          \
    const cudaError_t hla_cuda_err_ = (call);                                   \
    if (hla_cuda_err_ != cudaSuccess)                                           \
      ::hla::cuda::detail::cuda_failed(hla_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(call)                                                         \
  do {                                                                             \
    const cublasStatus_t hla_cublas_st_ = (call);                                  \
    if (hla_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                   \
      ::hla::cuda::detail::cublas_failed(hla_cublas_st_, #call, __FILE__, __LINE__); \
  } while (0)
