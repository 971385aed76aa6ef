#include "nn/linear.h"

#include "autograd/fused.h"
#include "autograd/primitives.h"

namespace hla::nn {

Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator& gen, double std)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", Tensor::randn({out, in}, gen, DType::f32, 0.0, std));
  if (has_bias) bias = register_parameter("bias", Tensor::zeros({out}));
}

Var Linear::forward(const Var& x) const {
  if (x.dim() == 0 || x.size(-1) != in_features)
    throw Error("Linear", "input [..., " + std::to_string(in_features) + "]",
                to_string(x.shape()));
  // One GEMM over all leading dims: [N, in] @ [in, out], the weight cast to x's dtype inside
  // (linear: no cast copy of it is kept for the backward).
  const Var y = hla::linear(x, weight);
  return bias.defined() ? y + to_dtype(bias, x.dtype()) : y;
}

}  // namespace hla::nn
