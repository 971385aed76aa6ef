// Rotary position embedding as a Function node (kernels/cpu/tensor/rotary.cpp): the backward is
// the rotation by the negative angle, so the node keeps no tensor, nor the values of x (the
// attention or retention that reads the rotated rows keeps those).
#include "autograd/fused.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace hla {

namespace {
struct RotaryNode : Node {
  int64_t offset;
  double base;
  RotaryNode(int64_t offset_, double base_) : offset(offset_), base(base_) {}
  const char* name() const override { return "rotary"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    if (!g[0].defined()) return {Tensor()};
    return {ops::rotary_backward(g[0], offset, base)};
  }
};
}  // namespace

Var rotary(const Var& x, int64_t offset, double base) {
  return record1(std::make_shared<RotaryNode>(offset, base), {without_values(x)},
                 ops::rotary(x.data(), offset, base));
}

}  // namespace hla
