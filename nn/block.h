// Block: one pre-norm layer of HybridLM (spec/recurrences.md 8.2), the same for every mixer.
//
//   r = x + attn(attn_norm(x))
//   y = r + mlp(mlp_norm(r))
//
// x [B,T,d] -> [B,T,d]. attn is a linear-attention mixer or softmax Attention; mlp the SwiGLU
// GatedMLP. Parameter names: attn_norm.weight, attn.*, mlp_norm.weight, mlp.{gate,up,down}_proj.
#pragma once

#include <memory>

#include "nn/mixer.h"
#include "nn/mlp.h"
#include "nn/norm.h"

namespace hla::nn {

class Block : public Module {
 public:
  Block(std::shared_ptr<Mixer> mixer, int64_t hidden, int64_t intermediate, double norm_eps,
        Generator& gen, double std = 0.02);
  // state / lower_bound: passed to the mixer (see Mixer::forward_normed).
  Var forward(const Var& x, MixerState* state = nullptr, const Var& lower_bound = {}) const;

  std::shared_ptr<RMSNorm> attn_norm, mlp_norm;
  std::shared_ptr<Mixer> attn;
  std::shared_ptr<GatedMLP> mlp;
};

}  // namespace hla::nn
