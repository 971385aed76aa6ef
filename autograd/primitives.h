// The differentiable primitive ops on Vars (their derivative rules: derivatives.cpp).
// Binary ops broadcast (NumPy rules); dims may be negative.
//
//   Var y = sum(mul(x, w), {-1});          // or x * w with the operators below
//   Var z = matmul(x, w.transpose(0, 1));  // [..., M, K] @ [..., K, N]
#pragma once

#include <vector>

#include "autograd/var.h"

namespace hla {

// ---- elementwise
Var add(const Var& a, const Var& b);
Var sub(const Var& a, const Var& b);
Var mul(const Var& a, const Var& b);
Var div(const Var& a, const Var& b);
Var maximum(const Var& a, const Var& b);
Var neg(const Var& x);
Var exp(const Var& x);
Var log(const Var& x);
Var sqrt(const Var& x);
Var rsqrt(const Var& x);
Var sigmoid(const Var& x);
Var tanh(const Var& x);
Var abs(const Var& x);
Var relu(const Var& x);
Var log1p(const Var& x);
// One kernel each, saving only x (the gates and activations of every mixer):
Var silu(const Var& x);        // x sigmoid(x)
Var softplus(const Var& x);    // log(1 + e^x) = max(x, 0) + log1p(e^-|x|)
Var logsigmoid(const Var& x);  // -softplus(-x)
Var pow(const Var& x, double p);
Var add_scalar(const Var& x, double s);
Var mul_scalar(const Var& x, double s);
// cond != 0 ? a : b; cond is a plain tensor (no gradient).
Var where(const Tensor& cond, const Var& a, const Var& b);

Var operator+(const Var& a, const Var& b);
Var operator-(const Var& a, const Var& b);
Var operator*(const Var& a, const Var& b);
Var operator/(const Var& a, const Var& b);
Var operator-(const Var& x);
Var operator+(const Var& a, double s);
Var operator-(const Var& a, double s);
Var operator*(const Var& a, double s);
Var operator*(double s, const Var& a);
Var operator/(const Var& a, double s);

// ---- dtype
// x converted to the floating dtype `dtype` (x itself when it already has it); the backward
// converts the gradient back to x's dtype. Mixed precision casts f32 weights to bf16 where they
// are used, so their gradients arrive in f32.
Var to_dtype(const Var& x, DType dtype);

// ---- matrix product: [..., M, K] @ [..., K, N] -> [..., M, N]
Var matmul(const Var& a, const Var& b);

// ---- reductions
Var sum(const Var& x, const std::vector<int64_t>& dims, bool keepdim = false);
Var sum(const Var& x);  // all elements -> 0-dim
Var mean(const Var& x, const std::vector<int64_t>& dims, bool keepdim = false);
Var mean(const Var& x);
Var max(const Var& x, const std::vector<int64_t>& dims, bool keepdim = false);

// ---- movement (views of the data where possible)
Var reshape(const Var& x, const Shape& shape);
Var permute(const Var& x, const std::vector<int64_t>& dims);
Var transpose(const Var& x, int64_t d0, int64_t d1);
Var slice(const Var& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Var narrow(const Var& x, int64_t dim, int64_t start, int64_t length);
Var select(const Var& x, int64_t dim, int64_t index);
Var expand(const Var& x, const Shape& shape);
Var unsqueeze(const Var& x, int64_t dim);
Var squeeze(const Var& x, int64_t dim);
Var concat(const std::vector<Var>& xs, int64_t dim);
Var stack(const std::vector<Var>& xs, int64_t dim);

// ---- indexing
Var index_select(const Var& x, int64_t dim, const Tensor& index);
Var gather(const Var& x, int64_t dim, const Tensor& index);
// Rows of weight [N, D] for integer ids of any shape -> [ids..., D].
Var embedding(const Var& weight, const Tensor& ids);

}  // namespace hla
