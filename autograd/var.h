// Var: a tensor that takes part in reverse-mode automatic differentiation (define-by-run).
//
// The graph model
//   Every op on Vars computes its result eagerly with the kernels (kernels/ops.h). If grad mode
//   is on (grad_mode.h) and some input requires grad, it also creates a Node that remembers its
//   inputs (as Vars, which keeps them alive until its backward has run) and whatever its
//   backward needs. The result's grad_fn points at that Node. A node whose derivative reads
//   only its inputs' shapes (add, sum, the views, to_dtype, rotary, ...) keeps its non-leaf
//   inputs as edges without values (edge_only), so what only such ops consume is freed when
//   the forward drops it. Leaves are
//   Vars made by the user (parameters, inputs); they have no grad_fn, and backward()
//   accumulates into their grad().
//
// The backward contract (autograd/node.h)
//   - gradients of leaves and of Vars used several times are ACCUMULATED (summed);
//   - a Node's backward receives one gradient per output (undefined = zero) and returns one per
//     input (undefined = no gradient), each with that input's shape and dtype;
//   - gradients are values: nothing ever modifies a gradient tensor in place, so several Vars
//     may share one;
//   - without retain_graph, backward frees what the Nodes saved; a second backward through the
//     same graph then throws.
//
//   Var w(Tensor::randn({3, 3}, gen, DType::f64), /*requires_grad=*/true);
//   Var loss = sum(exp(matmul(x, w)));
//   loss.backward();            // w.grad() now holds d loss / d w
#pragma once

#include <memory>
#include <string>

#include "tensor/tensor.h"

namespace hla {

class Node;

struct VarImpl {
  Tensor data;
  Tensor grad;
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // null for leaves
  int output_nr = 0;              // which output of grad_fn this is
};

class Var {
 public:
  Var() = default;
  // A leaf holding `data`.
  explicit Var(Tensor data, bool requires_grad = false);
  // A non-leaf: output `output_nr` of `grad_fn`.
  Var(Tensor data, std::shared_ptr<Node> grad_fn, int output_nr);

  bool defined() const { return impl_ != nullptr; }
  const Tensor& data() const;
  // In-place access for optimizers and initialisers (leaves only; never inside a graph).
  Tensor& mutable_data();
  const Tensor& grad() const;
  void set_grad(const Tensor& g) const;
  void zero_grad() const;

  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  Var& set_requires_grad(bool on);  // leaves only
  bool is_leaf() const { return !impl_ || !impl_->grad_fn; }
  const std::shared_ptr<Node>& grad_fn() const;
  int output_nr() const { return impl_ ? impl_->output_nr : 0; }

  // Backpropagates from this Var. `grad` defaults to 1 for one-element results.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;
  // The same data, cut from the graph (a new leaf that does not require grad).
  Var detach() const;
  // The same graph edge (grad_fn, output_nr) without the values, for a non-leaf: its data is a
  // stride-0 view of one zero with this Var's shape, dtype and device. Nodes whose derivative
  // reads only their inputs' shapes keep non-leaf inputs this way (autograd/primitives.cpp).
  Var edge_only() const;

  // ---- shorthands for data()
  const Shape& shape() const { return data().shape(); }
  int64_t dim() const { return data().dim(); }
  int64_t size(int64_t d) const { return data().size(d); }
  int64_t numel() const { return data().numel(); }
  DType dtype() const { return data().dtype(); }
  Device device() const { return data().device(); }
  double item() const { return data().item(); }

  bool same(const Var& o) const { return impl_ == o.impl_; }
  const VarImpl* impl() const { return impl_.get(); }

 private:
  std::shared_ptr<VarImpl> impl_;
};

// Backpropagates from several results at once, grads[i] the gradient of roots[i] (undefined:
// 1 for a one-element root), each Node of their common graph run once.
void backward(const std::vector<Var>& roots, const std::vector<Tensor>& grads,
              bool retain_graph = false);

}  // namespace hla
