// The bf16 attention forward on Hopper's warpgroup products (attention_wgmma_sm90a.cu), built
// when the CUDA architectures include 90 (HLA_WITH_SM90A); softmax_attention_mma_forward takes
// it on compute capability 9.0 devices. Arguments as softmax_attention_mma_forward, which
// checks them.
#pragma once

#include "kernels/cuda/recurrence_cuda.h"

namespace hla::cuda {

// Whether the device in use runs sm_90a code (compute capability 9.0: H100, H200).
bool attention_wgmma_runs();
void attention_wgmma_forward(const kernels::AttentionArgs<bf16>& a, const AttentionBf16Out& out);

}  // namespace hla::cuda
