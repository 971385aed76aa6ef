// The backward pass: topological order over the Nodes reachable from the roots (Kahn's
// algorithm on consumer counts), one backward call per Node, gradients summed per output and
// accumulated into leaves. Without retain_graph a node drops what it saved and its inputs'
// values as soon as it has run, so activations are freed as the pass goes.
#include <unordered_map>
#include <utility>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace hla {

namespace {

thread_local BackwardObserver observer;

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

BackwardObserver set_backward_observer(BackwardObserver f) {
  std::swap(observer, f);
  return f;
}

void Var::backward(const Tensor& grad, bool retain_graph) const {
  hla::backward({*this}, {grad}, retain_graph);
}

void backward(const std::vector<Var>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  HLA_CHECK(roots.size() == grads.size(),
            "backward: " << roots.size() << " roots and " << grads.size() << " gradients");
  NoGradGuard no_grad;  // backward rules compute with tensors and build no graph

  // The roots' gradients: into leaves directly, else into their nodes' output slots.
  std::unordered_map<Node*, std::vector<Tensor>> pending;
  std::vector<Node*> starts;
  for (size_t r = 0; r < roots.size(); ++r) {
    const Var& root = roots[r];
    if (!root.requires_grad())
      throw Error("backward", "a Var that requires grad", "one that does not",
                  "set requires_grad on a leaf it depends on, outside any NoGradGuard");
    Tensor grad = grads[r];
    if (!grad.defined()) {
      if (root.numel() != 1)
        throw Error(
            "backward",
            "an explicit gradient for a result with " + std::to_string(root.numel()) + " elements",
            "none", "reduce to a scalar loss first, or pass the gradient");
      grad = Tensor::ones(root.shape(), root.dtype(), root.device());
    }
    check_shape(grad, root.shape(), "backward", "gradient");
    if (root.is_leaf()) {
      const_cast<VarImpl*>(root.impl())->grad = accumulate(root.grad(), grad);
      continue;
    }
    Node* n = root.grad_fn().get();
    auto [slot, fresh] = pending.try_emplace(n);
    if (fresh) starts.push_back(n);
    slot->second.resize(n->num_outputs);
    slot->second[root.output_nr()] = accumulate(slot->second[root.output_nr()], grad);
  }
  if (starts.empty()) return;

  // Count, for every reachable node, how many edges lead into it from other reachable nodes.
  std::unordered_map<Node*, int> consumers;
  std::vector<Node*> stack = starts;
  for (Node* n : starts) consumers[n] = 0;
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

  std::vector<Node*> ready;
  for (Node* n : starts)
    if (consumers[n] == 0) ready.push_back(n);
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
      // Its inputs' values too: nothing reads them again, and the graph, alive while its root
      // is, would otherwise hold every activation to the end of the pass, under the gradients.
      for (Var& in : n->inputs) in = without_values(in);
    }
    if (observer) observer(*n);
  }
}

}  // namespace hla
