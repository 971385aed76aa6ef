// The delta rules' value split (value_split.h): the slice count and the layout changes, as views
// and copies of tensors on either device.
#include "autograd/functions/value_split.h"

#include <string>

#include "kernels/ops.h"
#include "tensor/error.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif

namespace hla::detail {

namespace {

constexpr int64_t kMinSliceValues = 16;  // narrower slices spend more on q, k than they gain

// x [d0, ..., d_{n-1}] with dimension `dim` of size a*b -> [..., a, b, ...].
Shape split_dim(const Shape& shape, size_t dim, int64_t a) {
  Shape out(shape.begin(), shape.begin() + dim);
  out.push_back(a);
  out.push_back(shape[dim] / a);
  out.insert(out.end(), shape.begin() + dim + 1, shape.end());
  return out;
}

}  // namespace

int64_t value_split(int64_t requested, Device device, bool recurrent, int64_t B, int64_t H,
                    int64_t V, const char* op) {
  if (requested > 0) {
    if (V % requested != 0)
      throw Error(op, "value_split dividing V = " + std::to_string(V), std::to_string(requested),
                  "pick a divisor of the value head size, or 0 to let the op choose");
    return requested;
  }
  if (requested < 0)
    throw Error(op, "value_split >= 0 (0: chosen by the op)", std::to_string(requested));
  int64_t s = 1;
#ifdef HLA_WITH_CUDA
  if (device == Device::CUDA && recurrent) {
    const int64_t blocks = cuda::multiprocessor_count();
    while (B * H * s * 2 <= blocks && V % (s * 2) == 0 && V / (s * 2) >= kMinSliceValues) s *= 2;
  }
#else
  (void)device, (void)recurrent, (void)B, (void)H, (void)V;
#endif
  return s;
}

Tensor split_heads(const Tensor& x, int64_t s) {
  Shape repeated = x.shape();
  repeated.insert(repeated.begin() + 3, s);  // [B,T,H,s,...]
  Shape merged = x.shape();
  merged[2] *= s;
  return x.unsqueeze(3).expand(repeated).contiguous().view(merged);
}

Tensor merge_heads(const Tensor& x, int64_t s) {
  return ops::sum(x.view(split_dim(x.shape(), 2, x.size(2) / s)), {3});
}

Tensor split_state(const Tensor& h, int64_t s) {
  const int64_t B = h.size(0), H = h.size(1), K = h.size(2), V = h.size(3);
  return h.view({B, H, K, s, V / s})
      .permute({0, 1, 3, 2, 4})
      .contiguous()
      .view({B, H * s, K, V / s});
}

Tensor merge_state(const Tensor& h, int64_t s) {
  const int64_t B = h.size(0), H = h.size(1) / s, K = h.size(2), Vs = h.size(3);
  return h.view({B, H, s, K, Vs}).permute({0, 1, 3, 2, 4}).contiguous().view({B, H, K, s * Vs});
}

}  // namespace hla::detail
