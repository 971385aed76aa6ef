// RMSNorm and gated RMSNorm as Function nodes; the forward keeps rstd per row
// (kernels/cpu/tensor/norm.cpp has both directions and their equations). Also each followed by a
// linear map whose backward recomputes the normed rows (rms_norm_linear, gated_rms_norm_linear).
#include "autograd/fused.h"
#include "autograd/functions/projected_rows.h"
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

// y_i = rows(norm(x[, g])) W_i^T keeping x, [g], w, the W_i and rstd: the backward runs the
// norm's own backward with the forward's rstd, which recomputes the normed rows on the way
// (ProjectedRowsNode).
// Inputs: x, [g], w, W_1 .. W_k; outputs y_1 .. y_k.
struct NormLinearNode : ProjectedRowsNode {
  bool gated = false;
  double eps = 0;
  Tensor rstd;
  const char* name() const override { return gated ? "gated_rms_norm_linear" : "rms_norm_linear"; }
  Tensor rows() const override {
    const Tensor& x = inputs[0].data();
    const int64_t F = inputs[first_w].size(1);
    Tensor unused;
    return normed(x, gated ? inputs[1].data() : Tensor(), inputs[first_w - 1].data(), eps, &unused)
        .reshape({x.numel() / F, F});
  }
  void rows_backward(const Tensor& dn, std::vector<Tensor>& grads, Tensor* R) const override {
    const Tensor& x = inputs[0].data();
    const Tensor& w = inputs[first_w - 1].data();
    if (gated)
      ops::gated_rms_norm_backward(x, inputs[1].data(), w, rstd, dn.reshape(x.shape()), &grads[0],
                                   &grads[1], &grads[2], R);
    else
      ops::rms_norm_backward(x, w, rstd, dn.reshape(x.shape()), &grads[0], &grads[1], R);
    if (R) *R = R->reshape(dn.shape());
  }
  void release() override { rstd = Tensor(); }
};

// x's shape without its trailing dims that hold F elements ([B,T,H,D] with F = H*D: [B,T]).
Shape leading_shape(const Tensor& x, int64_t F, const char* op) {
  Shape lead = x.shape();
  int64_t merged = 1;
  while (!lead.empty() && merged < F) {
    merged *= lead.back();
    lead.pop_back();
  }
  if (merged != F)
    throw Error(op, "x's trailing dimensions holding the projection's " + std::to_string(F) +
                        " inputs", to_string(x.shape()),
                "W [O, F] multiplies the normed x merged over its last dimensions");
  return lead;
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
  const Shape lead = leading_shape(x.data(), F, op);
  auto n = std::make_shared<NormLinearNode>();
  n->gated = g.defined();
  n->eps = eps;
  n->first_w = g.defined() ? 3 : 2;
  const Tensor rows = normed(x.data(), g.defined() ? g.data() : Tensor(), w.data(), eps, &n->rstd)
                          .reshape({x.numel() / F, F});
  std::vector<Var> inputs{x};
  if (g.defined()) inputs.push_back(g);
  inputs.push_back(w);
  inputs.insert(inputs.end(), Ws.begin(), Ws.end());
  return record(n, inputs, project_rows(rows, Ws, lead));
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
