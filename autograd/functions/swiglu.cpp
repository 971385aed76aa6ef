// SwiGLU silu(a) * b as a Function node (kernels/cpu/tensor/swiglu.cpp).
#include "autograd/fused.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace hla {

namespace {
struct SwigluNode : Node {
  const char* name() const override { return "swiglu"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    if (!g[0].defined()) return {Tensor(), Tensor()};
    Tensor da, db;
    ops::swiglu_backward(inputs[0].data(), inputs[1].data(), g[0], &da, &db);
    return {da, db};
  }
};
}  // namespace

Var swiglu(const Var& a, const Var& b) {
  return record1(std::make_shared<SwigluNode>(), {a, b}, ops::swiglu(a.data(), b.data()));
}

}  // namespace hla
