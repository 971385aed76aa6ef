// The recurrence ops on Vars: each a Function node over the three kernel tiers of
// kernels/recurrence.h, with gradients for every input (h0 included) and from the final state.
//
// Layouts: q, k [B,T,H,K]; v [B,T,H,V]; per-key gate gk [B,T,H,K]; per-head gate g and beta
// [B,T,H]; states h0 / hT [B,H,K,V]; hgrn: x, g [B,T,D], states [B,D]. Gates are natural-log
// decays (g <= 0). The read-out scale multiplies q; 0 means the default K^-1/2.
// dtypes: f32 and f64 on both devices; bf16 on CUDA (states and accumulations in f32; the
// gated linear family at K, V in {64, 128} and the delta rules read bf16 on tensor cores, the
// rest run the f32 kernels on f32 copies), o, hT and each input's gradient returned in its
// input's dtype. The gates of gla and simple_gla may be f32 beside bf16 q, k, v (the
// mixed-precision models' gates), the rest take q's dtype.
//
//   auto [o, hT] = gla(q, k, v, gk);                       // chunked for T > 64
//   auto r = gla(q, k, v, gk, h0, {.impl = Impl::Recurrent});
//   Var o2 = gla(q2, k2, v2, gk2, r.hT).o;                 // continue from the carried state
#pragma once

#include "autograd/var.h"

namespace hla {

enum class Impl {
  Auto,       // what the layers use (as fla does): recurrent for T <= 64, chunk otherwise
  Reference,  // the double-precision per-step loops (any input dtype; computed in f64)
  Recurrent,  // Eigen step-by-step
  Chunk,      // Eigen chunked (chunk 64); for hgrn the chunked parallel scan
};
const char* impl_name(Impl impl);
Impl parse_impl(const std::string& name);  // "auto" | "reference" | "recurrent" | "chunk"

struct RecurrenceOptions {
  Impl impl = Impl::Auto;
  double scale = 0.0;      // 0: K^-1/2
  bool l2norm_qk = false;  // delta rules: L2-normalise q and k per head inside the op
  // Delta rules: run each head as this many independent slices of its values (dividing V), so
  // that few wide heads fill the GPU in the recurrent tier; 0 lets the op choose (slices for the
  // CUDA recurrent tier only; autograd/functions/value_split.h).
  int64_t value_split = 0;
};

struct RecurrenceResult {
  Var o;   // [B,T,H,V] ([B,T,D] for hgrn)
  Var hT;  // [B,H,K,V] ([B,D] for hgrn)
};

// GLA / HGRN2: S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t).
RecurrenceResult gla(const Var& q, const Var& k, const Var& v, const Var& gk, const Var& h0 = {},
                     const RecurrenceOptions& opt = {});
// Simple GLA: one scalar log decay per head and step, g [B,T,H].
RecurrenceResult simple_gla(const Var& q, const Var& k, const Var& v, const Var& g,
                            const Var& h0 = {}, const RecurrenceOptions& opt = {});
// RetNet retention: fixed decay gamma_h = 1 - 2^(-5-h) per head.
RecurrenceResult retention(const Var& q, const Var& k, const Var& v, const Var& h0 = {},
                           const RecurrenceOptions& opt = {});
// DeltaNet: S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T.
RecurrenceResult delta_rule(const Var& q, const Var& k, const Var& v, const Var& beta,
                            const Var& h0 = {}, const RecurrenceOptions& opt = {});
// Gated DeltaNet: the delta rule on S' = exp(g_t) S_{t-1}.
RecurrenceResult gated_delta_rule(const Var& q, const Var& k, const Var& v, const Var& g,
                                  const Var& beta, const Var& h0 = {},
                                  const RecurrenceOptions& opt = {});
// HGRN: h_t = exp(g_t) * h_{t-1} + x_t (elementwise), o_t = h_t.
RecurrenceResult hgrn(const Var& x, const Var& g, const Var& h0 = {}, Impl impl = Impl::Auto);

// Softmax attention: q [B,T,H,K], k [B,T,Hkv,K], v [B,T,Hkv,V] -> o [B,T,H,V]. Causal unless
// told otherwise; window > 0 lets each query see at most `window` keys (itself included).
struct AttentionOptions {
  bool causal = true;
  int64_t window = 0;
  double scale = 0.0;      // 0: K^-1/2
  bool reference = false;  // the double-precision reference instead of the tiled kernel
};
Var softmax_attention(const Var& q, const Var& k, const Var& v, const AttentionOptions& opt = {});

}  // namespace hla
