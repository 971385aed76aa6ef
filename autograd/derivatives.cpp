// The derivative table: one rule per primitive op of ops.def, in terms of the output gradient g,
// the inputs x (a, b) and what the forward saved. Broadcasting ops reduce their gradients back
// to the input shapes with sum_to. Compare PyTorch's derivatives.yaml or tinygrad's pm_gradient.
#include "autograd/primitive.h"
#include "kernels/ops.h"

namespace hla {

using namespace ops;

const char* op_name(OpKind op) {
  static const char* names[] = {
#define OP(kind, name, n_inputs) name,
#include "autograd/ops.def"
#undef OP
  };
  static_assert(sizeof(names) / sizeof(names[0]) == static_cast<size_t>(OpKind::Count),
                "every op of ops.def needs a name");
  return names[static_cast<int>(op)];
}

bool reads_input_values(OpKind op) {
  switch (op) {  // the rules below that use only x(i)'s shape, numel and dtype
    case OpKind::Add: case OpKind::Sub: case OpKind::Neg: case OpKind::AddScalar:
    case OpKind::MulScalar: case OpKind::Where: case OpKind::Sum: case OpKind::Mean:
    case OpKind::Reshape: case OpKind::Permute: case OpKind::Slice: case OpKind::Expand:
    case OpKind::Concat: case OpKind::IndexSelect: case OpKind::Gather: case OpKind::ToDtype:
      return false;
    default: return true;
  }
}

namespace {
Tensor mul(const Tensor& a, const Tensor& b) { return binary(Binary::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(Binary::Div, a, b); }
Tensor neg(const Tensor& a) { return unary(Unary::Neg, a); }
// The output gradient re-expanded over the reduced dims of a sum/mean/max with `keepdim`.
Tensor unreduce(const Tensor& g, const Shape& in_shape, const std::vector<int64_t>& dims,
                bool keepdim) {
  Shape kept = in_shape;
  for (int64_t d : dims) kept[wrap_dim(d, static_cast<int64_t>(in_shape.size()), "sum")] = 1;
  (void)keepdim;
  return g.reshape(kept).expand(in_shape);
}
}  // namespace

std::vector<Tensor> PrimitiveNode::backward(const std::vector<Tensor>& grad_outputs) {
  const Tensor& g = grad_outputs[0];
  const size_t n_in = inputs.size();
  std::vector<Tensor> gi(n_in);
  if (!g.defined()) return gi;
  auto x = [&](size_t i) -> const Tensor& { return inputs[i].data(); };
  auto need = [&](size_t i) { return needs_input_grad(i); };

  switch (op) {
    case OpKind::Add:
      if (need(0)) gi[0] = sum_to(g, x(0).shape());
      if (need(1)) gi[1] = sum_to(g, x(1).shape());
      break;
    case OpKind::Sub:
      if (need(0)) gi[0] = sum_to(g, x(0).shape());
      if (need(1)) gi[1] = sum_to(neg(g), x(1).shape());
      break;
    case OpKind::Mul:
      if (need(0)) gi[0] = sum_to(mul(g, x(1)), x(0).shape());
      if (need(1)) gi[1] = sum_to(mul(g, x(0)), x(1).shape());
      break;
    case OpKind::Div:  // d(a/b) = g/b, -g a / b^2
      if (need(0)) gi[0] = sum_to(div(g, x(1)), x(0).shape());
      if (need(1))
        gi[1] = sum_to(neg(div(mul(g, x(0)), unary(Unary::Square, x(1)))), x(1).shape());
      break;
    case OpKind::Maximum: {  // ties send the gradient to a
      const Tensor a_wins = binary(Binary::Ge, x(0), x(1));
      if (need(0)) gi[0] = sum_to(mul(g, a_wins), x(0).shape());
      if (need(1)) gi[1] = sum_to(mul(g, add_scalar(neg(a_wins), 1.0)), x(1).shape());
      break;
    }
    case OpKind::Neg: gi[0] = neg(g); break;
    case OpKind::Exp: gi[0] = mul(g, saved[0]); break;                  // y = e^x
    case OpKind::Log: gi[0] = div(g, x(0)); break;
    case OpKind::Sqrt: gi[0] = mul_scalar(div(g, saved[0]), 0.5); break;  // y = sqrt x
    case OpKind::Rsqrt:                                                  // -1/2 y^3
      gi[0] = mul(g, mul_scalar(pow_scalar(saved[0], 3.0), -0.5));
      break;
    case OpKind::Sigmoid:  // y (1 - y)
      gi[0] = mul(g, mul(saved[0], add_scalar(neg(saved[0]), 1.0)));
      break;
    case OpKind::Tanh:  // 1 - y^2
      gi[0] = mul(g, add_scalar(neg(unary(Unary::Square, saved[0])), 1.0));
      break;
    case OpKind::Abs: gi[0] = mul(g, unary(Unary::Sign, x(0))); break;
    case OpKind::Relu: gi[0] = mul(g, unary(Unary::Step, x(0))); break;
    case OpKind::Log1p: gi[0] = div(g, add_scalar(x(0), 1.0)); break;
    case OpKind::Silu:  // g s (1 + x (1 - s)), s = sigmoid(x): one elementwise pass
      gi[0] = binary(Binary::SiluBackward, x(0), g);
      break;
    case OpKind::Softplus:
      gi[0] = mul(g, unary(Unary::Sigmoid, x(0)));
      break;
    case OpKind::LogSigmoid:
      gi[0] = mul(g, unary(Unary::Sigmoid, neg(x(0))));
      break;
    case OpKind::PowScalar:  // p x^(p-1)
      gi[0] = mul(g, mul_scalar(pow_scalar(x(0), scalar - 1.0), scalar));
      break;
    case OpKind::AddScalar: gi[0] = g; break;
    case OpKind::MulScalar: gi[0] = mul_scalar(g, scalar); break;
    case OpKind::Where: {  // saved[0] = condition (not differentiable)
      const Tensor zero = Tensor::zeros({}, g.dtype(), g.device());
      if (need(0)) gi[0] = sum_to(where(saved[0], g, zero), x(0).shape());
      if (need(1)) gi[1] = sum_to(where(saved[0], zero, g), x(1).shape());
      break;
    }
    case OpKind::Matmul:  // C = A B: dA = g B^T, dB = A^T g (batch dims summed back)
      if (need(0)) gi[0] = sum_to(matmul(g, x(1).transpose(-1, -2)), x(0).shape());
      if (need(1)) {
        // A matrix B stored transposed (Linear's W^T) gets dB in that layout, (g^T A)^T, so that
        // the gradient reaching W [out, in] is contiguous, not a strided copy's input
        const Tensor& b = x(1);
        const bool b_transposed = b.dim() == 2 && x(0).dim() == 2 && b.strides()[0] == 1 &&
                                  b.strides()[1] == b.size(0);
        gi[1] = b_transposed ? matmul(g.transpose(-1, -2), x(0)).transpose(-1, -2)
                             : sum_to(matmul(x(0).transpose(-1, -2), g), b.shape());
      }
      break;
    case OpKind::Sum: gi[0] = unreduce(g, x(0).shape(), ints, false); break;
    case OpKind::Mean: {
      const double count = static_cast<double>(x(0).numel()) /
                           static_cast<double>(std::max<int64_t>(g.numel(), 1));
      gi[0] = unreduce(mul_scalar(g, 1.0 / count), x(0).shape(), ints, false);
      break;
    }
    case OpKind::Max: {  // shared evenly among the maxima
      const Tensor y = unreduce(saved[0], x(0).shape(), ints, false);
      const Tensor mask = binary(Binary::Eq, x(0), y);
      const Tensor count = unreduce(sum(mask, ints, true), x(0).shape(), ints, true);
      gi[0] = mul(div(mask, count), unreduce(g, x(0).shape(), ints, false));
      break;
    }
    case OpKind::Reshape: gi[0] = g.reshape(x(0).shape()); break;
    case OpKind::Permute: {
      std::vector<int64_t> inv(ints.size());
      for (size_t i = 0; i < ints.size(); ++i) inv[ints[i]] = static_cast<int64_t>(i);
      gi[0] = g.permute(inv);
      break;
    }
    case OpKind::Slice:  // ints = {dim, start, step}
      gi[0] = slice_backward(g, x(0).shape(), ints[0], ints[1], ints[2]);
      break;
    case OpKind::Expand: gi[0] = sum_to(g, x(0).shape()); break;
    case OpKind::Concat: {  // ints = {dim}
      int64_t at = 0;
      for (size_t i = 0; i < n_in; ++i) {
        const int64_t len = x(i).shape()[ints[0]];
        if (need(i)) gi[i] = g.slice(ints[0], at, at + len);
        at += len;
      }
      break;
    }
    case OpKind::IndexSelect:  // ints = {dim}, saved[0] = index
      gi[0] = index_add(x(0).shape(), ints[0], saved[0], g);
      break;
    case OpKind::Gather:  // ints = {dim}, saved[0] = index
      gi[0] = scatter_add(x(0).shape(), ints[0], saved[0], g);
      break;
    case OpKind::ToDtype:  // the gradient in the input's dtype (f32 master weights get f32)
      gi[0] = g.to(x(0).dtype());
      break;
    case OpKind::Count: break;
  }
  return gi;
}

}  // namespace hla
