#include "autograd/functions/projected_rows.h"

#include "kernels/ops.h"

namespace hla {

namespace {
// W as an operand of the products with rows of `dtype`.
Tensor operand(const Tensor& W, DType dtype) { return W.dtype() == dtype ? W : W.to(dtype); }
}  // namespace

std::vector<Tensor> ProjectedRowsNode::backward(const std::vector<Tensor>& gy) {
  std::vector<Tensor> grads(inputs.size());
  bool rows_grads = false;  // some input of f takes its gradient
  for (size_t i = 0; i < first_w; ++i) rows_grads = rows_grads || needs_input_grad(i);
  bool needs_R = false;  // some W_i takes its gradient
  Tensor dR;             // sum_i dy_i W_i
  for (size_t i = first_w; i < inputs.size(); ++i) {
    const Tensor& d = gy[i - first_w];
    if (!d.defined()) continue;
    needs_R = needs_R || needs_input_grad(i);
    if (!rows_grads) continue;
    const Tensor W = operand(inputs[i].data(), d.dtype());
    const Tensor dy = d.reshape({d.numel() / W.size(0), W.size(0)});
    if (dR.defined())
      ops::matmul_acc(dR, dy, W);  // summed into dR by the product, not by a pass of its own
    else
      dR = ops::matmul(dy, W);
  }
  Tensor R;  // recomputed once: by the rows' backward when it runs, else alone
  if (dR.defined()) rows_backward(dR, grads, needs_R ? &R : nullptr);
  dR = Tensor();  // spent before the dW_i are formed
  if (needs_R && !R.defined()) R = rows();
  for (size_t i = first_w; i < inputs.size() && needs_R; ++i) {
    const Tensor& d = gy[i - first_w];
    if (!d.defined() || !needs_input_grad(i)) continue;
    const Tensor& Wp = inputs[i].data();
    const Tensor dy = d.reshape({d.numel() / Wp.size(0), Wp.size(0)});
    // dy^T R [out, in], contiguous; an f32 weight under bf16 compute gets it summed in f32
    const DType dW_type =
        Wp.dtype() == DType::f32 && dy.dtype() == DType::bf16 ? DType::f32 : dy.dtype();
    const Tensor dW = ops::matmul(dy.transpose(0, 1), R, dW_type);
    grads[i] = dW.dtype() == Wp.dtype() ? dW : dW.to(Wp.dtype());
  }
  return grads;
}

std::vector<Tensor> project_rows(const Tensor& R, const std::vector<Var>& Ws, Shape lead) {
  std::vector<Tensor> ys;
  lead.push_back(0);
  for (const Var& W : Ws) {
    lead.back() = W.size(0);
    ys.push_back(ops::matmul(R, operand(W.data(), R.dtype()).transpose(0, 1)).reshape(lead));
  }
  return ys;
}

}  // namespace hla
