// PrimitiveNode: a recorded primitive op (ops.def) and the attributes its derivative needs.
// The derivative rules of every primitive live in one table: derivatives.cpp.
#pragma once

#include <string>

#include "autograd/node.h"

namespace hla {

enum class OpKind {
#define OP(kind, name, n_inputs) kind,
#include "autograd/ops.def"
#undef OP
  Count
};
const char* op_name(OpKind op);
// Whether op's derivative (derivatives.cpp) reads its inputs' values, or only their shapes and
// dtypes.
bool reads_input_values(OpKind op);

struct PrimitiveNode : Node {
  OpKind op;
  std::vector<Tensor> saved;       // tensors the rule reads besides the inputs (e.g. exp's y)
  std::vector<int64_t> ints;       // dims, permutation, slice start/step, ...
  double scalar = 0.0;             // pow exponent, scalar factor, ...
  Shape shape;                     // the input shape where the rule needs it

  explicit PrimitiveNode(OpKind op) : op(op) {}
  const char* name() const override { return op_name(op); }
  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override;
  void release() override { saved.clear(); }
};

}  // namespace hla
