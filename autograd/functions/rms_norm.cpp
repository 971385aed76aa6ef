// RMSNorm and gated RMSNorm as Function nodes; the forward keeps rstd per row
// (kernels/cpu/tensor/norm.cpp has both directions and their equations).
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

}  // namespace hla
