// Fused differentiable ops: one kernel forward, one kernel backward, each a Function node whose
// forward and backward sit together in autograd/functions/<op>.cpp.
#pragma once

#include <vector>

#include "autograd/var.h"

namespace hla {

constexpr int64_t kIgnoreIndex = -100;  // targets equal to this take no loss (PyTorch, fla)

// softmax / log_softmax over the last dimension.
Var softmax(const Var& x);
Var log_softmax(const Var& x);

// Mean cross-entropy of logits [N, C] against integer targets [N]; rows with target ==
// ignore_index are skipped. Returns a 0-dim Var.
Var cross_entropy(const Var& logits, const Tensor& targets, int64_t ignore_index = kIgnoreIndex);

// cross_entropy(matmul(x, W^T), targets) for x [N, F] and a head's weight W [V, F] without the
// [N, V] logits: rows in chunks of `chunk_rows` (0: about 2^26 logits a chunk), each chunk's
// gradients formed in the forward (the node keeps dx and dW, not x, W or the logits). A W of
// another dtype (the f32 master weight under bf16 compute) is cast to x's dtype for the
// products; dW is summed over the chunks in f32 (f64 for f64) and returned in W's dtype.
// Returns a 0-dim Var.
Var linear_cross_entropy(const Var& x, const Var& W, const Tensor& targets,
                         int64_t ignore_index = kIgnoreIndex, int64_t chunk_rows = 0);

// x W^T over x's last dimension for x [..., F], W [O, F]: [..., O]. Values as
// matmul(x, transpose(to_dtype(W, x.dtype()))): a W of another dtype (an f32 master weight under
// bf16 compute) is cast inside, in the forward and again in the backward, so no cast copy of W
// is held between the passes. Its gradient arrives in W's dtype; an f32 W's is summed in f32 by
// the product (not rounded to bf16 first, as to_dtype's backward would). The projections below
// (rms_norm_linear, swiglu_linear and their kin) take their W_i the same way.
Var linear(const Var& x, const Var& W);

// RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) * w, w [D].
Var rms_norm(const Var& x, const Var& w, double eps);
// Gated RMSNorm: RMSNorm(x) * w * silu(g), g shaped like x.
Var gated_rms_norm(const Var& x, const Var& g, const Var& w, double eps);
// A linear map W [O, F] of rms_norm(x, w) / gated_rms_norm(x, g, w) merged over x's trailing
// dims that hold F elements (x [B,T,H,D] with F = H*D: the per-head norm, then an output
// projection): [..., O]. Values and gradients as matmul(reshape(norm(...)), W^T), but the node
// keeps x, [g], w and W only and recomputes the normed rows in the backward.
Var rms_norm_linear(const Var& x, const Var& w, double eps, const Var& W);
Var gated_rms_norm_linear(const Var& x, const Var& g, const Var& w, double eps, const Var& W);
// Several projections W_i [O_i, F] of one rms_norm(x, w): {y_1 .. y_k}, each [..., O_i], as
// rms_norm_linear (the normed rows recomputed once in the backward; their gradient is the sum
// over the projections).
std::vector<Var> rms_norm_linears(const Var& x, const Var& w, double eps,
                                  const std::vector<Var>& Ws);

// Rotary position embedding of x [B,T,H,d] at positions offset + t (kernels/ops.h: ops::rotary).
Var rotary(const Var& x, int64_t offset, double base);

// The HGRN / HGRN2 forget gate (kernels/ops.h: ops::forget_gate): {log f, 1 - f} with
// f = lb + (1 - lb) sigmoid(x), lb [D] or undefined (0); 1 - f in x's dtype, log f in
// `log_f_dtype` (x's, or f32 for bf16 x). The node keeps x and lb only.
std::vector<Var> forget_gate(const Var& x, const Var& lb, DType log_f_dtype);
inline std::vector<Var> forget_gate(const Var& x, const Var& lb) {
  return forget_gate(x, lb, x.dtype());
}

// GLA's log decay max(logsigmoid(x) / normalizer, floor) (kernels/ops.h: ops::gla_gate), in
// `out`: x's dtype, or f32 for bf16 x (the mixed-precision models' gates). The node keeps the
// output's values only (its backward reads g, not x).
Var gla_gate(const Var& x, double normalizer, double floor, DType out);
inline Var gla_gate(const Var& x, double normalizer, double floor) {
  return gla_gate(x, normalizer, floor, x.dtype());
}

// SwiGLU: silu(a) * b.
Var swiglu(const Var& a, const Var& b);
// swiglu(a, b) w^T for a, b [..., I] and w [O, I] (a Linear's weight): [..., O]. Values and
// gradients as matmul(swiglu(a, b), w^T), but the node keeps a, b and w only and recomputes
// swiglu(a, b) in the backward, so the [..., I] product is not held between the passes.
Var swiglu_linear(const Var& a, const Var& b, const Var& w);

// Causal depthwise conv over time, x [B,T,D], w [D,W] (w[:, W-1] multiplies the current token),
// optional silu after the conv. `cache` [B,D,W-1] holds the inputs before t=0 (oldest first;
// undefined = zeros); its gradient flows if it requires grad.
Var short_conv(const Var& x, const Var& w, bool silu, const Var& cache = Var());

}  // namespace hla
