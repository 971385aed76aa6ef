// The CUDA implementations of the tensor kernels of kernels/ops.h, one function per op, with the
// same contracts (inputs: any strided view on the GPU; outputs: fresh contiguous GPU tensors).
// kernels/cpu/tensor/*.cpp dispatch here when the first operand is a CUDA tensor and the build
// defines HLA_WITH_CUDA. dtypes: f32 and f64 (bf16: not yet). Mixing devices throws hla::Error,
// except that binary() and where() accept 0-dim CPU tensors as scalars.
//
// Plain C++ (no CUDA headers), so CPU sources can include it.
#pragma once

#include <vector>

#include "kernels/ops.h"
#include "tensor/tensor.h"

namespace hla::cuda {

// ---- backend control (context.cu)
bool device_present();  // a GPU is visible to this process
void init();            // registers the CUDA storage backend (idempotent; runs at start-up)
void synchronize();     // waits for all queued GPU work
// TF32 tensor cores for f32 matmul; default off (exact fp32).
void set_tf32(bool on);
bool tf32_enabled();

// ---- elementwise.cu
Tensor contiguous(const Tensor& x);               // strided GPU copy when x is not contiguous
void copy_strided(Tensor& dst, const Tensor& src);  // dst (any view) = src, same shape
Tensor unary(ops::Unary op, const Tensor& x);
Tensor pow_scalar(const Tensor& x, double p);
Tensor add_scalar(const Tensor& x, double s);
Tensor mul_scalar(const Tensor& x, double s);
Tensor binary(ops::Binary op, const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
void add_(Tensor& a, const Tensor& b);

// ---- reduce.cu
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
Tensor max(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);

// ---- matmul_cublas.cu
Tensor matmul(const Tensor& a, const Tensor& b);

// ---- index.cu
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
Tensor index_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src);
Tensor slice_backward(const Tensor& src, const Shape& shape, int64_t dim, int64_t start,
                      int64_t step);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
Tensor scatter_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src);

// ---- softmax.cu
Tensor softmax(const Tensor& x, bool log);
Tensor softmax_backward(const Tensor& y, const Tensor& dy, bool log);

// ---- cross_entropy.cu
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     Tensor* lse);
Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                              const Tensor& lse, double dloss);

// ---- norm.cu (g undefined: plain RMSNorm)
Tensor rms_norm(const Tensor& x, const Tensor& g, const Tensor& w, double eps, Tensor* rstd);
void rms_norm_backward(const Tensor& x, const Tensor& g, const Tensor& w, const Tensor& rstd,
                       const Tensor& dy, Tensor* dx, Tensor* dg, Tensor* dw);

// ---- swiglu.cu
Tensor swiglu(const Tensor& a, const Tensor& b);
void swiglu_backward(const Tensor& a, const Tensor& b, const Tensor& dy, Tensor* da, Tensor* db);

// ---- short_conv.cu
Tensor short_conv(const Tensor& x, const Tensor& w, bool silu, const Tensor& cache);
void short_conv_backward(const Tensor& x, const Tensor& w, bool silu, const Tensor& cache,
                         const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* dcache);

// The recurrence kernels (recurrent, chunked, tiled attention): kernels/cuda/recurrence_cuda.h.

}  // namespace hla::cuda
