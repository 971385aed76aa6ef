// The optimizer kernels on CUDA (optim.cu): a multi-tensor AdamW update and the sum of squares of
// many tensors (the global gradient norm of clipping). optim/adamw.cpp and optim/clip.cpp call
// these when the parameters live on the GPU and the build defines HLA_WITH_CUDA.
//
// adamw_step, for every element j of every slot i (the formula of optim/adamw.h, in double per
// element, in the CPU loop's order with no fused multiply-adds, so the results match the CPU's to
// the last bit or so):
//   m_j <- beta1 * m_j + (1 - beta1) * g_j
//   v_j <- beta2 * v_j + (1 - beta2) * g_j^2
//   p_j <- decay_i * p_j - lr * (m_j / bias1) / (sqrt(v_j / bias2) + eps)
// with decay_i = 1 - lr * weight_decay for decaying parameters, else 1, and the bias corrections
// bias1 = 1 - beta1^t, bias2 = 1 - beta2^t computed on the host in double.
//
// Layout: every tensor contiguous, on CUDA, param/exp_avg/exp_avg_sq/grad of one slot the same
// shape; all slots of one call share a dtype (f32, f64 or bf16). bf16 elements are read as double
// and each stored value is the double result rounded to bf16 once (to nearest, ties to even),
// as the CPU loop does. The slots are cut into chunks of kOptimChunk elements; one launch walks
// all chunks of all slots with a grid-stride loop.
//
// Plain C++ (no CUDA headers), so optim/ sources can include it.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace hla::cuda {

struct AdamWSlot {
  Tensor param;       // updated in place
  Tensor grad;        // read only
  Tensor exp_avg;     // m, updated in place
  Tensor exp_avg_sq;  // v, updated in place
  bool decay = true;  // whether weight decay applies
};

struct AdamWScalars {
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  double bias1 = 1, bias2 = 1;  // 1 - beta1^t, 1 - beta2^t
  double grad_scale = 1;        // every gradient is read times it (clipping)
};

// One AdamW update of every slot (one dtype): one descriptor upload and one kernel launch.
void adamw_step(const std::vector<AdamWSlot>& slots, const AdamWScalars& s);

// sum_i sum_j tensors[i]_j^2, each square formed and accumulated in double in a fixed order
// (deterministic), returned to the host with one device-to-host copy. Tensors: contiguous, on
// CUDA, f32, f64 or bf16 (mixed dtypes are fine).
double sum_of_squares(const std::vector<Tensor>& tensors);

}  // namespace hla::cuda
