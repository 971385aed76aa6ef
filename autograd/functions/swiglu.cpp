// SwiGLU silu(a) * b as a Function node (kernels/cpu/tensor/swiglu.cpp), alone and followed by
// a linear map whose backward recomputes it (swiglu_linear).
#include "autograd/fused.h"
#include "autograd/functions/projected_rows.h"
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

// y = swiglu(a, b) w^T keeping a, b, w: the backward recomputes the rows h = swiglu(a, b)
// (ProjectedRowsNode; in the pass of swiglu's backward) instead of the node keeping the [N, I]
// product.
struct SwigluLinearNode : ProjectedRowsNode {
  SwigluLinearNode() { first_w = 2; }
  const char* name() const override { return "swiglu_linear"; }
  Tensor rows() const override { return swiglu_rows(inputs[0].data(), inputs[1].data()); }
  void rows_backward(const Tensor& dh, std::vector<Tensor>& grads, Tensor* R) const override {
    const Tensor& a = inputs[0].data();
    ops::swiglu_backward(a, inputs[1].data(), dh.reshape(a.shape()), &grads[0], &grads[1], R);
    if (R) *R = R->reshape({a.numel() / a.size(-1), a.size(-1)});
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
  Shape lead = a.shape();
  lead.pop_back();
  return record1(std::make_shared<SwigluLinearNode>(), {a, b, w},
                 project_rows(swiglu_rows(a.data(), b.data()), {w}, lead)[0]);
}

}  // namespace hla
