#include "nn/norm.h"

#include "autograd/fused.h"
#include "autograd/primitives.h"
#include "nn/linear.h"

namespace hla::nn {

RMSNorm::RMSNorm(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", Tensor::ones({dim}));
}

Var RMSNorm::forward(const Var& x) const { return rms_norm(x, to_dtype(weight, x.dtype()), eps); }

GatedRMSNorm::GatedRMSNorm(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", Tensor::ones({dim}));
}

Var GatedRMSNorm::forward(const Var& x, const Var& g) const {
  return gated_rms_norm(x, g, to_dtype(weight, x.dtype()), eps);
}

namespace {
Var with_bias(const Var& y, const Linear& proj) {
  return proj.bias.defined() ? y + to_dtype(proj.bias, y.dtype()) : y;
}
}  // namespace

Var RMSNorm::forward_projected(const Var& x, const Linear& proj) const {
  return forward_projected(x, std::vector<const Linear*>{&proj})[0];
}

std::vector<Var> RMSNorm::forward_projected(const Var& x,
                                           const std::vector<const Linear*>& projs) const {
  std::vector<Var> Ws;
  for (const Linear* proj : projs) Ws.push_back(proj->weight);
  std::vector<Var> ys = rms_norm_linears(x, to_dtype(weight, x.dtype()), eps, Ws);
  for (size_t i = 0; i < ys.size(); ++i) ys[i] = with_bias(ys[i], *projs[i]);
  return ys;
}

Var GatedRMSNorm::forward_projected(const Var& x, const Var& g, const Linear& proj) const {
  return with_bias(
      gated_rms_norm_linear(x, g, to_dtype(weight, x.dtype()), eps, proj.weight), proj);
}

}  // namespace hla::nn
