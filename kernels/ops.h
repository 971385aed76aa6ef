// Tensor-level kernels: the arithmetic of every primitive and fused op, one function per op, no
// graph knowledge (autograd/ builds on these). Inputs may be any strided view; outputs are fresh
// contiguous tensors. CPU computes in f32 and f64; a tensor on a device without an
// implementation throws "no CUDA implementation for <op>" (never a silent fallback).
//
// Broadcasting follows NumPy. Dimensions may be negative (counted from the end).
#pragma once

#include <vector>

#include "tensor/tensor.h"

namespace hla::ops {

// ---- elementwise, unary
// clang-format off
enum class Unary {
  Neg, Exp, Log, Sqrt, Rsqrt, Sigmoid, Tanh, Abs, Relu, Log1p, Step /* x > 0 ? 1 : 0 */,
  Sign, Square, Reciprocal, Sin, Cos,
  Silu /* x sigmoid(x) */, Softplus /* log(1 + e^x) */, LogSigmoid /* -softplus(-x) */
};
// clang-format on
Tensor unary(Unary op, const Tensor& x);
Tensor pow_scalar(const Tensor& x, double p);
Tensor add_scalar(const Tensor& x, double s);
Tensor mul_scalar(const Tensor& x, double s);

// ---- elementwise, binary (broadcasting)
enum class Binary {
  Add, Sub, Mul, Div, Maximum, Minimum, Eq /* 1 where equal */, Gt, Ge,
  SiluBackward /* b silu'(a) = b s (1 + a (1 - s)), s = sigmoid(a): silu's backward, g = b */
};
Tensor binary(Binary op, const Tensor& a, const Tensor& b);
// out = cond != 0 ? a : b (all three broadcast).
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// a += b in place (b broadcasts to a's shape); a must be contiguous.
void add_(Tensor& a, const Tensor& b);

// ---- reductions
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor max(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor sum_all(const Tensor& x);  // 0-dim
// Sums the broadcast dimensions of x away so the result has `shape` (the backward of expand).
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- matrix products: [..., M, K] @ [..., K, N] -> [..., M, N], batch dims broadcast.
// Transposed views (last two dims swapped) are read in place, without a copy.
Tensor matmul(const Tensor& a, const Tensor& b);
// The same product returned in `out`: a's dtype, or f32 for bf16 a, b (CUDA), whose products are
// then summed in f32 and never rounded to bf16 (an f32 weight's gradient under bf16 compute).
Tensor matmul(const Tensor& a, const Tensor& b, DType out);
// c += a @ b for 2-D a [M, K], b [K, N] and a contiguous c [M, N] in f32 (a, b f32, or bf16 on
// CUDA: the products summed in f32 straight into c), f64 (a, b f64) or bf16 (CUDA, a, b bf16:
// a @ b + c summed in f32 and rounded once).
void matmul_acc(Tensor& c, const Tensor& a, const Tensor& b);
// matmul_acc's shape checks on either device (c [M, N] += a [M, K] @ b [K, N], c contiguous).
inline void check_matmul_acc(const Tensor& c, const Tensor& a, const Tensor& b, const char* op) {
  check_rank(a, 2, op, "a", "[M, K]");
  check_rank(b, 2, op, "b", "[K, N]");
  check_rank(c, 2, op, "c", "[M, N]");
  if (b.size(0) != a.size(1) || c.size(0) != a.size(0) || c.size(1) != b.size(1))
    throw Error(op, "c [M, N] += a [M, K] @ b [K, N]",
                to_string(c.shape()) + " += " + to_string(a.shape()) + " @ " +
                    to_string(b.shape()));
  if (!c.is_contiguous()) throw Error(op, "a contiguous c", "a strided view");
}

// ---- movement and indexing
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
// Rows of x along `dim` picked by a 1-D index tensor (i32/i64).
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// zeros(shape) with src added at the rows `index` along `dim` (the backward of index_select);
// sequential, hence deterministic.
Tensor index_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src);
// out[i][j] = x[i][index[i][j]] along `dim` (torch.gather); index has x's rank.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
Tensor scatter_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src);
// Places src into zeros(shape) at the slice [start:end:step] of `dim` (the backward of slice).
Tensor slice_backward(const Tensor& src, const Shape& shape, int64_t dim, int64_t start,
                      int64_t step);

// ---- fused (each has its backward here too; autograd/functions/ wires them)
// softmax / log_softmax over the last dimension.
Tensor softmax(const Tensor& x);
Tensor softmax_backward(const Tensor& y, const Tensor& dy);  // dx = y * (dy - sum(dy*y))
Tensor log_softmax(const Tensor& x);
Tensor log_softmax_backward(const Tensor& y, const Tensor& dy);  // dx = dy - exp(y) sum(dy)

// Cross-entropy of logits [N, C] against targets [N] (i32/i64); rows whose target equals
// ignore_index take no loss. Returns the mean over counted rows (0 if none) and writes each
// row's log-sum-exp into lse [N] for the backward. Never materialises the softmax.
// counted < 0: the targets are read on the host, checked to lie in [0, C) or be ignore_index,
// and counted (a sync on the GPU). counted >= 0: the caller has checked them (hla::check_targets,
// tensor/tensor.h) and `counted` rows are not ignored; the GPU then reads no targets on the host.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     Tensor* lse, int64_t counted = -1);
Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                              const Tensor& lse, double dloss, int64_t counted = -1);

// RMSNorm over the last dim D: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps); w [D].
// The backwards (and swiglu_backward's) take an optional y: the forward's output recomputed by
// the same pass, bit for bit, for a node that recomputes it rather than keeping it (the inputs
// are read once for both).
Tensor rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor* rstd);
void rms_norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                       Tensor* dx, Tensor* dw, Tensor* y = nullptr);
// Gated RMSNorm: y = RMSNorm(x) * w * silu(g); g has x's shape.
Tensor gated_rms_norm(const Tensor& x, const Tensor& g, const Tensor& w, double eps,
                      Tensor* rstd);
void gated_rms_norm_backward(const Tensor& x, const Tensor& g, const Tensor& w,
                             const Tensor& rstd, const Tensor& dy, Tensor* dx, Tensor* dg,
                             Tensor* dw, Tensor* y = nullptr);

// Rotary position embedding of x [B,T,H,d] (d even, half = d / 2) at positions offset + t:
//   y[..., i] = x1 cos - x2 sin,  y[..., half + i] = x2 cos + x1 sin  (x1 = x[..., i],
//   x2 = x[..., half + i], angle (offset + t) * rotary_inverse_frequency(i, d, base)); computed
// in float for bf16 / f32 (f64 in f64), each output rounded once. The backward is the rotation
// by the negative angle.
Tensor rotary(const Tensor& x, int64_t offset, double base);
Tensor rotary_backward(const Tensor& dy, int64_t offset, double base);
// base^(-2i/d) in float, as HF / fla compute the inverse frequencies.
float rotary_inverse_frequency(int64_t i, int64_t d, double base);

// The HGRN / HGRN2 forget gate of logits x [..., D] with a lower bound lb [D] (undefined: 0):
//   f = lb + (1 - lb) sigmoid(x),  log_f = log f (logsigmoid(x) where lb = 0),
//   one_minus_f = (1 - lb) sigmoid(-x);  one_minus_f in x's dtype, log_f in `log_f_dtype` (x's, or
// f32 for bf16 x: the gates' dtype under mixed precision); computed in float for bf16.
// The backward takes the gradients of log_f and one_minus_f (either may be undefined; each in
// its output's dtype) and gives dx and dlb (summed over the leading dims, in lb's dtype; left
// alone when lb is undefined).
void forget_gate(const Tensor& x, const Tensor& lb, Tensor* log_f, Tensor* one_minus_f,
                 DType log_f_dtype);
inline void forget_gate(const Tensor& x, const Tensor& lb, Tensor* log_f, Tensor* one_minus_f) {
  forget_gate(x, lb, log_f, one_minus_f, x.dtype());
}
void forget_gate_backward(const Tensor& x, const Tensor& lb, const Tensor& dlog_f,
                          const Tensor& d_one_minus_f, Tensor* dx, Tensor* dlb);

// GLA's log decay of gate logits x: g = max(logsigmoid(x) / normalizer, floor) (floor -inf: no
// clamp). The backward reads the output g, not x: sigmoid(-x) = 1 - exp(logsigmoid(x)), so
// dx = dg (-expm1(normalizer g)) / normalizer where g is above the floor (as stored in g's
// dtype), 0 where clamped; expm1 keeps g's relative precision where g is near 0. Computed in
// float for bf16. g takes `out` (x's dtype, or f32 for bf16 x: the gates' dtype under mixed
// precision, nn::gate_dtype) and dx `dx_dtype` (g's, or bf16 for an f32 g); dg has g's dtype.
Tensor gla_gate(const Tensor& x, double normalizer, double floor, DType out);
Tensor gla_gate_backward(const Tensor& g, const Tensor& dg, double normalizer, double floor,
                         DType dx_dtype);
inline Tensor gla_gate(const Tensor& x, double normalizer, double floor) {
  return gla_gate(x, normalizer, floor, x.dtype());
}
inline Tensor gla_gate_backward(const Tensor& g, const Tensor& dg, double normalizer,
                                double floor) {
  return gla_gate_backward(g, dg, normalizer, floor, g.dtype());
}

// SwiGLU: y = silu(a) * b (the backward's optional y: as rms_norm_backward's).
Tensor swiglu(const Tensor& a, const Tensor& b);
void swiglu_backward(const Tensor& a, const Tensor& b, const Tensor& dy, Tensor* da, Tensor* db,
                     Tensor* y = nullptr);

// Causal depthwise conv over time: x [B,T,D], w [D,W];
//   y[b,t,c] = act(sum_j w[c,j] * x[b, t-(W-1)+j, c]), x at negative t read from `cache`
//   [B,D,W-1] (the last W-1 inputs, oldest first) or zero when cache is undefined.
Tensor short_conv(const Tensor& x, const Tensor& w, bool silu, const Tensor& cache);
void short_conv_backward(const Tensor& x, const Tensor& w, bool silu, const Tensor& cache,
                         const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* dcache);

// ---- shared helpers
// Throws "no <device> implementation for <op>" unless t is on the CPU.
void require_cpu(const Tensor& t, const char* op);

}  // namespace hla::ops
