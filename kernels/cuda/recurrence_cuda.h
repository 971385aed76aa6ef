// The recurrence kernels of kernels/recurrence.h on the GPU: same argument structs, same maths,
// same contracts, but every pointer in the structs is a DEVICE pointer (contiguous, the layouts of
// kernels/recurrence.h) and the work is queued on the context's stream. Gradients are
// overwritten, never accumulated. dtypes: f32 and f64 (f64 exists so the tests can check the
// algorithms tightly against the CPU tiers).
//
// Tiers on the GPU:
//   *_recurrent_*  one thread block per (batch, head) [per channel block for hgrn], walking time
//                  step by step: decoding, short sequences, and the check of the chunked forms
//   *_chunk_*      chunk size kernels::kChunk = 64: intra-chunk matrix products in parallel over
//                  chunks, inter-chunk state passing (UT transform for the delta rule); for hgrn a
//                  chunked parallel scan with its own chunk-length rule (hgrn_scan.cu)
//   softmax_attention_tiled_*  flash-style: tiles of queries and keys, online softmax, the [B,H,T]
//                  log-sum-exp kept for the backward, no T x T matrix in memory
//
// Plain C++ (no CUDA headers), so CPU sources can include it.
#pragma once

#include "kernels/recurrence.h"

namespace hla::cuda {

// ---- gated linear family (gated_linear_recurrent.cu, gated_linear_chunk.cu)
template <class S>
void gated_linear_recurrent_forward(const kernels::GatedLinearArgs<S>& a,
                                    const kernels::GatedLinearOut<S>& out);
template <class S>
void gated_linear_recurrent_backward(const kernels::GatedLinearArgs<S>& a,
                                     const kernels::GatedLinearGrad<S>& grad);
template <class S>
void gated_linear_chunk_forward(const kernels::GatedLinearArgs<S>& a,
                                const kernels::GatedLinearOut<S>& out);
template <class S>
void gated_linear_chunk_backward(const kernels::GatedLinearArgs<S>& a,
                                 const kernels::GatedLinearGrad<S>& grad);

// ---- HGRN (hgrn_scan.cu)
template <class S>
void hgrn_recurrent_forward(const kernels::HgrnArgs<S>& a, const kernels::HgrnOut<S>& out);
template <class S>
void hgrn_recurrent_backward(const kernels::HgrnArgs<S>& a, const kernels::HgrnGrad<S>& grad);
template <class S>
void hgrn_chunk_forward(const kernels::HgrnArgs<S>& a, const kernels::HgrnOut<S>& out);
template <class S>
void hgrn_chunk_backward(const kernels::HgrnArgs<S>& a, const kernels::HgrnGrad<S>& grad);

// ---- delta rule family (delta_rule_recurrent.cu, delta_rule_chunk.cu)
template <class S>
void delta_rule_recurrent_forward(const kernels::DeltaRuleArgs<S>& a,
                                  const kernels::DeltaRuleOut<S>& out);
template <class S>
void delta_rule_recurrent_backward(const kernels::DeltaRuleArgs<S>& a,
                                   const kernels::DeltaRuleGrad<S>& grad);
template <class S>
void delta_rule_chunk_forward(const kernels::DeltaRuleArgs<S>& a,
                              const kernels::DeltaRuleOut<S>& out);
template <class S>
void delta_rule_chunk_backward(const kernels::DeltaRuleArgs<S>& a,
                               const kernels::DeltaRuleGrad<S>& grad);

// ---- softmax attention (attention_tiled.cu)
template <class S>
void softmax_attention_tiled_forward(const kernels::AttentionArgs<S>& a,
                                     const kernels::AttentionOut<S>& out);
template <class S>
void softmax_attention_tiled_backward(const kernels::AttentionArgs<S>& a,
                                      const kernels::AttentionGrad<S>& grad);

}  // namespace hla::cuda
