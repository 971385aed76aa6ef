// defines: grad_norm, clip_coefficient and clip_grad_norm, global-norm gradient clipping
// (Pascanu et al. 2013; PyTorch's torch.nn.utils.clip_grad_norm_).
//
// Over every parameter gradient g_i (undefined gradients count as zero):
//
//   n = sqrt( sum_i ||g_i||^2 )                 (accumulated in double)
//   c = max_norm / (n + 1e-6) if n > max_norm, else 1   (clip_coefficient; 1 for a non-finite n)
//   g_i <- c g_i                                (clip_grad_norm)
//
// The trainer hands c to the optimizer instead (Optimizer::step(lr, c): each gradient is read
// times c inside the update), which spares a pass that reads and writes every gradient.
//
// Gradients are values (autograd/var.h): clipping replaces each with a scaled copy through
// set_grad, never writing into the old tensor. The norm before clipping is returned, so a
// non-finite result tells the caller the step is bad; then nothing is scaled.
//
// CUDA parameters: the sum of squares runs on the GPU (kernels/cuda/optim_cuda.h: deterministic,
// double accumulation) and only the total comes back to the host; the scaling is a GPU
// mul_scalar. All parameters must live on one device (hla::Error otherwise). Gradients may be
// f32, f64 or bf16 (pure bf16 training): each square is formed and summed in double on either
// device; the scaling runs in the gradient's dtype (bf16: on CUDA, rounded once per element).
//
//   double norm = clip_grad_norm(model.parameters(), 1.0);
#pragma once

#include <vector>

#include "autograd/var.h"

namespace hla::optim {

// The global L2 norm of the gradients of `params`.
double grad_norm(const std::vector<Var>& params);
// c above for a norm n and max_norm (> 0; hla::Error otherwise).
double clip_coefficient(double norm, double max_norm);
// Scales the gradients so their global norm is at most max_norm (> 0); returns the norm before.
double clip_grad_norm(const std::vector<Var>& params, double max_norm);

}  // namespace hla::optim
