#include "nn/mlp.h"

#include "autograd/fused.h"
#include "autograd/primitives.h"

namespace hla::nn {

int64_t mlp_intermediate_size(int64_t hidden, double hidden_ratio) {
  const auto base = static_cast<int64_t>(static_cast<double>(hidden) * hidden_ratio * 2.0 / 3.0);
  return 256 * ((base + 255) / 256);
}

GatedMLP::GatedMLP(int64_t hidden, int64_t inter, Generator& gen, double std) {
  gate_proj = register_module("gate_proj", std::make_shared<Linear>(hidden, inter, false, gen, std));
  up_proj = register_module("up_proj", std::make_shared<Linear>(hidden, inter, false, gen, std));
  down_proj = register_module("down_proj", std::make_shared<Linear>(inter, hidden, false, gen, std));
}

Var GatedMLP::forward_normed(const Var& x, const RMSNorm& norm) const {
  const std::vector<Var> gate_up = norm.forward_projected(x, {gate_proj.get(), up_proj.get()});
  return swiglu_linear(gate_up[0], gate_up[1], down_proj->weight);
}

Var GatedMLP::forward(const Var& x) const {
  // down_proj(swiglu(gate, up)) with the SwiGLU product recomputed in the backward, not kept
  const Var gate = gate_proj->forward(x), up = up_proj->forward(x);
  return swiglu_linear(gate, up, down_proj->weight);
}

}  // namespace hla::nn
