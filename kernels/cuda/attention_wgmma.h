// The bf16 attention forward and the backward's dQ and dK/dV (D = K = V in {64, 128}) on
// Hopper's warpgroup products (attention_wgmma_sm90a.cu), built when the CUDA architectures
// include 90 (HLA_WITH_SM90A); softmax_attention_mma_forward and _backward take them on compute
// capability 9.0 devices. Arguments as theirs, which they check; Dsum [B,H,T] = rowsum(dO o O).
#pragma once

#include "kernels/cuda/recurrence_cuda.h"

namespace hla::cuda {

// Whether the device in use runs sm_90a code (compute capability 9.0: H100, H200).
bool attention_wgmma_runs();
void attention_wgmma_forward(const kernels::AttentionArgs<bf16>& a, const AttentionBf16Out& out);
// dK, dV, then dQ into g.dk, g.dv, g.dq.
void attention_wgmma_backward(const kernels::AttentionArgs<bf16>& a, const AttentionBf16Grad& g,
                              const float* Dsum);

}  // namespace hla::cuda
