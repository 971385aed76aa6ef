#include "optim/sgd.h"

#include "autograd/grad_mode.h"
#include "kernels/ops.h"
#include "tensor/dtype_dispatch.h"

namespace hla::optim {

Sgd::Sgd(std::vector<OptimParam> params, const SgdOptions& options)
    : Optimizer(std::move(params)), options_(options) {
  if (!(options.momentum >= 0.0 && options.momentum < 1.0))
    throw Error("sgd", "momentum in [0, 1)", std::to_string(options.momentum));
  if (!(options.weight_decay >= 0.0))
    throw Error("sgd", "weight_decay >= 0", std::to_string(options.weight_decay));
  if (options.momentum > 0.0)
    for (const OptimParam& p : params_)
      momentum_buffer_.push_back(Tensor::zeros(p.var.shape(), p.var.dtype(), p.var.device()));
}

void Sgd::update(double lr, double grad_scale) {
  NoGradGuard no_grad;
  const bool first_step = steps_ == 0;
  ++steps_;
  const double mu = options_.momentum;
  [[maybe_unused]] const Device device = this->device("sgd");  // throws on mixed devices
#ifdef HLA_WITH_CUDA
  if (device == Device::CUDA) {
    step_with_tensor_ops(lr, grad_scale, first_step);
    return;
  }
#endif
  for (size_t i = 0; i < params_.size(); ++i) {
    OptimParam& p = params_[i];
    if (!p.var.grad().defined()) continue;
    Tensor& w = p.var.mutable_data();
    ops::require_cpu(w, "sgd");
    const Tensor g = p.var.grad().to(w.dtype()).contiguous();
    const double wd = p.decay ? options_.weight_decay : 0.0;
    visit_floating(w.dtype(), "sgd", [&]<class T>() {
      T* pw = w.data<T>();
      const T* pg = g.data<T>();
      T* pb = mu > 0.0 ? momentum_buffer_[i].data<T>() : nullptr;
      const int64_t n = w.numel();
      for (int64_t j = 0; j < n; ++j) {
        const double gj = pg[j] * grad_scale + wd * pw[j];
        double d = gj;
        if (pb) {
          const double b = first_step ? gj : mu * pb[j] + gj;
          pb[j] = static_cast<T>(b);
          d = options_.nesterov ? gj + mu * b : b;
        }
        pw[j] = static_cast<T>(pw[j] - lr * d);
      }
    });
  }
}

// The same update composed of tensor ops (any device; used for CUDA parameters), computed in the
// parameter's dtype rather than in double per element.
void Sgd::step_with_tensor_ops(double lr, double grad_scale, bool first_step) {
  using ops::Binary;
  const double mu = options_.momentum;
  for (size_t i = 0; i < params_.size(); ++i) {
    OptimParam& p = params_[i];
    if (!p.var.grad().defined()) continue;
    Tensor& w = p.var.mutable_data();
    Tensor g = p.var.grad().to(w.dtype());
    if (grad_scale != 1.0) g = ops::mul_scalar(g, grad_scale);
    const double wd = p.decay ? options_.weight_decay : 0.0;
    if (wd > 0.0) g = ops::binary(Binary::Add, g, ops::mul_scalar(w, wd));
    Tensor d = g;
    if (mu > 0.0) {
      Tensor& buffer = momentum_buffer_[i];
      const Tensor b =
          first_step ? g : ops::binary(Binary::Add, ops::mul_scalar(buffer, mu), g);
      buffer.copy_(b);
      d = options_.nesterov ? ops::binary(Binary::Add, g, ops::mul_scalar(b, mu)) : b;
    }
    w.copy_(ops::binary(Binary::Sub, w, ops::mul_scalar(d, lr)));  // in place: storage shared
  }
}

std::vector<std::pair<std::string, Tensor>> Sgd::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < momentum_buffer_.size(); ++i)
    out.emplace_back("momentum_buffer/" + params_[i].name, momentum_buffer_[i]);
  return out;
}

}  // namespace hla::optim
