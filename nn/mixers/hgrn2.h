// HGRN2: Gated Linear RNNs with State Expansion
// https://arxiv.org/abs/2404.07904  (fla/layers/hgrn2.py HGRN2Attention; spec/recurrences.md 2)
//
// HGRN with an outer-product state per head; the key is "1 - forget gate" (GLA op):
//   q = silu(q_proj(x)),  f~ = f_proj(x),  v = i_proj(x)   (short convs without activation, if on)
//   lam = logsigmoid(f~), floored by the layer's lower bound lb as in HGRN (spec 1.6)
//   k = 1 - exp(lam)
//   per head: S_t = diag(exp(lam_t)) S_{t-1} + k_t v_t^T,   o_t = S_t^T (q_t / sqrt(d_k))
//   y = o_proj( RMSNorm_d(concat_h o_t) * w )     (plain norm over the full width, eps 1e-5: fla
//                                                   calls rms_norm_linear without norm_eps)
//
// H = d / expand_ratio, d_k = expand_ratio, d_v = d / H. Shapes: x [B,T,d]; q, k, lam
// [B,T,H,d_k]; v [B,T,H,d_v]; state [B,H,d_k,d_v]. Parameters (d = 1024: H 8, 4,195,328):
// q_proj, f_proj, i_proj, o_proj [d,d]; g_norm.weight [d]; optional q/f/i_conv1d [d,1,W].
#pragma once

#include <memory>

#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/norm.h"

namespace hla::nn {

struct HGRN2Options {
  int64_t hidden_size = 1024;
  int64_t expand_ratio = 128;  // d_k; heads = hidden_size / expand_ratio
  bool use_short_conv = false;
  int64_t conv_size = 4;
  double initializer_range = 0.02;
};

class HGRN2Attention : public Mixer {
 public:
  HGRN2Attention(const HGRN2Options& opt, Generator& gen);

  HGRN2Options opt;
  int64_t num_heads;
  std::shared_ptr<Linear> q_proj, f_proj, i_proj, o_proj;
  std::shared_ptr<ShortConvolution> q_conv1d, f_conv1d, i_conv1d;
  std::shared_ptr<RMSNorm> g_norm;

 protected:
  Var mix(const MixerInput& in, MixerState* state, const Var& lower_bound) override;
};

}  // namespace hla::nn
