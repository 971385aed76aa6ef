// The backward pass: topological order over the Nodes reachable from the root (Kahn's
// algorithm on consumer counts), one backward call per Node, gradients summed per output and
// accumulated into leaves.
#include <unordered_map>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace hla {

namespace {

// a + b as a new tensor (gradients are values, never modified in place); undefined a is zero.
Tensor accumulate(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  return ops::binary(ops::Binary::Add, a, b);
}

void check_grad(const Tensor& g, const Var& input, const Node& node, size_t i) {
  if (!g.defined()) return;
  HLA_CHECK(g.shape() == input.shape() && g.dtype() == input.dtype(),
            node.name() << " backward returned a gradient for input " << i << " of shape "
                        << to_string(g.shape()) << " " << dtype_name(g.dtype())
                        << ", the input is " << to_string(input.shape()) << " "
                        << dtype_name(input.dtype()));
}

}  // namespace

void Var::backward(const Tensor& grad_in, bool retain_graph) const {
  if (!requires_grad())
    throw Error("backward", "a Var that requires grad", "one that does not",
                "set requires_grad on a leaf it depends on, outside any NoGradGuard");
  Tensor grad = grad_in;
  if (!grad.defined()) {
    if (numel() != 1)
      throw Error("backward", "an explicit gradient for a result with " +
                  std::to_string(numel()) + " elements", "none",
                  "reduce to a scalar loss first, or pass the gradient");
    grad = Tensor::ones(shape(), dtype(), device());
  }
  check_shape(grad, shape(), "backward", "gradient");
  NoGradGuard no_grad;  // backward rules compute with tensors and build no graph

  if (is_leaf()) {
    impl_->grad = accumulate(impl_->grad, grad);
    return;
  }

  // Count, for every reachable node, how many edges lead into it from other reachable nodes.
  std::unordered_map<Node*, int> consumers;
  std::vector<Node*> stack{impl_->grad_fn.get()};
  consumers[impl_->grad_fn.get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (n->released)
      throw Error("backward", "a graph whose saved tensors are still there",
                  "a second backward through " + std::string(n->name()),
                  "pass retain_graph=true to the first backward");
    for (const Var& in : n->inputs) {
      Node* p = in.grad_fn().get();
      if (!p) continue;
      auto [it, fresh] = consumers.try_emplace(p, 0);
      ++it->second;
      if (fresh) stack.push_back(p);
    }
  }

  std::unordered_map<Node*, std::vector<Tensor>> pending;
  pending[impl_->grad_fn.get()].resize(impl_->grad_fn->num_outputs);
  pending[impl_->grad_fn.get()][impl_->output_nr] = grad;
  std::vector<Node*> ready{impl_->grad_fn.get()};
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    std::vector<Tensor> gout = std::move(pending[n]);
    pending.erase(n);
    gout.resize(n->num_outputs);
    std::vector<Tensor> gin = n->backward(gout);
    HLA_CHECK(gin.size() == n->inputs.size(), n->name() << " backward returned " << gin.size()
                                                        << " gradients for " << n->inputs.size()
                                                        << " inputs");
    for (size_t i = 0; i < gin.size(); ++i) {
      const Var& in = n->inputs[i];
      if (!in.requires_grad()) continue;
      check_grad(gin[i], in, *n, i);
      Node* p = in.grad_fn().get();
      if (!p) {
        if (gin[i].defined()) const_cast<VarImpl*>(in.impl())->grad = accumulate(in.grad(), gin[i]);
        continue;
      }
      auto& slot = pending[p];
      slot.resize(p->num_outputs);
      if (gin[i].defined()) slot[in.output_nr()] = accumulate(slot[in.output_nr()], gin[i]);
      if (--consumers[p] == 0) ready.push_back(p);
    }
    if (!retain_graph) {
      n->release();
      n->released = true;
    }
  }
}

}  // namespace hla
