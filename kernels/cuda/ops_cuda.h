// The CUDA implementations of the tensor kernels of kernels/ops.h, one function per op, with the
// same contracts (inputs: any strided view on the GPU; outputs: fresh contiguous GPU tensors).
// kernels/cpu/tensor/*.cpp dispatch here when the first operand is a CUDA tensor and the build
// defines HLA_WITH_CUDA. Mixing devices throws hla::Error, except that binary() and where()
// accept 0-dim CPU tensors as scalars.
//
// dtypes: f32, f64 and bf16. bf16 is a storage type: every kernel reads it as float, computes in
// float, accumulates every sum (reductions, norms' sums of squares, softmax and cross-entropy
// sums, conv taps, index_add / scatter_add) in float or double, and rounds each bf16 output
// once. matmul: bf16 tensor cores with fp32 accumulation. Operands of one op share one dtype,
// except:
//   - rms_norm / gated_rms_norm: weight w may be f32 with bf16 x (g, dy); dw has w's dtype.
//   - short_conv: weight w may be f32 with bf16 x (cache, dy); dw has w's dtype.
//   - f32 (not bf16) results for bf16 inputs: cross_entropy's loss and lse, rms_norm's rstd
//     (statistics kept unrounded; the backward passes expect them in f32).
//
// Plain C++ (no CUDA headers), so CPU sources can include it.
#pragma once

#include <functional>
#include <vector>

#include "kernels/ops.h"
#include "tensor/tensor.h"

namespace hla::cuda {

// ---- backend control (context.cu)
bool device_present();       // a GPU is visible to this process
void init();                 // registers the CUDA storage backend (idempotent; runs at start-up)
void synchronize();          // waits for all queued GPU work
int multiprocessor_count();  // of the device in use
// TF32 tensor cores for f32 matmul and the delta rules' chunk products; default off (exact
// fp32).
void set_tf32(bool on);
bool tf32_enabled();

// ---- timing.cu
// The GPU time in ms of the work body() queues on the stream, timed as triton.testing.do_bench
// times (fla's benchmarks): a 256 MiB memset evicts the L2 cache first, then CUDA events bracket
// body's work; the host's time queueing it is hidden behind the memset when shorter. Waits for
// the work to finish.
double flushed_gpu_ms(const std::function<void()>& body);

// ---- convert.cu
// dst = src converted to dst's dtype (same shape, any dtypes and strides on both sides): the
// storage backend's convert, behind Tensor::to(DType) of a GPU tensor. To bf16 rounded to
// nearest even (from f64 in one rounding), from bf16 through float, as on the host.
void convert_dtype(Tensor& dst, const Tensor& src);

// ---- elementwise.cu
Tensor contiguous(const Tensor& x);                 // strided GPU copy when x is not contiguous
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
Tensor matmul(const Tensor& a, const Tensor& b, DType out);
void matmul_acc(Tensor& c, const Tensor& a, const Tensor& b);

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
                     Tensor* lse, int64_t counted);
Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                              const Tensor& lse, double dloss, int64_t counted);

// ---- norm.cu (g undefined: plain RMSNorm; y: the forward's output recomputed, or null)
Tensor rms_norm(const Tensor& x, const Tensor& g, const Tensor& w, double eps, Tensor* rstd);
void rms_norm_backward(const Tensor& x, const Tensor& g, const Tensor& w, const Tensor& rstd,
                       const Tensor& dy, Tensor* dx, Tensor* dg, Tensor* dw, Tensor* y);

// ---- rotary.cu: ops::rotary (inverse = false) and ops::rotary_backward (inverse = true), with
// the inverse frequencies of ops::rotary_inverse_frequency (d / 2 of them)
Tensor rotary(const Tensor& x, int64_t offset, const std::vector<float>& inv_freq, bool inverse);

// ---- forget_gate.cu
void forget_gate(const Tensor& x, const Tensor& lb, Tensor* log_f, Tensor* one_minus_f,
                 DType log_f_dtype);
void forget_gate_backward(const Tensor& x, const Tensor& lb, const Tensor& dlog_f,
                          const Tensor& d_one_minus_f, Tensor* dx, Tensor* dlb);

// ---- gla_gate.cu
Tensor gla_gate(const Tensor& x, double normalizer, double floor, DType out);
Tensor gla_gate_backward(const Tensor& g, const Tensor& dg, double normalizer, double floor,
                         DType dx_dtype);

// ---- swiglu.cu (y: the forward's output recomputed, or null)
Tensor swiglu(const Tensor& a, const Tensor& b);
void swiglu_backward(const Tensor& a, const Tensor& b, const Tensor& dy, Tensor* da, Tensor* db,
                     Tensor* y);

// ---- short_conv.cu
Tensor short_conv(const Tensor& x, const Tensor& w, bool silu, const Tensor& cache);
void short_conv_backward(const Tensor& x, const Tensor& w, bool silu, const Tensor& cache,
                         const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* dcache);

// The recurrence kernels (recurrent, chunked, tiled attention): kernels/cuda/recurrence_cuda.h.

}  // namespace hla::cuda
