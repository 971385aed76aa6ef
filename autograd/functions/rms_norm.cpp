// RMSNorm and gated RMSNorm as Function nodes; the forward keeps rstd per row
// (kernels/cpu/tensor/norm.cpp has both directions and their equations). Also each followed by a
// linear map whose backward recomputes the normed rows (rms_norm_linear, gated_rms_norm_linear).
#include "autograd/fused.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace hla {

namespace {
struct RmsNormNode : Node {
  bool gated = false;
  Tensor rstd;
  const char* name() const override { return gated ? "gated_rms_norm" : "rms_norm"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    if (!g[0].defined()) return std::vector<Tensor>(inputs.size());
    Tensor dx, dg, dw;
    if (gated) {
      ops::gated_rms_norm_backward(inputs[0].data(), inputs[1].data(), inputs[2].data(), rstd,
                                   g[0], &dx, &dg, &dw);
      return {dx, dg, dw};
    }
    ops::rms_norm_backward(inputs[0].data(), inputs[1].data(), rstd, g[0], &dx, &dw);
    return {dx, dw};
  }
  void release() override { rstd = Tensor(); }
};
}  // namespace

Var rms_norm(const Var& x, const Var& w, double eps) {
  auto n = std::make_shared<RmsNormNode>();
  Tensor y = ops::rms_norm(x.data(), w.data(), eps, &n->rstd);
  return record1(n, {x, w}, y);
}

Var gated_rms_norm(const Var& x, const Var& g, const Var& w, double eps) {
  auto n = std::make_shared<RmsNormNode>();
  n->gated = true;
  Tensor y = ops::gated_rms_norm(x.data(), g.data(), w.data(), eps, &n->rstd);
  return record1(n, {x, g, w}, y);
}

namespace {
// norm(x[, g]) * w over x's last dimension, the per-row rstd into *rstd.
Tensor normed(const Tensor& x, const Tensor& g, const Tensor& w, double eps, Tensor* rstd) {
  return g.defined() ? ops::gated_rms_norm(x, g, w, eps, rstd) : ops::rms_norm(x, w, eps, rstd);
}

// y_i = rows(norm(x[, g])) W_i^T for each W_i, keeping x, [g], w, the W_i and rstd: the
// backward recomputes the normed rows (one elementwise pass) instead of the node keeping them.
// The products are the Matmul rule's: dn = sum_i dy_i W_i, dW_i = (n^T dy_i)^T; then the norm's
// own backward with the forward's rstd. Inputs: x, [g], w, W_1 .. W_k; outputs y_1 .. y_k.
struct NormLinearNode : Node {
  bool gated = false;
  double eps = 0;
  Tensor rstd;
  const char* name() const override { return gated ? "gated_rms_norm_linear" : "rms_norm_linear"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& gy) override {
    const size_t first_w = gated ? 3 : 2;
    const Tensor& x = inputs[0].data();
    const Tensor g = gated ? inputs[1].data() : Tensor();
    const Tensor& w = inputs[first_w - 1].data();
    const int64_t F = inputs[first_w].size(1);
    std::vector<Tensor> grads(inputs.size());
    Tensor n;  // the normed rows [N, F], recomputed once if a W_i needs its gradient
    Tensor dn;  // sum_i dy_i W_i, [N, F]
    for (size_t i = first_w; i < inputs.size(); ++i) {
      const Tensor& d = gy[i - first_w];
      if (!d.defined()) continue;
      const Tensor& W = inputs[i].data();
      const Tensor dy = d.reshape({d.numel() / W.size(0), W.size(0)});
      if (needs_input_grad(i)) {
        if (!n.defined()) {
          Tensor unused;
          n = normed(x, g, w, eps, &unused).reshape({x.numel() / F, F});
        }
        grads[i] = ops::matmul(n.transpose(0, 1), dy).transpose(0, 1);
      }
      const Tensor dn_i = ops::matmul(dy, W);
      dn = dn.defined() ? ops::binary(ops::Binary::Add, dn, dn_i) : dn_i;
    }
    bool norm_grads = false;
    for (size_t i = 0; i < first_w; ++i) norm_grads = norm_grads || needs_input_grad(i);
    if (norm_grads && dn.defined()) {
      const Tensor dnx = dn.reshape(x.shape());
      if (gated)
        ops::gated_rms_norm_backward(x, g, w, rstd, dnx, &grads[0], &grads[1], &grads[2]);
      else
        ops::rms_norm_backward(x, w, rstd, dnx, &grads[0], &grads[1]);
    }
    return grads;
  }
  void release() override { rstd = Tensor(); }
};

// x's shape with its trailing dims that hold F elements replaced by O ([B,T,H,D] with F = H*D:
// [B,T,O]).
Shape projected_shape(const Tensor& x, int64_t F, int64_t O, const char* op) {
  Shape out = x.shape();
  int64_t merged = 1;
  while (!out.empty() && merged < F) {
    merged *= out.back();
    out.pop_back();
  }
  if (merged != F)
    throw Error(op, "x's trailing dimensions holding the projection's " + std::to_string(F) +
                        " inputs", to_string(x.shape()),
                "W [O, F] multiplies the normed x merged over its last dimensions");
  out.push_back(O);
  return out;
}

std::vector<Var> norm_linears(const Var& x, const Var& g, const Var& w, double eps,
                              const std::vector<Var>& Ws) {
  const char* op = g.defined() ? "gated_rms_norm_linear" : "rms_norm_linear";
  if (Ws.empty()) throw Error(op, "at least one projection W", "none");
  const int64_t F = Ws[0].dim() == 2 ? Ws[0].size(1) : 0;
  for (const Var& W : Ws) {
    check_rank(W.data(), 2, op, "W", "[O, F]");
    if (W.size(1) != F)
      throw Error(op, "projections reading the same " + std::to_string(F) + " inputs",
                  to_string(W.shape()));
  }
  auto n = std::make_shared<NormLinearNode>();
  n->gated = g.defined();
  n->eps = eps;
  const Tensor rows = normed(x.data(), g.defined() ? g.data() : Tensor(), w.data(), eps, &n->rstd)
                          .reshape({x.numel() / F, F});
  std::vector<Tensor> ys;
  for (const Var& W : Ws)
    ys.push_back(ops::matmul(rows, W.data().transpose(0, 1))
                     .reshape(projected_shape(x.data(), F, W.size(0), op)));
  std::vector<Var> inputs{x};
  if (g.defined()) inputs.push_back(g);
  inputs.push_back(w);
  inputs.insert(inputs.end(), Ws.begin(), Ws.end());
  return record(n, inputs, ys);
}
}  // namespace

Var rms_norm_linear(const Var& x, const Var& w, double eps, const Var& W) {
  return norm_linears(x, Var(), w, eps, {W})[0];
}

Var gated_rms_norm_linear(const Var& x, const Var& g, const Var& w, double eps, const Var& W) {
  return norm_linears(x, g, w, eps, {W})[0];
}

std::vector<Var> rms_norm_linears(const Var& x, const Var& w, double eps,
                                  const std::vector<Var>& Ws) {
  return norm_linears(x, Var(), w, eps, Ws);
}

}  // namespace hla
