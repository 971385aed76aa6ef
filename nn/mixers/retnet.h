// RetNet: Retentive Network: A Successor to Transformer for Large Language Models
// https://arxiv.org/abs/2307.08621  (fla/layers/multiscale_retention.py MultiScaleRetention;
// spec/recurrences.md 4)
//
//   q, k, v = q_proj(x), k_proj(x), v_proj(x);  q, k <- feature_map(q), feature_map(k)
//   q, k <- RoPE(q, k) at positions offset + t
//   GQA: k, v have H_kv = num_kv_heads heads; query head h reads kv head floor(h / G), G = H / H_kv
//   per head, fixed decay gamma_h = 1 - 2^(-5-h) (nothing learned):
//     S_t = gamma_h S_{t-1} + k_t v_t^T,   o_t = S_t^T (q_t / sqrt(d_k))
//   y = o_proj( concat_h RMSNorm_{d_v}(o^h) * w * silu(g_proj(x)^h) )
// As in fla, not as in the paper: rotate-half RoPE instead of xPos, per-head RMSNorm instead of
// GroupNorm. The feature map is elementwise (relu, silu, sigmoid) or none (nn/feature_map.h).
//
// key_dim = int(d * expand_k), value_dim = int(d * expand_v), d_k = key_dim / H, d_v = value_dim
// / H. Shapes: x [B,T,d]; q [B,T,H,d_k]; k [B,T,H_kv,d_k], v [B,T,H_kv,d_v] (repeated to H heads);
// state [B,H,d_k,d_v]. Parameters (d = 1024, H = 8, no GQA: 8,388,864): q_proj [1024,1024];
// k_proj [1024/G,1024]; v_proj [2048/G,1024]; g_proj [2048,1024]; o_proj [1024,2048];
// g_norm_swish_gate.weight [256] (g_norm.weight without the output gate).
#pragma once

#include <memory>
#include <string>

#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/norm.h"

namespace hla::nn {

struct RetNetOptions {
  int64_t hidden_size = 1024;
  double expand_k = 1.0;
  double expand_v = 2.0;
  int64_t num_heads = 8;
  int64_t num_kv_heads = 0;           // 0: num_heads (no GQA)
  std::string feature_map = "none";  // nn/feature_map.h
  bool use_output_gate = true;
  double norm_eps = 1e-5;
  double initializer_range = 0.02;
};

class MultiScaleRetention : public Mixer {
 public:
  MultiScaleRetention(const RetNetOptions& opt, Generator& gen);

  RetNetOptions opt;
  int64_t key_dim, value_dim;
  int64_t num_kv_heads, groups;  // H_kv and G = H / H_kv
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, g_proj, o_proj;
  std::shared_ptr<GatedRMSNorm> g_norm_swish_gate;  // with the output gate
  std::shared_ptr<RMSNorm> g_norm;                  // without it

 protected:
  Var mix(const MixerInput& in, MixerState* state, const Var& lower_bound) override;
};

}  // namespace hla::nn
