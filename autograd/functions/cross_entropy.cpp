// Cross-entropy with ignore_index as a Function node: the forward keeps each row's log-sum-exp,
// the backward forms softmax - onehot row by row (kernels/cpu/tensor/cross_entropy.cpp).
#include "autograd/fused.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace hla {

namespace {
struct CrossEntropyNode : Node {
  Tensor targets, lse;
  int64_t ignore_index = kIgnoreIndex;
  const char* name() const override { return "cross_entropy"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    if (!g[0].defined()) return {Tensor()};
    return {ops::cross_entropy_backward(inputs[0].data(), targets, ignore_index, lse, g[0].item())};
  }
  void release() override { lse = Tensor(); }
};
}  // namespace

Var cross_entropy(const Var& logits, const Tensor& targets, int64_t ignore_index) {
  auto n = std::make_shared<CrossEntropyNode>();
  Tensor loss = ops::cross_entropy(logits.data(), targets, ignore_index, &n->lse);
  n->targets = targets;
  n->ignore_index = ignore_index;
  return record1(n, {logits}, loss);
}

}  // namespace hla
