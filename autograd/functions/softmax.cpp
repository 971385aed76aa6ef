// softmax and log_softmax as Function nodes (kernels: kernels/cpu/tensor/softmax.cpp).
#include "autograd/fused.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace hla {

namespace {
struct SoftmaxNode : Node {
  bool log = false;
  Tensor y;  // the forward output: both backwards are written in terms of it
  const char* name() const override { return log ? "log_softmax" : "softmax"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    if (!g[0].defined()) return {Tensor()};
    return {log ? ops::log_softmax_backward(y, g[0]) : ops::softmax_backward(y, g[0])};
  }
  void release() override { y = Tensor(); }
};

Var softmax_impl(const Var& x, bool log) {
  Tensor y = log ? ops::log_softmax(x.data()) : ops::softmax(x.data());
  auto n = std::make_shared<SoftmaxNode>();
  n->log = log;
  n->y = y;
  return record1(n, {without_values(x)}, y);
}
}  // namespace

Var softmax(const Var& x) { return softmax_impl(x, false); }
Var log_softmax(const Var& x) { return softmax_impl(x, true); }

}  // namespace hla
