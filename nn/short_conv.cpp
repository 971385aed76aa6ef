#include "nn/short_conv.h"

#include "autograd/fused.h"
#include "autograd/primitives.h"

namespace hla::nn {

ShortConvolution::ShortConvolution(int64_t d, int64_t w, bool act, Generator& gen, double std)
    : dim(d), width(w), silu(act) {
  weight = register_parameter("weight", Tensor::randn({d, 1, w}, gen, DType::f32, 0.0, std));
}

Var ShortConvolution::forward(const Var& x, const Var& cache, Var* new_cache) const {
  if (x.dim() != 3 || x.size(2) != dim)
    throw Error("ShortConvolution", "x [B,T," + std::to_string(dim) + "]", to_string(x.shape()));
  Var y = short_conv(x, reshape(to_dtype(weight, x.dtype()), {dim, width}), silu, cache);
  if (new_cache) {
    // The last W-1 inputs of [cache, x] along time, back in [B, D, W-1] order.
    const int64_t B = x.size(0), keep = width - 1;
    Var past = cache.defined()
                   ? permute(cache, {0, 2, 1})
                   : Var(Tensor::zeros({B, keep, dim}, x.dtype(), x.device()));
    Var seq = concat({past, x}, 1);
    const int64_t n = seq.size(1);
    *new_cache = permute(slice(seq, 1, n - keep, n), {0, 2, 1});
  }
  return y;
}

}  // namespace hla::nn
