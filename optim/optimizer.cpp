#include "optim/optimizer.h"

#include <cmath>
#include <string>

#include "optim/device.h"
#include "tensor/error.h"

namespace hla::optim {

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
// The last dotted component of the module path: "model.layers.0.attn_norm.weight" -> "attn_norm".
std::string owner_module(const std::string& name) {
  const size_t last = name.rfind('.');
  if (last == std::string::npos) return "";
  const size_t before = name.rfind('.', last - 1);
  return name.substr(before == std::string::npos ? 0 : before + 1,
                     last - (before == std::string::npos ? 0 : before + 1));
}
}  // namespace

bool takes_weight_decay(const std::string& name) {
  if (ends_with(name, ".bias") || ends_with(name, "A_log") || ends_with(name, "dt_bias") ||
      ends_with(name, "lower_bounds"))
    return false;
  return owner_module(name).find("norm") == std::string::npos;
}

std::vector<OptimParam> optim_params(const std::vector<std::pair<std::string, Var>>& named) {
  std::vector<OptimParam> out;
  out.reserve(named.size());
  for (const auto& [name, var] : named) out.push_back({name, var, takes_weight_decay(name)});
  return out;
}

Optimizer::Optimizer(std::vector<OptimParam> params) : params_(std::move(params)) {
  for (const OptimParam& p : params_) {
    if (!p.var.defined() || !p.var.is_leaf() || !p.var.requires_grad())
      throw Error("optimizer", "parameters that are leaf Vars requiring grad",
                  "'" + p.name + "' is not", "pass module.named_parameters()");
    if (!p.var.data().is_contiguous())
      throw Error("optimizer", "contiguous parameters", "a strided view for '" + p.name + "'");
  }
}

Device Optimizer::device(const char* op) const {
  std::vector<Var> vars;
  vars.reserve(params_.size());
  for (const OptimParam& p : params_) vars.push_back(p.var);
  return parameters_device(vars, op);
}

void Optimizer::step(double lr, double grad_scale) {
  if (!(std::isfinite(grad_scale) && grad_scale > 0.0))
    throw Error("optimizer step", "a finite grad_scale > 0", std::to_string(grad_scale),
                "pass optim::clip_coefficient(norm, max_norm), which is 1 for a non-finite norm");
  update(lr, grad_scale);
}

void Optimizer::zero_grad() {
  for (OptimParam& p : params_) p.var.zero_grad();
}

void Optimizer::load_state(const std::map<std::string, Tensor>& state, int64_t steps) {
  for (auto& [name, tensor] : this->state()) {
    const auto it = state.find(name);
    if (it == state.end())
      throw Error("optimizer state", "a tensor named '" + name + "'", "none",
                  "the checkpoint was written by another optimizer or model");
    if (!it->second.same_shape(tensor))
      throw Error("optimizer state", "'" + name + "' of shape " + to_string(tensor.shape()),
                  to_string(it->second.shape()));
    Tensor dst = tensor;
    dst.copy_(it->second);
  }
  steps_ = steps;
}

}  // namespace hla::optim
