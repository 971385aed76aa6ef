// ProjectedRowsNode: y_i = R W_i^T for rows R [N, F] = f(inputs[0 .. first_w)) that the node does
// not keep. The backward forms dR = sum_i dy_i W_i, hands it to f's own backward, which also
// recomputes R in the same pass (f's inputs read once for both, R bit for bit the forward's),
// then dW_i = (R^T dy_i)^T: the products are the Matmul rule's, so values and gradients equal
// matmul(R, W_i^T) recorded step by step, without holding R between the passes.
// inputs[first_w ..] are the W_i [O_i, F]; output i is y_i [..., O_i].
// A W_i of another dtype than R (an f32 master weight under bf16 compute) is cast to R's dtype
// in the forward and again in the backward, without a cast copy held between the passes: the
// values of matmul(R, to_dtype(W_i)^T). Its gradient returns in W_i's dtype, an f32 W_i's summed
// in f32 by the product itself (ops::matmul into f32), never rounded to bf16.
// Subclasses: linear (linear.cpp), swiglu_linear (swiglu.cpp), rms_norm_linear and its kin
// (rms_norm.cpp).
#pragma once

#include <vector>

#include "autograd/node.h"

namespace hla {

struct ProjectedRowsNode : Node {
  size_t first_w = 0;               // inputs before it feed f, from it on the W_i
  virtual Tensor rows() const = 0;  // R [N, F], recomputed
  // Gradients of inputs[0 .. first_w) into grads[0 .. first_w) from dR [N, F]; with R, also
  // the rows [N, F] recomputed by the same pass into *R.
  virtual void rows_backward(const Tensor& dR, std::vector<Tensor>& grads, Tensor* R) const = 0;
  std::vector<Tensor> backward(const std::vector<Tensor>& gy) final;
};

// The outputs R W_i^T, each shaped lead + [O_i].
std::vector<Tensor> project_rows(const Tensor& R, const std::vector<Var>& Ws, Shape lead);

}  // namespace hla
