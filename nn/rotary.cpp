#include "nn/rotary.h"

#include "autograd/fused.h"

namespace hla::nn {

Var apply_rotary(const Var& x, int64_t offset, double base) {
  if (x.dim() != 4 || x.size(3) % 2 != 0)
    throw Error("apply_rotary", "x [B,T,H,d] with an even head dim d", to_string(x.shape()));
  return rotary(x, offset, base);
}

}  // namespace hla::nn
