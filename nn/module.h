// Module: a node of the model tree that owns named parameters and child modules.
//
//   struct Mlp : Module {
//     Mlp(int64_t d, Generator& gen) {
//       w = register_parameter("weight", Tensor::randn({d, d}, gen, DType::f32, 0, 0.02));
//     }
//     Var w;
//   };
//
// Names are dotted paths built from registration names, exactly as fla's state dicts spell them
// (model.layers.3.attn.q_proj.weight). Parameters are leaf Vars that require grad.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/var.h"

namespace hla::nn {

class Module {
 public:
  virtual ~Module() = default;

  // Every parameter of this module and its children, in registration order, with dotted names.
  std::vector<std::pair<std::string, Var>> named_parameters() const;
  std::vector<Var> parameters() const;
  int64_t num_parameters() const;

  // Converts every parameter to `dtype` in place (e.g. f64 for gradient and parity checks).
  void to(DType dtype);
  // Moves every parameter to `device` in place (the same leaf Vars, new storage): build on the
  // CPU, then model.to(Device::CUDA) before creating the optimizer.
  void to(Device device);

  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

  // name -> the parameter's tensor (shared, not copied).
  std::map<std::string, Tensor> state_dict() const;
  // Copies values in by name. Throws hla::Error listing missing and unknown names (strict) or
  // shape mismatches; converts dtypes.
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

 protected:
  Var register_parameter(const std::string& name, Tensor value);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    children_.emplace_back(name, module);
    return module;
  }

 private:
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Var>>& out) const;
  std::vector<std::pair<std::string, Var>> params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace hla::nn
