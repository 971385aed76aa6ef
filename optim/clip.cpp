#include "optim/clip.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "kernels/ops.h"
#include "optim/device.h"
#include "tensor/dtype_dispatch.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/optim_cuda.h"
#endif

namespace hla::optim {

double grad_norm(const std::vector<Var>& params) {
  [[maybe_unused]] const Device device = parameters_device(params, "clip_grad_norm");
#ifdef HLA_WITH_CUDA
  if (device == Device::CUDA) {
    std::vector<Tensor> grads;
    for (const Var& p : params)
      if (p.grad().defined()) grads.push_back(p.grad().contiguous());
    return std::sqrt(cuda::sum_of_squares(grads));  // one device-to-host copy
  }
#endif
  double sum_sq = 0.0;
  for (const Var& p : params) {
    if (!p.grad().defined()) continue;
    const Tensor g = p.grad().contiguous();
    ops::require_cpu(g, "clip_grad_norm");
    visit_floating_or_bf16(g.dtype(), "clip_grad_norm", [&]<class T>() {
      const T* pg = g.data<T>();
      for (int64_t j = 0; j < g.numel(); ++j) {
        const double x = convert<double>(pg[j]);
        sum_sq += x * x;
      }
    });
  }
  return std::sqrt(sum_sq);
}

double clip_coefficient(double norm, double max_norm) {
  if (!(max_norm > 0.0))
    throw Error("clip_coefficient", "max_norm > 0", std::to_string(max_norm),
                "max_norm is the largest global gradient norm let through "
                "(optim.grad_clip = 0: no clipping)");
  return std::isfinite(norm) && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0;
}

double clip_grad_norm(const std::vector<Var>& params, double max_norm) {
  const double norm = grad_norm(params);
  const double scale = clip_coefficient(norm, max_norm);
  if (scale == 1.0) return norm;
  NoGradGuard no_grad;
  for (Var p : params)  // a Var is a handle: the copy shares the parameter
    if (p.grad().defined()) p.set_grad(ops::mul_scalar(p.grad(), scale));
  return norm;
}

}  // namespace hla::optim
