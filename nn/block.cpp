#include "nn/block.h"

#include "autograd/primitives.h"

namespace hla::nn {

Block::Block(std::shared_ptr<Mixer> mixer, int64_t hidden, int64_t intermediate, double norm_eps,
             Generator& gen, double std) {
  attn_norm = register_module("attn_norm", std::make_shared<RMSNorm>(hidden, norm_eps));
  attn = register_module("attn", std::move(mixer));
  mlp_norm = register_module("mlp_norm", std::make_shared<RMSNorm>(hidden, norm_eps));
  mlp = register_module("mlp", std::make_shared<GatedMLP>(hidden, intermediate, gen, std));
}

Var Block::forward(const Var& x, MixerState* state, const Var& lower_bound) const {
  // the normed x recomputed in the backward, as the normed r
  const Var r = x + attn->forward_normed(x, *attn_norm, state, lower_bound);
  return r + mlp->forward_normed(r, *mlp_norm);  // the normed r recomputed in the backward
}

}  // namespace hla::nn
