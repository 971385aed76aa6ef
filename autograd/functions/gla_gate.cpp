// GLA's log decay as a Function node (kernels/cpu/tensor/gla_gate.cpp); the node keeps x only.
#include "autograd/fused.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace hla {

namespace {
struct GlaGateNode : Node {
  double normalizer, floor;
  GlaGateNode(double normalizer_, double floor_) : normalizer(normalizer_), floor(floor_) {}
  const char* name() const override { return "gla_gate"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    if (!g[0].defined()) return {Tensor()};
    return {ops::gla_gate_backward(inputs[0].data(), g[0], normalizer, floor)};
  }
};
}  // namespace

Var gla_gate(const Var& x, double normalizer, double floor) {
  return record1(std::make_shared<GlaGateNode>(normalizer, floor), {x},
                 ops::gla_gate(x.data(), normalizer, floor));
}

}  // namespace hla
