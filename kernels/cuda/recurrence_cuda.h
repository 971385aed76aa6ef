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
#include "tensor/dtype.h"

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

// ---- delta rule family (delta_rule_recurrent.cu; delta_rule_chunk.cuh and its three .cu files)
// Recurrent tier: f32, f64. Chunk tier: f32, f64 and bf16 (bf16 inputs and results, f32
// workspaces and accumulation, products on TF32 tensor cores).
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

// ---- softmax attention on tensor cores (attention_mma.cu)
// FlashAttention-2 on bf16 mma.sync with fp32 accumulation, the contract of
// softmax_attention_tiled_* (causal, window, GQA, explicit scale) for bf16 q, k, v, o, dout, dq,
// dk, dv (hla::bf16: the bits of __nv_bfloat16) and an f32 lse [B,H,T]. Head sizes: K == V, either
// 64 or 128; other sizes throw hla::Error (the f32 tiled kernels take them). Every pointer is
// 16-byte aligned (rows are loaded as 8 bf16 at a time). The backward is deterministic.
struct AttentionBf16Out {
  bf16* o = nullptr;     // [B,T,H,V]
  float* lse = nullptr;  // [B,H,T], or null
};
struct AttentionBf16Grad {
  const bf16* dout = nullptr;  // [B,T,H,V]
  const bf16* o = nullptr;     // forward output [B,T,H,V]
  const float* lse = nullptr;  // forward lse [B,H,T]
  bf16* dq = nullptr;          // [B,T,H,K]
  bf16* dk = nullptr;          // [B,T,Hkv,K]
  bf16* dv = nullptr;          // [B,T,Hkv,V]
};
// Whether the tensor-core kernels take these head sizes (K == V in {64, 128}).
bool softmax_attention_mma_supports(const kernels::AttnDims& d);
// The products of the forward and the backward: Auto takes Hopper's warpgroup products (wgmma,
// attention_wgmma.h) where the build and the device have them, unless
// the environment sets HLA_ATTENTION_MMA=sync; Sync always takes mma.sync. Both compute the
// same function.
enum class AttentionMma { Auto, Sync };
// Whether Auto takes the warpgroup products here: the build has them (its CUDA architectures
// include 90) and the device in use has compute capability 9.0.
bool softmax_attention_wgmma_available();
void softmax_attention_mma_forward(const kernels::AttentionArgs<bf16>& a,
                                   const AttentionBf16Out& out,
                                   AttentionMma mma = AttentionMma::Auto);
void softmax_attention_mma_backward(const kernels::AttentionArgs<bf16>& a,
                                    const AttentionBf16Grad& grad,
                                    AttentionMma mma = AttentionMma::Auto);

// ---- gated linear family on tensor cores (gated_linear_mma.cu)
// The chunked tier (chunk 64) of gated_linear_chunk_* on bf16 mma.sync with fp32 accumulation,
// fp32 recurrent state and fp32 chunk-local cumulative decays, for every GateKind. Mixed
// precision: q, k, v, o, dout, dq, dk, dv are bf16 (hla::bf16: the bits of __nv_bfloat16); the
// gates g / gk, dg, h0, hT, dhT and dh0 are f32. Head sizes: K 64 or 128, V 64, 128 or 256; others
// throw hla::Error (the f32 chunk kernel takes them). Same layouts and contracts as
// kernels/recurrence.h.
struct GatedLinearBf16Args {
  kernels::RecDims d;
  kernels::GateKind gate = kernels::GateKind::PerKey;
  const bf16* q = nullptr;    // [B,T,H,K]
  const bf16* k = nullptr;    // [B,T,H,K]
  const bf16* v = nullptr;    // [B,T,H,V]
  const float* g = nullptr;   // PerKey: [B,T,H,K]; ScalarPerHead: [B,T,H]; otherwise null
  const float* h0 = nullptr;  // [B,H,K,V] or null
  double scale = 1.0;
};
struct GatedLinearBf16Out {
  bf16* o = nullptr;    // [B,T,H,V]
  float* hT = nullptr;  // [B,H,K,V] or null
  // PerKey gates: the chunks' scores A (gated_linear_mma_scores_numel bf16), kept for the
  // backward so that it need not compute them again; or null. Other gates leave it untouched.
  bf16* scores = nullptr;
};
struct GatedLinearBf16Grad {
  const bf16* dout = nullptr;  // [B,T,H,V]
  const float* dhT = nullptr;  // [B,H,K,V] or null
  bf16* dq = nullptr;          // [B,T,H,K]
  bf16* dk = nullptr;          // [B,T,H,K]
  bf16* dv = nullptr;          // [B,T,H,V]
  float* dg = nullptr;         // layout of g; null for None / FixedPerHead
  float* dh0 = nullptr;        // [B,H,K,V] or null
  const bf16* scores = nullptr;  // PerKey: the forward's GatedLinearBf16Out::scores, or null
};
// The elements of GatedLinearBf16Out::scores: a 64 x 64 score matrix a chunk of 64 steps.
inline int64_t gated_linear_mma_scores_numel(const kernels::RecDims& d) {
  return d.B * d.H * ((d.T + kernels::kChunk - 1) / kernels::kChunk) * kernels::kChunk *
         kernels::kChunk;
}
// Whether the tensor-core kernels take these head sizes (K 64 or 128, V 64, 128 or 256).
inline bool gated_linear_mma_supports(int64_t K, int64_t V) {
  return (K == 64 || K == 128) && (V == 64 || V == 128 || V == 256);
}
void gated_linear_mma_forward(const GatedLinearBf16Args& a, const GatedLinearBf16Out& out);
void gated_linear_mma_backward(const GatedLinearBf16Args& a, const GatedLinearBf16Grad& grad);

// ---- HGRN in bf16 (hgrn_scan.cu)
// hgrn_recurrent_* and hgrn_chunk_* (same tiers, chunk rule, layouts and contracts) with bf16
// storage: x, g, o, dout, dx, dg are bf16 (hla::bf16: the bits of __nv_bfloat16), read as float;
// the state, every exp, product and carry, and the per-chunk buffers are fp32, and the states
// h0, hT, dhT, dh0 stay f32 (a state carried across calls is never rounded). The kernels are the
// f32 ones with bf16 loads and stores: o and dx are the f32 results rounded once; dg is computed
// from the rounded dx, then rounded. Half the bytes of f32. Any B, T, D > 0.
struct HgrnBf16Args {
  kernels::HgrnDims d;
  const bf16* x = nullptr;    // [B,T,D]
  const bf16* g = nullptr;    // [B,T,D] log forget gate
  const float* h0 = nullptr;  // [B,D] or null
};
struct HgrnBf16Out {
  bf16* o = nullptr;    // [B,T,D]
  float* hT = nullptr;  // [B,D] or null
};
struct HgrnBf16Grad {
  const bf16* dout = nullptr;  // [B,T,D]
  const float* dhT = nullptr;  // [B,D] or null
  bf16* dx = nullptr;          // [B,T,D]
  bf16* dg = nullptr;          // [B,T,D]
  float* dh0 = nullptr;        // [B,D] or null
  const bf16* o = nullptr;     // [B,T,D] the forward's output, optional (as kernels::HgrnGrad)
};
void hgrn_recurrent_forward_bf16(const HgrnBf16Args& a, const HgrnBf16Out& out);
void hgrn_recurrent_backward_bf16(const HgrnBf16Args& a, const HgrnBf16Grad& grad);
void hgrn_chunk_forward_bf16(const HgrnBf16Args& a, const HgrnBf16Out& out);
void hgrn_chunk_backward_bf16(const HgrnBf16Args& a, const HgrnBf16Grad& grad);

}  // namespace hla::cuda
