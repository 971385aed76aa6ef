// The HGRN / HGRN2 forget gate as a Function node with two outputs (log f, 1 - f): one kernel
// each way (kernels/cpu/tensor/forget_gate.cpp); the backward recomputes sigmoid(x) from x.
#include "autograd/fused.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace hla {

namespace {
struct ForgetGateNode : Node {
  const char* name() const override { return "forget_gate"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    if (!g[0].defined() && !g[1].defined()) return {Tensor(), Tensor()};
    Tensor dx, dlb;
    const Tensor lb = inputs[1].defined() ? inputs[1].data() : Tensor();
    ops::forget_gate_backward(inputs[0].data(), lb, g[0], g[1], &dx, &dlb);
    return {dx, dlb};
  }
};
}  // namespace

std::vector<Var> forget_gate(const Var& x, const Var& lb, DType log_f_dtype) {
  Tensor log_f, one_minus_f;
  ops::forget_gate(x.data(), lb.defined() ? lb.data() : Tensor(), &log_f, &one_minus_f,
                   log_f_dtype);
  return record(std::make_shared<ForgetGateNode>(), {x, lb}, {log_f, one_minus_f});
}

}  // namespace hla
