#include "nn/embedding.h"

#include "autograd/primitives.h"

namespace hla::nn {

Embedding::Embedding(int64_t n, int64_t dim, Generator& gen, double std) {
  weight = register_parameter("weight", Tensor::randn({n, dim}, gen, DType::f32, 0.0, std));
}

Var Embedding::forward(const Tensor& ids) const { return embedding(weight, ids); }

}  // namespace hla::nn
