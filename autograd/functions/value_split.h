// The delta rules' value split: a head's recurrence run as s independent slices of its values.
//
// The state's value columns evolve independently: column j of S [K,V] follows
//   s_j <- (I - beta_t k_t k_t^T) exp(g_t) s_j + beta_t k_t v_tj,   o_tj = s_j^T (scale q_t),
// which reads q, k, beta, g in full but only column j of v. So a head with V values is s heads
// of V/s values that share q, k, beta and g: the kernels run on H*s heads. The CUDA recurrent
// tier runs a thread block per (b, h), so this is how few, wide heads (Gated DeltaNet's 340M
// layout: B*H = 32 blocks for 132 SMs) fill the GPU there. The gradients of the shared inputs
// are sums over the slices.
//
// Layouts, head h's slice j becoming head h*s + j (V' = V/s):
//   q, k [B,T,H,K] -> [B,T,H*s,K]   repeated                  (split_heads)
//   beta, g [B,T,H] -> [B,T,H*s]    repeated                  (split_heads)
//   v, o [B,T,H,V] = [B,T,H*s,V']   the same memory           (no copy)
//   h0, hT [B,H,K,V] <-> [B,H*s,K,V']  permuted               (split_state / merge_state)
//   dq, dk [B,T,H*s,K] -> [B,T,H,K], dbeta, dg [B,T,H*s] -> [B,T,H]  summed over j  (merge_heads)
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace hla::detail {

// The slice count for a call: `requested` when > 0 (it must divide V: hla::Error otherwise);
// 0 picks one: for the recurrent tier on CUDA (one thread block per head) the largest power of
// two s with B*H*s blocks in one wave of the GPU's multiprocessors and slices of at least 16
// values that divide V; otherwise 1: the CPU's few cores are kept busy by B*H heads, and the
// CUDA chunk kernels already run one block per (head, chunk) and split the state walk by value
// columns themselves, so slices would only repeat their work on q and k.
int64_t value_split(int64_t requested, Device device, bool recurrent, int64_t B, int64_t H,
                    int64_t V, const char* op);

// x [B,T,H,...] -> [B,T,H*s,...], each head repeated s times in a row (contiguous copy).
Tensor split_heads(const Tensor& x, int64_t s);
// x [B,T,H*s,...] -> [B,T,H,...], the sum of each head's s rows.
Tensor merge_heads(const Tensor& x, int64_t s);
// h [B,H,K,V] -> [B,H*s,K,V/s] (contiguous copy).
Tensor split_state(const Tensor& h, int64_t s);
// h [B,H*s,K,V'] -> [B,H,K,s*V'] (contiguous copy).
Tensor merge_state(const Tensor& h, int64_t s);

}  // namespace hla::detail
