// Node: one recorded operation of the graph, with the inputs it read and the backward rule.
//
// Two kinds (style.md P5):
//   - PrimitiveNode (primitive.h): the ~30 primitive ops of ops.def; their derivative rules all
//     sit in one table, derivatives.cpp.
//   - Function nodes (autograd/functions/*.cpp): fused ops (each recurrence, attention, norms,
//     cross-entropy, SwiGLU, short conv) whose forward and backward sit in the same file.
//
// Contract for backward(grad_outputs):
//   grad_outputs[i] is dL/d(output i), undefined if that output did not reach the loss (treat
//   it as zero). Return one tensor per input, in input order: dL/d(input i) with the input's
//   shape and dtype, or undefined when needs_input_grad(i) is false or there is no gradient.
//   Only compute what needs_input_grad asks for. Never modify a tensor you were given.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "autograd/var.h"

namespace hla {

class Node {
 public:
  virtual ~Node() = default;
  virtual const char* name() const = 0;
  virtual std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) = 0;
  // Drops saved tensors once backward has run without retain_graph.
  virtual void release() {}

  bool needs_input_grad(size_t i) const { return i < inputs.size() && inputs[i].requires_grad(); }

  std::vector<Var> inputs;  // the edges of the graph
  int num_outputs = 1;
  bool released = false;
};

// True when the op about to run should be recorded: grad mode is on and an input requires grad.
bool should_record(const std::vector<Var>& inputs);

// Wraps outputs as Vars. If should_record(inputs), `node` gets the inputs and becomes the
// outputs' grad_fn; otherwise the outputs are plain leaves and the node is dropped.
std::vector<Var> record(std::shared_ptr<Node> node, std::vector<Var> inputs,
                        std::vector<Tensor> outputs);
Var record1(std::shared_ptr<Node> node, std::vector<Var> inputs, Tensor output);

// An observer of the backward pass, for tools that watch memory or time: called after each
// node's backward has run and its saved tensors were released, in the engine's order. One per
// thread; an empty function removes it. Returns the one it replaces.
using BackwardObserver = std::function<void(const Node&)>;
BackwardObserver set_backward_observer(BackwardObserver observer);

// An input whose values the node's backward never reads: a non-leaf enters as its edge alone
// (Var::edge_only), so its values are freed as soon as the forward drops them; a leaf (whose
// gradient accumulates into its Var) or an undefined input enters as it is.
inline Var without_values(const Var& x) { return x.defined() && !x.is_leaf() ? x.edge_only() : x; }

}  // namespace hla
