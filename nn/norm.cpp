#include "nn/norm.h"

#include "autograd/fused.h"

namespace hla::nn {

RMSNorm::RMSNorm(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", Tensor::ones({dim}));
}

Var RMSNorm::forward(const Var& x) const { return rms_norm(x, weight, eps); }

GatedRMSNorm::GatedRMSNorm(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", Tensor::ones({dim}));
}

Var GatedRMSNorm::forward(const Var& x, const Var& g) const {
  return gated_rms_norm(x, g, weight, eps);
}

}  // namespace hla::nn
