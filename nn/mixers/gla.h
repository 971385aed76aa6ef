// GLA: Gated Linear Attention Transformers with Hardware-Efficient Training
// https://arxiv.org/abs/2312.06635  (fla/layers/gla.py GatedLinearAttention; spec/recurrences.md 3)
//
//   q, k, v = q_proj(x), k_proj(x), v_proj(x)       (short convs with silu, if on)
//   g~ = gk_proj.1(gk_proj.0(x))                     (rank-16 bottleneck, bias on the second)
//   g = max(logsigmoid(g~) / 16, clamp_min)          (per-key log decay; alpha = exp(g); no clamp
//                                                     when clamp_min = -inf, fla's None)
//   GQA: k, v, g have H_kv = num_kv_heads heads; query head h reads kv head floor(h / G),
//        G = H / H_kv
//   q, k <- feature_map(q), feature_map(k)           (elementwise: relu, silu, sigmoid; or none)
//   per head: S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,   o_t = S_t^T (q_t / sqrt(d_k))
//   y = o_proj( concat_h RMSNorm_{d_v}(o^h) * w * silu(g_proj(x)^h) )   (per-head gated norm)
//
// key_dim = int(d * expand_k), value_dim = int(d * expand_v), d_k = key_dim / H,
// d_v = value_dim / H. Shapes: x [B,T,d]; q [B,T,H,d_k]; k, g [B,T,H_kv,d_k] (repeated to H
// heads); v [B,T,H_kv,d_v] (repeated); state [B,H,d_k,d_v]. Parameters (d = 1024, H = 4, no GQA:
// 4,219,648): q_proj [512,1024]; k_proj [512/G,1024]; v_proj [1024/G,1024]; g_proj, o_proj
// [1024,1024]; gk_proj.0.weight [16,1024]; gk_proj.1.weight [512/G,16]; gk_proj.1.bias [512/G];
// g_norm_swish_gate.weight [256] (g_norm.weight without the output gate); optional q_conv1d
// [key_dim,1,W], k_conv1d [key_dim/G,1,W], v_conv1d [value_dim/G,1,W].
#pragma once

#include <limits>
#include <memory>
#include <string>

#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/norm.h"

namespace hla::nn {

struct GLAOptions {
  int64_t hidden_size = 1024;
  double expand_k = 0.5;
  double expand_v = 1.0;
  int64_t num_heads = 4;
  int64_t num_kv_heads = 0;           // 0: num_heads (no GQA)
  std::string feature_map = "none";  // nn/feature_map.h
  bool use_short_conv = false;
  int64_t conv_size = 4;
  bool use_output_gate = true;
  double norm_eps = 1e-5;
  int64_t gate_low_rank_dim = 16;
  double gate_logit_normalizer = 16;
  double clamp_min = -std::numeric_limits<double>::infinity();  // -inf: no clamp
  double initializer_range = 0.02;
};

// The low-rank gate projection, named as fla's nn.Sequential: gk_proj.0, gk_proj.1.
class LowRankProjection : public Module {
 public:
  LowRankProjection(int64_t in, int64_t rank, int64_t out, Generator& gen, double std);
  Var forward(const Var& x) const;  // [..., in] -> [..., out]

  std::shared_ptr<Linear> down, up;
};

class GatedLinearAttention : public Mixer {
 public:
  GatedLinearAttention(const GLAOptions& opt, Generator& gen);

  GLAOptions opt;
  int64_t key_dim, value_dim;
  int64_t num_kv_heads, groups;  // H_kv and G = H / H_kv
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, g_proj, o_proj;
  std::shared_ptr<LowRankProjection> gk_proj;
  std::shared_ptr<ShortConvolution> q_conv1d, k_conv1d, v_conv1d;
  std::shared_ptr<GatedRMSNorm> g_norm_swish_gate;  // with the output gate
  std::shared_ptr<RMSNorm> g_norm;                  // without it

 protected:
  Var mix(const MixerInput& in, MixerState* state, const Var& lower_bound) override;
};

}  // namespace hla::nn
