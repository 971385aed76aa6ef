// The recurrence kernels: argument structs and the three tiers of every op.
//
// Conventions (spec/recurrences.md section 0; fixed for the whole project):
//   - row-major, contiguous buffers; batch-first layouts
//       q, k  [B,T,H,K]     v, o  [B,T,H,V]     state h0, hT  [B,H,K,V]
//       per-key log gate gk [B,T,H,K]; per-head log gate g and write strength beta [B,T,H]
//   - gates are natural-log decays g <= 0, the decay is alpha = exp(g)
//   - the read-out is o_t = S_t^T (scale * q_t); `scale` is always explicit here (the op layer
//     resolves the default K^-1/2)
//   - a null h0 means a zero initial state; a null hT / dhT / dh0 means "not wanted" / zero
//   - backward functions OVERWRITE their gradient outputs (they never accumulate) and take the
//     forward inputs again: the recurrent and chunked tiers recompute what they need.
//
// Tiers (DESIGN.md):
//   *_reference_*  literal per-time-step loops in double: the executable specification
//   *_recurrent_*  Eigen step-by-step kernels (float, double): what decoding uses
//   *_chunk_*      Eigen chunked kernels, chunk size 64 (any T, partial last chunk), all decay
//                  factors formed as exp(G_i - G_j) in log space, UT/WY transform for the delta
//                  rule
#pragma once

#include <cstdint>

#include "tensor/error.h"

namespace hla::kernels {

constexpr int64_t kChunk = 64;  // chunk size of every chunked linear-attention kernel
// The delta rules' in-kernel L2 norm: x / sqrt(sum x^2 + kL2Eps), eps inside the sqrt and added
// to the sum of squares (spec/recurrences.md 0.5).
constexpr double kL2Eps = 1e-6;

// ---- gated linear family: GLA, HGRN2 (per-key gate), simple GLA (scalar gate per head),
//      RetNet (fixed gamma_h = 1 - 2^(-5-h)), plain linear attention (no gate)
//
//   S_t = diag(alpha_t) S_{t-1} + k_t v_t^T        S in R^{K x V}
//   o_t = S_t^T (scale q_t)

struct RecDims {
  int64_t B = 0, T = 0, H = 0, K = 0, V = 0;
};

// The checks every tier makes of its arguments before it runs: internal errors (HLA_CHECK), since
// the autograd ops have validated the caller's shapes, dtypes and devices; `op` names the tier.
inline void check_rec_dims(const RecDims& d, const char* op) {
  HLA_CHECK(d.B > 0 && d.T > 0 && d.H > 0 && d.K > 0 && d.V > 0,
            op << ": B,T,H,K,V = " << d.B << "," << d.T << "," << d.H << "," << d.K << "," << d.V);
}

enum class GateKind {
  None,           // alpha = 1
  FixedPerHead,   // RetNet: alpha_h = gamma_h = 1 - 2^(-5-h); no gate tensor
  ScalarPerHead,  // simple GLA: g [B,T,H]
  PerKey,         // GLA / HGRN2: gk [B,T,H,K]
};

// log(gamma_h) of RetNet's fixed multi-scale decay for head h.
double retention_log_gamma(int64_t h);

template <class S>
struct GatedLinearArgs {
  RecDims d;
  GateKind gate = GateKind::PerKey;
  const S* q = nullptr;   // [B,T,H,K]
  const S* k = nullptr;   // [B,T,H,K]
  const S* v = nullptr;   // [B,T,H,V]
  const S* g = nullptr;   // PerKey: [B,T,H,K]; ScalarPerHead: [B,T,H]; otherwise null
  const S* h0 = nullptr;  // [B,H,K,V] or null
  double scale = 1.0;
};
template <class S>
void check_rec_args(const GatedLinearArgs<S>& a, const char* op) {
  check_rec_dims(a.d, op);
  HLA_CHECK(a.q && a.k && a.v, op << ": q, k and v are required");
  const bool has_gate = a.gate == GateKind::ScalarPerHead || a.gate == GateKind::PerKey;
  HLA_CHECK(has_gate == (a.g != nullptr),
            op << ": g must be given exactly for ScalarPerHead / PerKey");
}
template <class S>
struct GatedLinearOut {
  S* o = nullptr;   // [B,T,H,V]
  S* hT = nullptr;  // [B,H,K,V] or null
};
template <class S>
struct GatedLinearGrad {
  const S* dout = nullptr;  // [B,T,H,V]
  const S* dhT = nullptr;   // [B,H,K,V] or null
  S* dq = nullptr;          // [B,T,H,K]
  S* dk = nullptr;          // [B,T,H,K]
  S* dv = nullptr;          // [B,T,H,V]
  S* dg = nullptr;          // layout of g; null for None / FixedPerHead
  S* dh0 = nullptr;         // [B,H,K,V] or null
};

void gated_linear_reference_forward(const GatedLinearArgs<double>& a,
                                    const GatedLinearOut<double>& out);
void gated_linear_reference_backward(const GatedLinearArgs<double>& a,
                                     const GatedLinearGrad<double>& grad);
template <class S>
void gated_linear_recurrent_forward(const GatedLinearArgs<S>& a, const GatedLinearOut<S>& out);
template <class S>
void gated_linear_recurrent_backward(const GatedLinearArgs<S>& a, const GatedLinearGrad<S>& grad);
template <class S>
void gated_linear_chunk_forward(const GatedLinearArgs<S>& a, const GatedLinearOut<S>& out);
template <class S>
void gated_linear_chunk_backward(const GatedLinearArgs<S>& a, const GatedLinearGrad<S>& grad);

// ---- HGRN: elementwise (diagonal) recurrence, no heads
//
//   h_t = exp(g_t) * h_{t-1} + x_t        o_t = h_t        (x is the already-gated input)

struct HgrnDims {
  int64_t B = 0, T = 0, D = 0;
};
template <class S>
struct HgrnArgs {
  HgrnDims d;
  const S* x = nullptr;   // [B,T,D]
  const S* g = nullptr;   // [B,T,D] log forget gate
  const S* h0 = nullptr;  // [B,D] or null
};
template <class S>
struct HgrnOut {
  S* o = nullptr;   // [B,T,D]
  S* hT = nullptr;  // [B,D] or null
};
template <class S>
struct HgrnGrad {
  const S* dout = nullptr;  // [B,T,D]
  const S* dhT = nullptr;   // [B,D] or null
  S* dx = nullptr;          // [B,T,D]
  S* dg = nullptr;          // [B,T,D]
  S* dh0 = nullptr;         // [B,D] or null
  const S* o = nullptr;     // [B,T,D] the forward's output or null: the CUDA one-pass chunk
                            // backward reads h_{t-1} from it (other tiers recompute it from x)
};

void hgrn_reference_forward(const HgrnArgs<double>& a, const HgrnOut<double>& out);
void hgrn_reference_backward(const HgrnArgs<double>& a, const HgrnGrad<double>& grad);
template <class S>
void hgrn_recurrent_forward(const HgrnArgs<S>& a, const HgrnOut<S>& out);
template <class S>
void hgrn_recurrent_backward(const HgrnArgs<S>& a, const HgrnGrad<S>& grad);
template <class S>  // chunked parallel scan
void hgrn_chunk_forward(const HgrnArgs<S>& a, const HgrnOut<S>& out);
template <class S>
void hgrn_chunk_backward(const HgrnArgs<S>& a, const HgrnGrad<S>& grad);

// ---- delta rule family: DeltaNet (no gate), Gated DeltaNet (scalar log gate per head)
//
//   S' = alpha_t S_{t-1};  S_t = S' + beta_t k_t (v_t - S'^T k_t)^T;  o_t = S_t^T (scale q_t)

template <class S>
struct DeltaRuleArgs {
  RecDims d;
  const S* q = nullptr;     // [B,T,H,K]
  const S* k = nullptr;     // [B,T,H,K]
  const S* v = nullptr;     // [B,T,H,V]
  const S* beta = nullptr;  // [B,T,H], in (0,2)
  const S* g = nullptr;     // [B,T,H] log decay (Gated DeltaNet) or null (DeltaNet)
  const S* h0 = nullptr;    // [B,H,K,V] or null
  double scale = 1.0;
  // Normalise q and k per head inside the op: x / sqrt(sum x^2 + 1e-6) (spec 0.5); gradients
  // are then with respect to the un-normalised inputs.
  bool l2norm_qk = false;
  // CUDA chunk tier, f32: every product on the TF32 tensor cores (operands rounded to a 10-bit
  // mantissa, f32 accumulation); otherwise f32 FMAs. bf16 storage always multiplies on the bf16
  // tensor cores.
  bool tensor_cores = false;
};
template <class S>
void check_rec_args(const DeltaRuleArgs<S>& a, const char* op) {
  check_rec_dims(a.d, op);
  HLA_CHECK(a.q && a.k && a.v && a.beta, op << ": q, k, v and beta are required");
}
template <class S>
struct DeltaRuleOut {
  S* o = nullptr;   // [B,T,H,V]
  S* hT = nullptr;  // [B,H,K,V] or null
};
template <class S>
struct DeltaRuleGrad {
  const S* dout = nullptr;  // [B,T,H,V]
  const S* dhT = nullptr;   // [B,H,K,V] or null
  S* dq = nullptr;          // [B,T,H,K]
  S* dk = nullptr;          // [B,T,H,K]
  S* dv = nullptr;          // [B,T,H,V]
  S* dbeta = nullptr;       // [B,T,H]
  S* dg = nullptr;          // [B,T,H]; null when g is null
  S* dh0 = nullptr;         // [B,H,K,V] or null
};

void delta_rule_reference_forward(const DeltaRuleArgs<double>& a, const DeltaRuleOut<double>& out);
void delta_rule_reference_backward(const DeltaRuleArgs<double>& a,
                                   const DeltaRuleGrad<double>& grad);
template <class S>
void delta_rule_recurrent_forward(const DeltaRuleArgs<S>& a, const DeltaRuleOut<S>& out);
template <class S>
void delta_rule_recurrent_backward(const DeltaRuleArgs<S>& a, const DeltaRuleGrad<S>& grad);
template <class S>
void delta_rule_chunk_forward(const DeltaRuleArgs<S>& a, const DeltaRuleOut<S>& out);
template <class S>
void delta_rule_chunk_backward(const DeltaRuleArgs<S>& a, const DeltaRuleGrad<S>& grad);

// ---- softmax attention (the full-attention layers of hybrids)
//
//   o_i = sum_j softmax_j(scale q_i . k_j) v_j over allowed j: j <= i if causal, and
//   j >= i - window + 1 if window > 0. GQA: query head h reads kv head h / (H / Hkv).

struct AttnDims {
  int64_t B = 0, T = 0, H = 0, Hkv = 0, K = 0, V = 0;
};
template <class S>
struct AttentionArgs {
  AttnDims d;
  const S* q = nullptr;  // [B,T,H,K]
  const S* k = nullptr;  // [B,T,Hkv,K]
  const S* v = nullptr;  // [B,T,Hkv,V]
  bool causal = true;
  int64_t window = 0;  // 0: no window
  double scale = 1.0;
};
template <class S>
struct AttentionOut {
  S* o = nullptr;    // [B,T,H,V]
  S* lse = nullptr;  // [B,H,T] log-sum-exp of the scaled logits of each query (for backward)
};
template <class S>
struct AttentionGrad {
  const S* dout = nullptr;  // [B,T,H,V]
  const S* o = nullptr;     // forward output [B,T,H,V]
  const S* lse = nullptr;   // forward lse [B,H,T]
  S* dq = nullptr;          // [B,T,H,K]
  S* dk = nullptr;          // [B,T,Hkv,K]
  S* dv = nullptr;          // [B,T,Hkv,V]
};

void softmax_attention_reference_forward(const AttentionArgs<double>& a,
                                         const AttentionOut<double>& out);
void softmax_attention_reference_backward(const AttentionArgs<double>& a,
                                          const AttentionGrad<double>& grad);
// Flash-style: tiles of queries and keys, online softmax, no T x T matrix.
template <class S>
void softmax_attention_tiled_forward(const AttentionArgs<S>& a, const AttentionOut<S>& out);
template <class S>
void softmax_attention_tiled_backward(const AttentionArgs<S>& a, const AttentionGrad<S>& grad);

}  // namespace hla::kernels
