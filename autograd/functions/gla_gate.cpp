// GLA's log decay as a Function node (kernels/cpu/tensor/gla_gate.cpp). The backward reads the
// output g (which the recurrence keeps anyway), so the node keeps no values of its own: x is an
// edge without values once the forward drops it. g may be f32 for bf16 x (its dx is bf16).
#include "autograd/fused.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace hla {

namespace {
struct GlaGateNode : Node {
  double normalizer, floor;
  DType x_dtype;
  Tensor g;  // the output's values
  GlaGateNode(double normalizer_, double floor_, DType x_dtype_)
      : normalizer(normalizer_), floor(floor_), x_dtype(x_dtype_) {}
  const char* name() const override { return "gla_gate"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& dg) override {
    if (!dg[0].defined()) return {Tensor()};
    return {ops::gla_gate_backward(g, dg[0].to(g.dtype()), normalizer, floor, x_dtype)};
  }
  void release() override { g = Tensor(); }
};
}  // namespace

Var gla_gate(const Var& x, double normalizer, double floor, DType out) {
  auto node = std::make_shared<GlaGateNode>(normalizer, floor, x.dtype());
  node->g = ops::gla_gate(x.data(), normalizer, floor, out);
  const Tensor g = node->g;
  return record1(node, {without_values(x)}, g);
}

}  // namespace hla
