// DeltaNet: Parallelizing Linear Transformers with the Delta Rule over Sequence Length
// https://arxiv.org/abs/2406.06484  (fla/layers/delta_net.py DeltaNet; spec/recurrences.md 5)
//
//   q = act(conv_q(q_proj x)),  k = act(conv_k(k_proj x)),  v = silu(conv_v(v_proj x))
//       (without short convs: act of the projections, silu of v)
//   act = qk_activation: silu (inside the conv) | relu | elu (elu + 1) | identity, per head
//   qk_norm l2:  q, k <- q / sqrt(|q|^2 + 1e-6), per head, inside the op
//   qk_norm sum: q, k <- q / sum_i q_i, per head, before the op
//   beta_t = sigmoid(b_proj(x_t)) in (0,1)^H, or 1 without use_beta   (x2 with allow_neg_eigval)
//   per head:  e_t = v_t - S_{t-1}^T k_t
//              S_t = S_{t-1} + beta_t k_t e_t^T = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
//              o_t = S_t^T (q_t / sqrt(d_k))
//   y = o_proj( concat_h RMSNorm_{d_v}(o^h) * w )   (* silu(g_proj(x)^h) with use_gate)
//
// key_dim = int(d * expand_k), value_dim = int(d * expand_v); d_k = key_dim / H, d_v = value_dim
// / H. Shapes: x [B,T,d]; q, k [B,T,H,d_k]; v [B,T,H,d_v]; beta [B,T,H]; state [B,H,d_k,d_v].
// Parameters (d = 1024: H 4 -> 4,210,944, H 16 -> 4,223,040): q_proj, k_proj, v_proj, o_proj
// [1024,1024]; b_proj [H,1024] (only with use_beta); q/k/v_conv1d [1024,1,4]; o_norm.weight
// [d_v]; g_proj with use_gate.
#pragma once

#include <memory>
#include <string>

#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/norm.h"

namespace hla::nn {

struct DeltaNetOptions {
  int64_t hidden_size = 1024;
  double expand_k = 1.0;
  double expand_v = 1.0;
  int64_t num_heads = 4;
  bool use_beta = true;
  bool use_gate = false;
  bool use_short_conv = true;
  int64_t conv_size = 4;
  bool allow_neg_eigval = false;
  std::string qk_activation = "silu";  // silu | relu | elu | identity
  std::string qk_norm = "l2";          // l2 | sum
  double norm_eps = 1e-5;
  double initializer_range = 0.02;
};

class DeltaNet : public Mixer {
 public:
  DeltaNet(const DeltaNetOptions& opt, Generator& gen);

  DeltaNetOptions opt;
  int64_t key_dim, value_dim;
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, b_proj, g_proj, o_proj;
  std::shared_ptr<ShortConvolution> q_conv1d, k_conv1d, v_conv1d;
  std::shared_ptr<GatedRMSNorm> o_norm_gated;  // registered as o_norm with use_gate
  std::shared_ptr<RMSNorm> o_norm;

 protected:
  Var mix(const MixerInput& in, MixerState* state, const Var& lower_bound) override;
};

}  // namespace hla::nn
