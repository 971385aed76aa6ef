// A linear map y = x W^T over x's last dimension as a projected-rows node (projected_rows.h)
// whose rows are x itself: the Matmul rule's products (dx = dy W, dW = dy^T x in W's layout),
// and a weight of another dtype than x (an f32 master weight under bf16 compute) cast inside,
// so the node keeps x and the weight itself, not a cast copy of it.
#include "autograd/fused.h"
#include "autograd/functions/projected_rows.h"
#include "autograd/node.h"

namespace hla {

namespace {
struct LinearNode : ProjectedRowsNode {
  LinearNode() { first_w = 1; }
  const char* name() const override { return "linear"; }
  Tensor rows() const override {
    const Tensor& x = inputs[0].data();
    return x.reshape({x.numel() / x.size(-1), x.size(-1)});
  }
  void rows_backward(const Tensor& dx, std::vector<Tensor>& grads, Tensor* R) const override {
    grads[0] = dx.reshape(inputs[0].shape());
    if (R) *R = rows();  // x itself, no pass
  }
};
}  // namespace

Var linear(const Var& x, const Var& W) {
  const char* op = "linear";
  check_rank(W.data(), 2, op, "W", "[O, F]");
  if (x.dim() == 0 || x.size(-1) != W.size(1))
    throw Error(op, "x [..., " + std::to_string(W.size(1)) + "]", to_string(x.shape()),
                "W [O, F] multiplies the last dimension F of x");
  if (!is_floating(x.dtype()) || !is_floating(W.dtype()))
    throw Error(op, "floating x and W", std::string(dtype_name(x.dtype())) + " and " +
                dtype_name(W.dtype()));
  Shape lead = x.shape();
  lead.pop_back();
  const Tensor& xd = x.data();
  return record1(std::make_shared<LinearNode>(), {x, W},
                 project_rows(xd.reshape({xd.numel() / xd.size(-1), xd.size(-1)}), {W}, lead)[0]);
}

}  // namespace hla
