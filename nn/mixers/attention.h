// Attention: softmax attention as used in hybrids (fla/layers/attn.py Attention; spec 7).
// Attention Is All You Need, https://arxiv.org/abs/1706.03762; GQA: GQA: Training Generalized
// Multi-Query Transformer Models from Multi-Head Checkpoints, https://arxiv.org/abs/2305.13245
//
//   q = q_proj(x) [B,T,H,d],  k = k_proj(x), v = v_proj(x) [B,T,H_kv,d],  d = hidden / H
//   q, k <- RoPE at positions offset + t (base rope_theta)
//   A_ij = softmax_j( q_i . k_j / sqrt(d) ) over j <= i (and j > i - window with a window)
//   o_i = sum_j A_ij v_j   (query head h reads kv head h / (H / H_kv));  y = o_proj(concat_h o)
//
// Parameters (d_model 1024, 16 heads: 4,194,304; 4 kv heads: 2,621,440): q_proj [1024,1024],
// k_proj, v_proj [H_kv d, 1024] (biases with qkv_bias), o_proj [1024,1024] (never a bias).
// Decoding keeps a KV cache (the last `window` tokens with a window).
#pragma once

#include <memory>

#include "nn/linear.h"
#include "nn/mixer.h"

namespace hla::nn {

// (Named so as not to clash with hla::AttentionOptions, the options of the softmax_attention op.)
struct AttentionLayerOptions {
  int64_t hidden_size = 2048;
  int64_t num_heads = 32;
  int64_t num_kv_heads = 0;  // 0: num_heads
  bool qkv_bias = false;
  int64_t window_size = 0;   // 0: none
  double rope_theta = 10000.0;
  double initializer_range = 0.02;
};

class Attention : public Mixer {
 public:
  Attention(const AttentionLayerOptions& opt, Generator& gen);

  AttentionLayerOptions opt;
  int64_t num_kv_heads, head_dim;
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;

 protected:
  Var mix(const MixerInput& in, MixerState* state, const Var& lower_bound) override;
};

}  // namespace hla::nn
