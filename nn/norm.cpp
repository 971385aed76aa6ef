#include "nn/norm.h"

#include "autograd/fused.h"
#include "autograd/primitives.h"

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

}  // namespace hla::nn
