#include "nn/mixer.h"

#include "autograd/primitives.h"

namespace hla::nn {

std::vector<Var> MixerInput::project(const std::vector<const Linear*>& projs) const {
  if (norm) return norm->forward_projected(x, projs);
  std::vector<Var> ys;
  for (const Linear* proj : projs) ys.push_back(proj->forward(x));
  return ys;
}

Var run_conv(const ShortConvolution& conv, const Var& x, MixerState* state, size_t slot) {
  if (!state) return conv.forward(x);
  if (state->conv.size() <= slot) state->conv.resize(slot + 1);
  Var next;
  Var y = conv.forward(x, state->conv[slot], &next);
  state->conv[slot] = next;
  return y;
}

Var one_minus(const Var& x) { return add_scalar(neg(x), 1.0); }

DType gate_dtype(DType activations) {
  return activations == DType::bf16 ? DType::f32 : activations;
}

Var split_heads(const Var& x, int64_t heads) {
  return reshape(x, {x.size(0), x.size(1), heads, x.size(2) / heads});
}

Var merge_heads(const Var& x) {
  return reshape(x, {x.size(0), x.size(1), x.size(2) * x.size(3)});
}

Var repeat_heads(const Var& x, int64_t groups) {
  if (groups == 1) return x;
  const int64_t B = x.size(0), T = x.size(1), Hkv = x.size(2), d = x.size(3);
  return reshape(expand(unsqueeze(x, 3), {B, T, Hkv, groups, d}), {B, T, Hkv * groups, d});
}

}  // namespace hla::nn
