#include "autograd/var.h"

#include <map>
#include <utility>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace hla {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool on) { g_grad_enabled = on; }

Var::Var(Tensor data, bool requires_grad) : impl_(std::make_shared<VarImpl>()) {
  check_defined(data, "Var", "data");
  if (requires_grad && !is_floating(data.dtype()))
    throw Error("Var", "a floating-point tensor to require grad", dtype_name(data.dtype()),
                "indices and token ids cannot have gradients");
  impl_->data = std::move(data);
  impl_->requires_grad = requires_grad;
}

Var::Var(Tensor data, std::shared_ptr<Node> grad_fn, int output_nr)
    : impl_(std::make_shared<VarImpl>()) {
  impl_->data = std::move(data);
  impl_->requires_grad = true;
  impl_->grad_fn = std::move(grad_fn);
  impl_->output_nr = output_nr;
}

Var Var::edge_only() const {
  HLA_CHECK(defined() && !is_leaf(), "edge_only: a non-leaf Var");
  // One zero per (dtype, device) and graph-building thread, shared by its edges: no allocation
  // and no lock per node. Never destroyed (as the CUDA context): a device tensor freed during
  // static destruction could outlive it.
  thread_local auto* zeros = new std::map<std::pair<DType, Device>, Tensor>();
  Tensor& zero = (*zeros)[{dtype(), device()}];
  if (!zero.defined()) zero = Tensor::zeros({}, dtype(), device());
  return Var(zero.expand(shape()), impl_->grad_fn, impl_->output_nr);
}

const Tensor& Var::data() const {
  if (!impl_) throw Error("Var", "a defined Var", "an empty Var", "was it default-constructed?");
  return impl_->data;
}
Tensor& Var::mutable_data() {
  if (!impl_) throw Error("Var", "a defined Var", "an empty Var");
  return impl_->data;
}
const Tensor& Var::grad() const {
  static const Tensor none;
  return impl_ ? impl_->grad : none;
}
void Var::set_grad(const Tensor& g) const {
  if (g.defined()) check_shape(g, data().shape(), "Var::set_grad", "gradient");
  impl_->grad = g;
}
void Var::zero_grad() const {
  if (impl_) impl_->grad = Tensor();
}

Var& Var::set_requires_grad(bool on) {
  if (!is_leaf())
    throw Error("set_requires_grad", "a leaf Var", "the result of " +
                std::string(impl_->grad_fn->name()), "call detach() first");
  if (on && !is_floating(data().dtype()))
    throw Error("set_requires_grad", "a floating-point tensor", dtype_name(data().dtype()));
  impl_->requires_grad = on;
  return *this;
}

const std::shared_ptr<Node>& Var::grad_fn() const {
  static const std::shared_ptr<Node> none;
  return impl_ ? impl_->grad_fn : none;
}

Var Var::detach() const { return Var(data(), false); }

bool should_record(const std::vector<Var>& inputs) {
  if (!grad_enabled()) return false;
  for (const Var& v : inputs)
    if (v.requires_grad()) return true;
  return false;
}

std::vector<Var> record(std::shared_ptr<Node> node, std::vector<Var> inputs,
                        std::vector<Tensor> outputs) {
  std::vector<Var> out;
  out.reserve(outputs.size());
  if (!should_record(inputs)) {
    for (Tensor& t : outputs) out.emplace_back(std::move(t));
    return out;
  }
  node->inputs = std::move(inputs);
  node->num_outputs = static_cast<int>(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i)
    out.emplace_back(std::move(outputs[i]), node, static_cast<int>(i));
  return out;
}

Var record1(std::shared_ptr<Node> node, std::vector<Var> inputs, Tensor output) {
  return record(std::move(node), std::move(inputs), {std::move(output)})[0];
}

}  // namespace hla
