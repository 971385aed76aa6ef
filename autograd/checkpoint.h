// Activation checkpointing: memory for compute.
//
//   outs = checkpoint(fn, {a, b});
//
// returns fn({a, b}) but records one node that keeps only the inputs: fn runs with the graph
// off, so none of its intermediates stay alive until the backward. The node's backward runs fn
// again with the graph on (from leaves sharing the inputs' data) and backpropagates the
// outputs' gradients through that copy; the gradients are those of the plain graph, at the
// cost of a second forward of fn. fn must compute the same values when called again: a pure
// function of its inputs and of state it does not change (parameters captured by reference
// are fine; random draws inside are not). Inputs may be undefined Vars (optional arguments),
// passed through as such; outputs must be defined. Checkpoints nest.
#pragma once

#include <functional>
#include <vector>

#include "autograd/var.h"

namespace hla {

using CheckpointFn = std::function<std::vector<Var>(const std::vector<Var>&)>;

std::vector<Var> checkpoint(CheckpointFn fn, const std::vector<Var>& inputs,
                            const char* name = "checkpoint");

}  // namespace hla
