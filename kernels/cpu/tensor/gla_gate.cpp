// GLA's log decay on CPU (kernels/ops.h): g = max(logsigmoid(x) / normalizer, floor), and from
// g alone dx = dg sigmoid(-x) / normalizer = dg (-expm1(normalizer g)) / normalizer where
// g > floor, 0 where clamped. Computed in x's (g's) dtype; g (dx) converted to the dtype asked.
#include <cmath>
#include <string>

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
// x (dx) and g: one dtype, or bf16 and f32.
void check_gate_dtypes(DType x, DType g, const char* op, const char* name) {
  if (g != x && !(x == DType::bf16 && g == DType::f32))
    throw Error(op, std::string(name) + " of x's dtype " + dtype_name(x) + " (or f32 for bf16 x)",
                dtype_name(g));
}
}  // namespace

Tensor gla_gate(const Tensor& x_in, double normalizer, double floor, DType out) {
  check_normalizer(normalizer, "gla_gate");
  check_gate_dtypes(x_in.dtype(), out, "gla_gate", "g");
#ifdef HLA_WITH_CUDA
  if (x_in.device() == Device::CUDA) return cuda::gla_gate(x_in, normalizer, floor, out);
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
    return g.to(out);
  });
}

Tensor gla_gate_backward(const Tensor& g_in, const Tensor& dg_in, double normalizer, double floor,
                         DType dx_dtype) {
  check_normalizer(normalizer, "gla_gate_backward");
  check_gate_dtypes(dx_dtype, g_in.dtype(), "gla_gate_backward", "g");
#ifdef HLA_WITH_CUDA
  if (g_in.device() == Device::CUDA)
    return cuda::gla_gate_backward(g_in, dg_in, normalizer, floor, dx_dtype);
#endif
  require_cpu(g_in, "gla_gate_backward");
  check_shape(dg_in, g_in.shape(), "gla_gate_backward", "dg");
  const Tensor g = g_in.contiguous(), dg = dg_in.to(g.dtype()).contiguous();
  return visit_floating(g.dtype(), "gla_gate_backward", [&]<class T>() {
    Tensor dx = Tensor::empty(g.shape(), g.dtype());
    const T* pg = g.data<T>();
    const T* pd = dg.data<T>();
    T* pdx = dx.data<T>();
    const T n_ = T(normalizer);
    const int64_t n = g.numel();
#pragma omp parallel for if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i)
      pdx[i] = pg[i] > T(floor) ? pd[i] * -std::expm1(n_ * pg[i]) / n_ : T(0);
    return dx.to(dx_dtype);
  });
}

}  // namespace hla::ops
