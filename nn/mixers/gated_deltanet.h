// Gated DeltaNet: Gated Delta Networks: Improving Mamba2 with Delta Rule
// https://arxiv.org/abs/2412.06464  (fla/layers/gated_deltanet.py GatedDeltaNet;
// spec/recurrences.md 6)
//
//   q = silu(conv_q(q_proj x)),  k = silu(conv_k(k_proj x)),  v = silu(conv_v(v_proj x))
//   q, k <- L2-normalised per head inside the op (eps 1e-6 inside the sqrt)
//   g_t = -exp(A_log) * softplus(a_proj(x_t) + dt_bias)     (Mamba2-style log decay, <= 0)
//   beta_t = sigmoid(b_proj(x_t))                            (x2 with allow_neg_eigval)
//   GVA: HV = num_v_heads value heads; value head j reads q/k head floor(j / (HV / H))
//   per value head:  S' = exp(g_t) S_{t-1}                   (decay first)
//              S_t = S' + beta_t k_t (v_t - S'^T k_t)^T,   o_t = S_t^T (q_t / sqrt(d_k))
//   y = o_proj( concat_j RMSNorm_{d_v}(o^j) * w * silu(g_proj(x)^j) )   (plain norm without gate)
//
// d_k = head_dim, d_v = head_dim * expand_v, key_dim = H d_k, value_dim = HV d_v (HV = H without
// GVA). Shapes: x [B,T,d]; q, k [B,T,H,d_k] (repeated to HV heads); v [B,T,HV,d_v]; g, beta
// [B,T,HV]; state [B,HV,d_k,d_v]. Parameters (d = 1024 with the literal defaults H = HV = 6,
// head_dim 256, expand_v 2: 12,620,300): q_proj, k_proj [H d_k,1024] = [1536,1024]; v_proj,
// g_proj [HV d_v,1024] = [3072,1024]; a_proj, b_proj [HV,1024]; A_log, dt_bias [HV];
// q/k_conv1d [H d_k,1,4]; v_conv1d [HV d_v,1,4]; o_norm.weight [d_v] = [512]; o_proj
// [1024,HV d_v].
// Inits: A_log = log U(0,16); dt_bias = softplus^-1(dt), dt = exp(U(log 1e-3, log 1e-1)) >= 1e-4.
// A_log and dt_bias take no weight decay in fla (_no_weight_decay).
#pragma once

#include <memory>

#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/norm.h"

namespace hla::nn {

struct GatedDeltaNetOptions {
  int64_t hidden_size = 2048;
  int64_t head_dim = 256;
  int64_t num_heads = 6;
  int64_t num_v_heads = 0;  // 0: num_heads (no GVA); else a multiple of num_heads
  double expand_v = 2.0;
  bool use_gate = true;
  bool use_short_conv = true;
  int64_t conv_size = 4;
  bool allow_neg_eigval = false;
  double norm_eps = 1e-5;
  double initializer_range = 0.02;
};

class GatedDeltaNet : public Mixer {
 public:
  GatedDeltaNet(const GatedDeltaNetOptions& opt, Generator& gen);

  GatedDeltaNetOptions opt;
  int64_t key_dim, value_dim;
  int64_t num_v_heads;  // HV
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, a_proj, b_proj, g_proj, o_proj;
  Var A_log, dt_bias;  // [HV]
  std::shared_ptr<ShortConvolution> q_conv1d, k_conv1d, v_conv1d;
  std::shared_ptr<GatedRMSNorm> o_norm_gated;  // registered as o_norm with use_gate
  std::shared_ptr<RMSNorm> o_norm;

 protected:
  Var mix(const MixerInput& in, MixerState* state, const Var& lower_bound) override;
};

}  // namespace hla::nn
