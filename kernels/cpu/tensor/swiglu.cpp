// SwiGLU on CPU: y = silu(a) * b;  da = dy * b * silu'(a),  db = dy * silu(a),
// silu(a) = a s, silu'(a) = s (1 + a (1 - s)), s = sigmoid(a); the backward optionally y again.
#include <cmath>

#include "kernels/cpu/tensor/stable_math.h"
#include "kernels/ops.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif
#include "tensor/dtype_dispatch.h"

namespace hla::ops {

Tensor swiglu(const Tensor& a_in, const Tensor& b_in) {
#ifdef HLA_WITH_CUDA
  if (a_in.device() == Device::CUDA || b_in.device() == Device::CUDA) return cuda::swiglu(a_in, b_in);
#endif
  require_cpu(a_in, "swiglu");
  require_cpu(b_in, "swiglu");
  check_shape(b_in, a_in.shape(), "swiglu", "b");
  check_same_dtype(a_in, b_in, "swiglu");
  const Tensor a = a_in.contiguous(), b = b_in.contiguous();
  return visit_floating(a.dtype(), "swiglu", [&]<class T>() {
    Tensor y = Tensor::empty(a.shape(), a.dtype());
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* py = y.data<T>();
    const int64_t n = a.numel();
#pragma omp parallel for if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) py[i] = pa[i] * stable_sigmoid(pa[i]) * pb[i];
    return y;
  });
}

void swiglu_backward(const Tensor& a_in, const Tensor& b_in, const Tensor& dy_in, Tensor* da,
                     Tensor* db, Tensor* y) {
#ifdef HLA_WITH_CUDA
  if (a_in.device() == Device::CUDA) {
    cuda::swiglu_backward(a_in, b_in, dy_in, da, db, y);
    return;
  }
#endif
  require_cpu(a_in, "swiglu_backward");
  require_cpu(b_in, "swiglu_backward");
  require_cpu(dy_in, "swiglu_backward");
  check_shape(b_in, a_in.shape(), "swiglu_backward", "b");
  check_shape(dy_in, a_in.shape(), "swiglu_backward", "dy");
  check_same_dtype(a_in, b_in, "swiglu_backward");
  check_same_dtype(a_in, dy_in, "swiglu_backward");
  const Tensor a = a_in.contiguous(), b = b_in.contiguous(), dy = dy_in.contiguous();
  visit_floating(a.dtype(), "swiglu_backward", [&]<class T>() {
    Tensor dat = Tensor::empty(a.shape(), a.dtype()), dbt = Tensor::empty(a.shape(), a.dtype());
    Tensor yt = y ? Tensor::empty(a.shape(), a.dtype()) : Tensor();
    T* py = y ? yt.data<T>() : nullptr;
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    const T* pd = dy.data<T>();
    T* pda = dat.data<T>();
    T* pdb = dbt.data<T>();
    const int64_t n = a.numel();
#pragma omp parallel for if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) {
      const T s = stable_sigmoid(pa[i]);
      pda[i] = pd[i] * pb[i] * s * (T(1) + pa[i] * (T(1) - s));
      pdb[i] = pd[i] * pa[i] * s;
      if (py) py[i] = pa[i] * s * pb[i];
    }
    if (da) *da = dat;
    if (db) *db = dbt;
    if (y) *y = yt;
  });
}

}  // namespace hla::ops
