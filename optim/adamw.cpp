#include "optim/adamw.h"

#include <cmath>
#include <cstdint>
#include <map>

#include "autograd/grad_mode.h"
#include "kernels/ops.h"
#include "tensor/dtype_dispatch.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/optim_cuda.h"
#endif

namespace hla::optim {

AdamW::AdamW(std::vector<OptimParam> params, const AdamWOptions& options)
    : Optimizer(std::move(params)), options_(options) {
  const auto check_beta = [](double beta, const char* key) {
    if (!(beta >= 0.0 && beta < 1.0))
      throw Error("adamw", std::string(key) + " in [0, 1)", std::to_string(beta));
  };
  check_beta(options.beta1, "beta1");
  check_beta(options.beta2, "beta2");
  if (!(options.eps > 0.0)) throw Error("adamw", "eps > 0", std::to_string(options.eps));
  if (!(options.weight_decay >= 0.0))
    throw Error("adamw", "weight_decay >= 0", std::to_string(options.weight_decay));
  for (const OptimParam& p : params_) {
    exp_avg_.push_back(Tensor::zeros(p.var.shape(), p.var.dtype(), p.var.device()));
    exp_avg_sq_.push_back(Tensor::zeros(p.var.shape(), p.var.dtype(), p.var.device()));
  }
}

void AdamW::update(double lr, double grad_scale) {
  NoGradGuard no_grad;
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2, eps = options_.eps;
  const double bias1 = 1.0 - std::pow(b1, double(steps_));
  const double bias2 = 1.0 - std::pow(b2, double(steps_));
  [[maybe_unused]] const Device device = this->device("adamw");  // throws on mixed devices
#ifdef HLA_WITH_CUDA
  if (device == Device::CUDA) {
    // One multi-tensor launch per parameter dtype.
    std::map<DType, std::vector<cuda::AdamWSlot>> slots_by_dtype;
    for (size_t i = 0; i < params_.size(); ++i) {
      const OptimParam& p = params_[i];
      if (!p.var.grad().defined()) continue;
      const Tensor& w = p.var.data();
      cuda::AdamWSlot slot{w, p.var.grad().to(w.dtype()).contiguous(), exp_avg_[i],
                           exp_avg_sq_[i], p.decay};
      slots_by_dtype[w.dtype()].push_back(std::move(slot));
    }
    const cuda::AdamWScalars scalars{.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps,
                                     .weight_decay = options_.weight_decay,
                                     .bias1 = bias1, .bias2 = bias2, .grad_scale = grad_scale};
    for (const auto& [dtype, slots] : slots_by_dtype) cuda::adamw_step(slots, scalars);
    return;
  }
#endif
  for (size_t i = 0; i < params_.size(); ++i) {
    OptimParam& p = params_[i];
    if (!p.var.grad().defined()) continue;
    Tensor& w = p.var.mutable_data();
    ops::require_cpu(w, "adamw");
    const Tensor g = p.var.grad().to(w.dtype()).contiguous();
    const double decay = p.decay ? 1.0 - lr * options_.weight_decay : 1.0;
    visit_floating_or_bf16(w.dtype(), "adamw", [&]<class T>() {
      T* pw = w.data<T>();
      T* pm = exp_avg_[i].data<T>();
      T* pv = exp_avg_sq_[i].data<T>();
      const T* pg = g.data<T>();
      const int64_t n = w.numel();
      for (int64_t j = 0; j < n; ++j) {
        const double gj = convert<double>(pg[j]) * grad_scale;
        const double m = b1 * convert<double>(pm[j]) + (1.0 - b1) * gj;
        const double v = b2 * convert<double>(pv[j]) + (1.0 - b2) * gj * gj;
        pm[j] = convert<T>(m);
        pv[j] = convert<T>(v);
        const double m_hat = m / bias1, v_hat = v / bias2;
        pw[j] = convert<T>(decay * convert<double>(pw[j]) - lr * m_hat / (std::sqrt(v_hat) + eps));
      }
    });
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i)
    out.emplace_back("exp_avg/" + params_[i].name, exp_avg_[i]);
  for (size_t i = 0; i < params_.size(); ++i)
    out.emplace_back("exp_avg_sq/" + params_[i].name, exp_avg_sq_[i]);
  return out;
}

}  // namespace hla::optim
