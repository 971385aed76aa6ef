// The HGRN / HGRN2 forget gate on CPU (kernels/ops.h): for x [..., D] and a lower bound lb [D]
// (or none: lb = 0),
//   s = sigmoid(x),  f = lb + (1 - lb) s,  log_f = log f  (logsigmoid(x), exactly, where lb = 0),
//   one_minus_f = (1 - lb) sigmoid(-x)
// and from the gradients of log_f and one_minus_f (either may be undefined: zeros),
//   dx  = dlog_f (1 - s)(1 - lb / f) - d_one_minus_f (1 - lb) s (1 - s)
//   dlb = sum over the leading dims of (dlog_f / f - d_one_minus_f)(1 - s).
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/tensor/stable_math.h"
#include "kernels/ops.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif
#include "tensor/dtype_dispatch.h"

namespace hla::ops {

namespace {

// The lower bound as a contiguous tensor of x's dtype [D] (zeros when undefined).
Tensor bound_of(const Tensor& x, const Tensor& lb, const char* op) {
  const int64_t D = x.size(x.dim() - 1);
  if (!lb.defined()) return Tensor::zeros({D}, x.dtype());
  require_cpu(lb, op);
  if (lb.dim() != 1 || lb.size(0) != D)
    throw Error(op, "lower bound [" + std::to_string(D) + "] (the gate's last dim)",
                to_string(lb.shape()));
  return lb.to(x.dtype()).contiguous();
}

}  // namespace

void forget_gate(const Tensor& x_in, const Tensor& lb_in, Tensor* log_f, Tensor* one_minus_f,
                 DType log_f_dtype) {
#ifdef HLA_WITH_CUDA
  if (x_in.device() == Device::CUDA) {
    cuda::forget_gate(x_in, lb_in, log_f, one_minus_f, log_f_dtype);
    return;
  }
#endif
  require_cpu(x_in, "forget_gate");
  if (log_f_dtype != x_in.dtype())
    throw Error("forget_gate", std::string("log_f of x's dtype ") + dtype_name(x_in.dtype()) +
                                   " (or f32 for bf16 x, on cuda)",
                dtype_name(log_f_dtype));
  if (x_in.dim() < 1) throw Error("forget_gate", "gate logits x [..., D]", to_string(x_in.shape()));
  const Tensor x = x_in.contiguous(), lb = bound_of(x, lb_in, "forget_gate");
  visit_floating(x.dtype(), "forget_gate", [&]<class T>() {
    Tensor lf = Tensor::empty(x.shape(), x.dtype()), om = Tensor::empty(x.shape(), x.dtype());
    const T* px = x.data<T>();
    const T* pb = lb.data<T>();
    T* plf = lf.data<T>();
    T* pom = om.data<T>();
    const int64_t n = x.numel(), D = lb.numel();
#pragma omp parallel for if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) {
      const T b = pb[i % D], s = stable_sigmoid(px[i]);
      plf[i] = b != T(0) ? std::log(b + (T(1) - b) * s) : stable_log_sigmoid(px[i]);
      pom[i] = (T(1) - b) * stable_sigmoid(-px[i]);
    }
    *log_f = lf;
    *one_minus_f = om;
  });
}

void forget_gate_backward(const Tensor& x_in, const Tensor& lb_in, const Tensor& dlog_f_in,
                          const Tensor& d_one_minus_f_in, Tensor* dx, Tensor* dlb) {
#ifdef HLA_WITH_CUDA
  if (x_in.device() == Device::CUDA) {
    cuda::forget_gate_backward(x_in, lb_in, dlog_f_in, d_one_minus_f_in, dx, dlb);
    return;
  }
#endif
  const char* op = "forget_gate_backward";
  require_cpu(x_in, op);
  if (x_in.dim() < 1) throw Error(op, "gate logits x [..., D]", to_string(x_in.shape()));
  const Tensor x = x_in.contiguous(), lb = bound_of(x, lb_in, op);
  auto grad_or_zeros = [&](const Tensor& g) {
    if (!g.defined()) return Tensor::zeros(x.shape(), x.dtype());
    check_shape(g, x.shape(), op, "gradient");
    return g.to(x.dtype()).contiguous();
  };
  const Tensor gl = grad_or_zeros(dlog_f_in), go = grad_or_zeros(d_one_minus_f_in);
  visit_floating(x.dtype(), op, [&]<class T>() {
    Tensor dxt = Tensor::empty(x.shape(), x.dtype());
    const T* px = x.data<T>();
    const T* pb = lb.data<T>();
    const T* pgl = gl.data<T>();
    const T* pgo = go.data<T>();
    T* pdx = dxt.data<T>();
    const int64_t n = x.numel(), D = lb.numel();
    std::vector<double> bound_grad(D, 0.0);
#pragma omp parallel for if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) {
      const T b = pb[i % D], s = stable_sigmoid(px[i]), f = b + (T(1) - b) * s;
      const T ratio = b != T(0) ? b / f : T(0);
      pdx[i] = pgl[i] * (T(1) - s) * (T(1) - ratio) - pgo[i] * (T(1) - b) * s * (T(1) - s);
    }
    if (dx) *dx = dxt;
    if (!dlb || !lb_in.defined()) return;
    for (int64_t i = 0; i < n; ++i) {
      const T b = pb[i % D], s = stable_sigmoid(px[i]), f = b + (T(1) - b) * s;
      bound_grad[i % D] += double((pgl[i] / f - pgo[i]) * (T(1) - s));
    }
    *dlb = Tensor::from_values(bound_grad, {D}, x.dtype()).to(lb_in.dtype());
  });
}

}  // namespace hla::ops
