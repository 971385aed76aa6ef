// GLA's log decay on CPU (kernels/ops.h): g = max(logsigmoid(x) / normalizer, floor), and
// dx = dg sigmoid(-x) / normalizer where logsigmoid(x) / normalizer > floor, 0 where clamped.
#include <cmath>

#include "kernels/cpu/tensor/stable_math.h"
#include "kernels/ops.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif
#include "tensor/dtype_dispatch.h"

namespace hla::ops {

namespace {
void check_normalizer(double normalizer, const char* op) {
  if (!(normalizer > 0) || !std::isfinite(normalizer))
    throw Error(op, "a finite normalizer > 0", std::to_string(normalizer));
}
}  // namespace

Tensor gla_gate(const Tensor& x_in, double normalizer, double floor) {
  check_normalizer(normalizer, "gla_gate");
#ifdef HLA_WITH_CUDA
  if (x_in.device() == Device::CUDA) return cuda::gla_gate(x_in, normalizer, floor);
#endif
  require_cpu(x_in, "gla_gate");
  const Tensor x = x_in.contiguous();
  return visit_floating(x.dtype(), "gla_gate", [&]<class T>() {
    Tensor g = Tensor::empty(x.shape(), x.dtype());
    const T* px = x.data<T>();
    T* pg = g.data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) {
      const T v = stable_log_sigmoid(px[i]) / T(normalizer);
      pg[i] = v > T(floor) ? v : T(floor);
    }
    return g;
  });
}

Tensor gla_gate_backward(const Tensor& x_in, const Tensor& dg_in, double normalizer, double floor) {
  check_normalizer(normalizer, "gla_gate_backward");
#ifdef HLA_WITH_CUDA
  if (x_in.device() == Device::CUDA) return cuda::gla_gate_backward(x_in, dg_in, normalizer, floor);
#endif
  require_cpu(x_in, "gla_gate_backward");
  check_shape(dg_in, x_in.shape(), "gla_gate_backward", "dg");
  const Tensor x = x_in.contiguous(), dg = dg_in.to(x.dtype()).contiguous();
  return visit_floating(x.dtype(), "gla_gate_backward", [&]<class T>() {
    Tensor dx = Tensor::empty(x.shape(), x.dtype());
    const T* px = x.data<T>();
    const T* pd = dg.data<T>();
    T* pdx = dx.data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) {
      const T v = stable_log_sigmoid(px[i]) / T(normalizer);
      const T s = stable_sigmoid(-px[i]);
      pdx[i] = v > T(floor) ? pd[i] * s / T(normalizer) : T(0);
    }
    return dx;
  });
}

}  // namespace hla::ops
