// SwiGLU silu(a) * b as a Function node (kernels/cpu/tensor/swiglu.cpp), alone and followed by
// a linear map whose backward recomputes it (swiglu_linear).
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

namespace {
// h = swiglu(a, b) as [N, I] rows (a, b [..., I]).
Tensor swiglu_rows(const Tensor& a, const Tensor& b) {
  return ops::swiglu(a, b).reshape({a.numel() / a.size(-1), a.size(-1)});
}

// y = swiglu(a, b) w^T keeping a, b, w: the backward recomputes h = swiglu(a, b) (one elementwise
// pass) instead of the node keeping the [N, I] product. The products are the Matmul rule's:
// dh = dy w, dw = (h^T dy)^T.
struct SwigluLinearNode : Node {
  const char* name() const override { return "swiglu_linear"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    if (!g[0].defined()) return {Tensor(), Tensor(), Tensor()};
    const Tensor &a = inputs[0].data(), &b = inputs[1].data(), &w = inputs[2].data();
    const Tensor dy = g[0].reshape({g[0].numel() / w.size(0), w.size(0)});
    Tensor da, db, dw;
    if (needs_input_grad(0) || needs_input_grad(1)) {
      const Tensor dh = ops::matmul(dy, w).reshape(a.shape());
      ops::swiglu_backward(a, b, dh, &da, &db);
    }
    if (needs_input_grad(2))
      dw = ops::matmul(swiglu_rows(a, b).transpose(0, 1), dy).transpose(0, 1);
    return {da, db, dw};
  }
};
}  // namespace

Var swiglu_linear(const Var& a, const Var& b, const Var& w) {
  const char* op = "swiglu_linear";
  check_rank(w.data(), 2, op, "w", "[O, I]");
  if (a.dim() == 0 || a.size(-1) != w.size(1) || b.shape() != a.shape())
    throw Error(op, "a and b shaped [..., " + std::to_string(w.size(1)) + "] alike",
                to_string(a.shape()) + " and " + to_string(b.shape()),
                "w [O, I] multiplies the last dimension I of swiglu(a, b)");
  Shape out = a.shape();
  out.back() = w.size(0);
  const Tensor y = ops::matmul(swiglu_rows(a.data(), b.data()), w.data().transpose(0, 1));
  return record1(std::make_shared<SwigluLinearNode>(), {a, b, w}, y.reshape(out));
}

}  // namespace hla
