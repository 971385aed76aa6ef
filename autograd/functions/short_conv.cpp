// Causal depthwise short convolution as a Function node (kernels/cpu/tensor/short_conv.cpp).
#include "autograd/fused.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace hla {

namespace {
struct ShortConvNode : Node {
  bool silu = false;
  bool has_cache = false;
  const char* name() const override { return "short_conv"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    if (!g[0].defined()) return std::vector<Tensor>(inputs.size());
    const Tensor cache = has_cache ? inputs[2].data() : Tensor();
    Tensor dx, dw, dc;
    ops::short_conv_backward(inputs[0].data(), inputs[1].data(), silu, cache, g[0], &dx, &dw,
                             has_cache ? &dc : nullptr);
    if (has_cache) return {dx, dw, dc};
    return {dx, dw};
  }
};
}  // namespace

Var short_conv(const Var& x, const Var& w, bool silu, const Var& cache) {
  auto n = std::make_shared<ShortConvNode>();
  n->silu = silu;
  n->has_cache = cache.defined();
  Tensor y = ops::short_conv(x.data(), w.data(), silu, cache.defined() ? cache.data() : Tensor());
  if (cache.defined()) return record1(n, {x, w, cache}, y);
  return record1(n, {x, w}, y);
}

}  // namespace hla
