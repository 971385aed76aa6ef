// Forward of each primitive: compute with the kernels, record a PrimitiveNode when needed.
#include "autograd/primitives.h"

#include "autograd/primitive.h"
#include "kernels/ops.h"

namespace hla {

namespace {

std::shared_ptr<PrimitiveNode> node(OpKind op) { return std::make_shared<PrimitiveNode>(op); }

// Records the primitive. When its derivative reads only the inputs' shapes (add, the views,
// to_dtype, ...), the node keeps its non-leaf inputs as edges without values (Var::edge_only),
// so an activation consumed only by such ops (a residual branch's output, the bf16 source of a
// cast) is freed after the forward: saved for the backward is only what a rule reads. Leaves keep
// their Var, which their gradients accumulate into.
Var recorded(const std::shared_ptr<PrimitiveNode>& n, std::vector<Var> inputs, Tensor y) {
  Var out = record1(n, std::move(inputs), std::move(y));
  if (!reads_input_values(n->op))
    for (Var& in : n->inputs) in = without_values(in);
  return out;
}

Var unary_op(OpKind kind, ops::Unary u, const Var& x, bool save_output) {
  Tensor y = ops::unary(u, x.data());
  auto n = node(kind);
  if (save_output && should_record({x})) n->saved = {y};
  return recorded(n, {x}, y);
}

Var binary_op(OpKind kind, ops::Binary b, const Var& x, const Var& y) {
  return recorded(node(kind), {x, y}, ops::binary(b, x.data(), y.data()));
}

std::vector<int64_t> wrapped(const std::vector<int64_t>& dims, int64_t rank, const char* op) {
  std::vector<int64_t> w;
  for (int64_t d : dims) w.push_back(wrap_dim(d, rank, op));
  return w;
}

std::vector<int64_t> all_dims(int64_t rank) {
  std::vector<int64_t> d(rank);
  for (int64_t i = 0; i < rank; ++i) d[i] = i;
  return d;
}

}  // namespace

Var add(const Var& a, const Var& b) { return binary_op(OpKind::Add, ops::Binary::Add, a, b); }
Var sub(const Var& a, const Var& b) { return binary_op(OpKind::Sub, ops::Binary::Sub, a, b); }
Var mul(const Var& a, const Var& b) { return binary_op(OpKind::Mul, ops::Binary::Mul, a, b); }
Var div(const Var& a, const Var& b) { return binary_op(OpKind::Div, ops::Binary::Div, a, b); }
Var maximum(const Var& a, const Var& b) {
  return binary_op(OpKind::Maximum, ops::Binary::Maximum, a, b);
}
Var neg(const Var& x) { return unary_op(OpKind::Neg, ops::Unary::Neg, x, false); }
Var exp(const Var& x) { return unary_op(OpKind::Exp, ops::Unary::Exp, x, true); }
Var log(const Var& x) { return unary_op(OpKind::Log, ops::Unary::Log, x, false); }
Var sqrt(const Var& x) { return unary_op(OpKind::Sqrt, ops::Unary::Sqrt, x, true); }
Var rsqrt(const Var& x) { return unary_op(OpKind::Rsqrt, ops::Unary::Rsqrt, x, true); }
Var sigmoid(const Var& x) { return unary_op(OpKind::Sigmoid, ops::Unary::Sigmoid, x, true); }
Var tanh(const Var& x) { return unary_op(OpKind::Tanh, ops::Unary::Tanh, x, true); }
Var abs(const Var& x) { return unary_op(OpKind::Abs, ops::Unary::Abs, x, false); }
Var relu(const Var& x) { return unary_op(OpKind::Relu, ops::Unary::Relu, x, false); }
Var log1p(const Var& x) { return unary_op(OpKind::Log1p, ops::Unary::Log1p, x, false); }
Var silu(const Var& x) {
  return unary_op(OpKind::Silu, ops::Unary::Silu, x, false);
}
Var softplus(const Var& x) {
  return unary_op(OpKind::Softplus, ops::Unary::Softplus, x, false);
}
Var logsigmoid(const Var& x) {
  return unary_op(OpKind::LogSigmoid, ops::Unary::LogSigmoid, x, false);
}

Var pow(const Var& x, double p) {
  auto n = node(OpKind::PowScalar);
  n->scalar = p;
  return recorded(n, {x}, ops::pow_scalar(x.data(), p));
}
Var add_scalar(const Var& x, double s) {
  return recorded(node(OpKind::AddScalar), {x}, ops::add_scalar(x.data(), s));
}
Var mul_scalar(const Var& x, double s) {
  auto n = node(OpKind::MulScalar);
  n->scalar = s;
  return recorded(n, {x}, ops::mul_scalar(x.data(), s));
}

Var where(const Tensor& cond, const Var& a, const Var& b) {
  auto n = node(OpKind::Where);
  n->saved = {cond};
  return recorded(n, {a, b}, ops::where(cond, a.data(), b.data()));
}

Var operator+(const Var& a, const Var& b) { return add(a, b); }
Var operator-(const Var& a, const Var& b) { return sub(a, b); }
Var operator*(const Var& a, const Var& b) { return mul(a, b); }
Var operator/(const Var& a, const Var& b) { return div(a, b); }
Var operator-(const Var& x) { return neg(x); }
Var operator+(const Var& a, double s) { return add_scalar(a, s); }
Var operator-(const Var& a, double s) { return add_scalar(a, -s); }
Var operator*(const Var& a, double s) { return mul_scalar(a, s); }
Var operator*(double s, const Var& a) { return mul_scalar(a, s); }
Var operator/(const Var& a, double s) { return mul_scalar(a, 1.0 / s); }

Var to_dtype(const Var& x, DType dtype) {
  if (!x.defined()) throw Error("to_dtype", "a defined Var x", "an empty Var");
  if (!is_floating(x.dtype()) || !is_floating(dtype))
    throw Error("to_dtype", "a floating x and a floating target dtype (f32, f64, bf16)",
                std::string(dtype_name(x.dtype())) + " to " + dtype_name(dtype),
                "index tensors take no gradient: convert them with Tensor::to");
  if (x.dtype() == dtype) return x;
  return recorded(node(OpKind::ToDtype), {x}, x.data().to(dtype));
}

Var matmul(const Var& a, const Var& b) {
  return recorded(node(OpKind::Matmul), {a, b}, ops::matmul(a.data(), b.data()));
}

Var sum(const Var& x, const std::vector<int64_t>& dims, bool keepdim) {
  auto n = node(OpKind::Sum);
  n->ints = wrapped(dims, x.dim(), "sum");
  return recorded(n, {x}, ops::sum(x.data(), dims, keepdim));
}
Var sum(const Var& x) { return sum(x, all_dims(x.dim()), false); }

Var mean(const Var& x, const std::vector<int64_t>& dims, bool keepdim) {
  auto n = node(OpKind::Mean);
  n->ints = wrapped(dims, x.dim(), "mean");
  Tensor s = ops::sum(x.data(), dims, keepdim);
  const double count = static_cast<double>(x.numel()) / static_cast<double>(std::max<int64_t>(s.numel(), 1));
  return recorded(n, {x}, ops::mul_scalar(s, 1.0 / count));
}
Var mean(const Var& x) { return mean(x, all_dims(x.dim()), false); }

Var max(const Var& x, const std::vector<int64_t>& dims, bool keepdim) {
  auto n = node(OpKind::Max);
  n->ints = wrapped(dims, x.dim(), "max");
  Tensor y = ops::max(x.data(), dims, keepdim);
  n->saved = {y};
  return recorded(n, {x}, y);
}

Var reshape(const Var& x, const Shape& shape) {
  return recorded(node(OpKind::Reshape), {x}, x.data().reshape(shape));
}
Var permute(const Var& x, const std::vector<int64_t>& dims) {
  auto n = node(OpKind::Permute);
  n->ints = wrapped(dims, x.dim(), "permute");
  return recorded(n, {x}, x.data().permute(dims));
}
Var transpose(const Var& x, int64_t d0, int64_t d1) {
  std::vector<int64_t> p = all_dims(x.dim());
  std::swap(p[wrap_dim(d0, x.dim(), "transpose")], p[wrap_dim(d1, x.dim(), "transpose")]);
  return permute(x, p);
}
Var slice(const Var& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  const int64_t d = wrap_dim(dim, x.dim(), "slice");
  Tensor y = x.data().slice(d, start, end, step);
  auto n = node(OpKind::Slice);
  n->ints = {d, start < 0 ? start + x.size(d) : start, step};
  return recorded(n, {x}, y);
}
Var narrow(const Var& x, int64_t dim, int64_t start, int64_t length) {
  return slice(x, dim, start, start + length);
}
Var select(const Var& x, int64_t dim, int64_t index) {
  const int64_t d = wrap_dim(dim, x.dim(), "select");
  const int64_t i = index < 0 ? index + x.size(d) : index;
  return squeeze(slice(x, d, i, i + 1), d);
}
Var expand(const Var& x, const Shape& shape) {
  return recorded(node(OpKind::Expand), {x}, x.data().expand(shape));
}
Var unsqueeze(const Var& x, int64_t dim) { return reshape(x, x.data().unsqueeze(dim).shape()); }
Var squeeze(const Var& x, int64_t dim) { return reshape(x, x.data().squeeze(dim).shape()); }

Var concat(const std::vector<Var>& xs, int64_t dim) {
  if (xs.empty()) throw Error("concat", "at least one Var", "none");
  std::vector<Tensor> ts;
  for (const Var& v : xs) ts.push_back(v.data());
  auto n = node(OpKind::Concat);
  n->ints = {wrap_dim(dim, xs[0].dim(), "concat")};
  return recorded(n, xs, ops::concat(ts, dim));
}
Var stack(const std::vector<Var>& xs, int64_t dim) {
  if (xs.empty()) throw Error("stack", "at least one Var", "none");
  std::vector<Var> us;
  const int64_t d = wrap_dim(dim, xs[0].dim() + 1, "stack");
  for (const Var& v : xs) us.push_back(unsqueeze(v, d));
  return concat(us, d);
}

Var index_select(const Var& x, int64_t dim, const Tensor& index) {
  auto n = node(OpKind::IndexSelect);
  n->ints = {wrap_dim(dim, x.dim(), "index_select")};
  n->saved = {index};
  return recorded(n, {x}, ops::index_select(x.data(), dim, index));
}
Var gather(const Var& x, int64_t dim, const Tensor& index) {
  auto n = node(OpKind::Gather);
  n->ints = {wrap_dim(dim, x.dim(), "gather")};
  n->saved = {index};
  return recorded(n, {x}, ops::gather(x.data(), dim, index));
}
Var embedding(const Var& weight, const Tensor& ids) {
  check_rank(weight.data(), 2, "embedding", "weight", "[N, D]");
  Shape out = ids.shape();
  out.push_back(weight.size(1));
  return reshape(index_select(weight, 0, ids.reshape({ids.numel()})), out);
}

}  // namespace hla
