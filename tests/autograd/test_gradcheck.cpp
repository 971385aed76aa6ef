// gradcheck of every differentiable op in f64: primitives (with broadcasting and
// non-contiguous inputs), composites and fused ops, against central finite differences.
#include <catch2/catch.hpp>

#include "autograd/composites.h"
#include "autograd/fused.h"
#include "autograd/gradcheck.h"
#include "autograd/primitives.h"

using namespace hla;

namespace {
Generator gen(2024);
Tensor rnd(const Shape& s, double lo = -1, double hi = 1) {
  return Tensor::rand(s, gen, DType::f64, lo, hi);
}
// A non-contiguous [rows, cols] view: the transpose of a contiguous [cols, rows] tensor.
Tensor rnd_t(int64_t rows, int64_t cols) { return rnd({cols, rows}).transpose(0, 1); }

void check(const char* name, const std::function<Var(const std::vector<Var>&)>& f,
           const std::vector<Tensor>& xs) {
  const GradcheckResult r = gradcheck(f, xs);
  INFO(name << ": worst " << r.report);
  CHECK(r.ok);
}
using V = const std::vector<Var>&;
}  // namespace

TEST_CASE("gradcheck: elementwise binary ops with broadcasting", "[autograd][gradcheck]") {
  check("add", [](V x) { return x[0] + x[1]; }, {rnd({3, 4}), rnd({4})});
  check("sub", [](V x) { return x[0] - x[1]; }, {rnd({3, 1}), rnd({1, 4})});
  check("mul", [](V x) { return x[0] * x[1]; }, {rnd_t(3, 4), rnd({3, 4})});
  check("div", [](V x) { return x[0] / x[1]; }, {rnd({2, 3}), rnd({3}, 0.5, 2)});
  check("maximum", [](V x) { return maximum(x[0], x[1]); }, {rnd({5}), rnd({5})});
  check("where", [](V x) {
    const Tensor c = Tensor::from_values({1, 0, 1, 0}, {4}, DType::f64);
    return where(c, x[0], x[1]);
  }, {rnd({3, 4}), rnd({4})});
}

TEST_CASE("gradcheck: elementwise unary ops", "[autograd][gradcheck]") {
  check("neg", [](V x) { return -x[0]; }, {rnd({3, 2})});
  check("exp", [](V x) { return exp(x[0]); }, {rnd_t(3, 2)});
  check("log", [](V x) { return log(x[0]); }, {rnd({4}, 0.5, 2)});
  check("sqrt", [](V x) { return sqrt(x[0]); }, {rnd({4}, 0.5, 2)});
  check("rsqrt", [](V x) { return rsqrt(x[0]); }, {rnd({4}, 0.5, 2)});
  check("sigmoid", [](V x) { return sigmoid(x[0]); }, {rnd({4}, -4, 4)});
  check("tanh", [](V x) { return tanh(x[0]); }, {rnd({4}, -2, 2)});
  check("abs", [](V x) { return abs(x[0]); }, {rnd({6}, 0.1, 1)});
  check("relu", [](V x) { return relu(x[0]); }, {Tensor::from_values({-1, -0.2, 0.3, 2}, {4}, DType::f64)});
  check("log1p", [](V x) { return log1p(x[0]); }, {rnd({4}, 0, 2)});
  check("pow", [](V x) { return pow(x[0], 2.5); }, {rnd({4}, 0.5, 2)});
  check("scalar ops", [](V x) { return (x[0] * 3.0 + 1.5) / 2.0 - 1.0; }, {rnd({4})});
}

TEST_CASE("gradcheck: matmul, batched and broadcast, with transposed operands",
          "[autograd][gradcheck]") {
  check("matmul 2d", [](V x) { return matmul(x[0], x[1]); }, {rnd({3, 4}), rnd({4, 5})});
  check("matmul transposed", [](V x) { return matmul(x[0], x[1]); }, {rnd_t(3, 4), rnd_t(4, 2)});
  check("bmm", [](V x) { return matmul(x[0], x[1]); }, {rnd({2, 3, 4}), rnd({2, 4, 2})});
  check("bmm broadcast", [](V x) { return matmul(x[0], x[1]); }, {rnd({2, 1, 3, 4}), rnd({3, 4, 2})});
}

TEST_CASE("gradcheck: reductions", "[autograd][gradcheck]") {
  check("sum dims", [](V x) { return sum(x[0], {0, 2}); }, {rnd({2, 3, 4})});
  check("sum keepdim", [](V x) { return sum(x[0], {-1}, true); }, {rnd_t(3, 4)});
  check("sum all", [](V x) { return sum(x[0]); }, {rnd({2, 3})});
  check("mean", [](V x) { return mean(x[0], {1}); }, {rnd({2, 3, 2})});
  check("mean all", [](V x) { return mean(x[0]); }, {rnd({5})});
  check("max", [](V x) { return max(x[0], {1}); }, {rnd({3, 5})});
  check("max keepdim", [](V x) { return max(x[0], {0}, true); }, {rnd_t(3, 4)});
}

TEST_CASE("gradcheck: movement ops", "[autograd][gradcheck]") {
  check("reshape", [](V x) { return reshape(x[0], {3, 4}); }, {rnd({2, 6})});
  check("reshape of a view", [](V x) { return reshape(x[0], {-1}); }, {rnd_t(3, 4)});
  check("permute", [](V x) { return permute(x[0], {2, 0, 1}); }, {rnd({2, 3, 4})});
  check("transpose", [](V x) { return transpose(x[0], 0, 1); }, {rnd({2, 3})});
  check("slice step", [](V x) { return slice(x[0], 1, 1, 6, 2); }, {rnd({2, 7})});
  check("slice negative", [](V x) { return slice(x[0], 0, -2, 4); }, {rnd({4, 2})});
  check("select", [](V x) { return select(x[0], 1, 2); }, {rnd({2, 3, 2})});
  check("expand", [](V x) { return expand(x[0], {4, 3, 2}); }, {rnd({3, 1})});
  check("unsqueeze/squeeze", [](V x) { return squeeze(unsqueeze(x[0], 1), 1) * 2.0; }, {rnd({3, 2})});
  check("concat", [](V x) { return concat({x[0], x[1], x[0]}, 1); }, {rnd({2, 3}), rnd({2, 1})});
  check("stack", [](V x) { return stack({x[0], x[1]}, 0); }, {rnd({2, 3}), rnd_t(2, 3)});
}

TEST_CASE("gradcheck: indexing ops", "[autograd][gradcheck]") {
  const Tensor idx = Tensor::from_vector<int64_t>({2, 0, 2, 1}, {4});
  check("index_select", [&](V x) { return index_select(x[0], 0, idx); }, {rnd({3, 2})});
  check("index_select dim1", [&](V x) { return index_select(x[0], 1, idx); }, {rnd({2, 3})});
  const Tensor gidx = Tensor::from_vector<int32_t>({0, 2, 2, 1, 0, 0}, {2, 3});
  check("gather", [&](V x) { return gather(x[0], 1, gidx); }, {rnd({2, 4})});
  const Tensor ids = Tensor::from_vector<int32_t>({1, 1, 3, 0}, {2, 2});
  check("embedding", [&](V x) { return embedding(x[0], ids); }, {rnd({4, 3})});
}

TEST_CASE("gradcheck: composites", "[autograd][gradcheck]") {
  check("silu", [](V x) { return silu(x[0]); }, {rnd({5}, -3, 3)});
  check("softplus", [](V x) { return softplus(x[0]); }, {Tensor::from_values({-30, -2, 0.1, 3, 40}, {5}, DType::f64)});
  check("logsigmoid", [](V x) { return logsigmoid(x[0]); }, {rnd({5}, -5, 5)});
  check("gelu", [](V x) { return gelu(x[0]); }, {rnd({5}, -3, 3)});
  check("l2_normalize", [](V x) { return l2_normalize(x[0]); }, {rnd_t(3, 4)});
}

TEST_CASE("gradcheck: fused ops", "[autograd][gradcheck]") {
  check("softmax", [](V x) { return softmax(x[0]); }, {rnd({3, 5}, -2, 2)});
  check("log_softmax", [](V x) { return log_softmax(x[0]); }, {rnd_t(3, 5)});
  const Tensor tgt = Tensor::from_vector<int64_t>({2, kIgnoreIndex, 0, 4}, {4});
  check("cross_entropy", [&](V x) { return cross_entropy(x[0], tgt); }, {rnd({4, 5}, -2, 2)});
  const Tensor tgt5 = Tensor::from_vector<int64_t>({kIgnoreIndex, kIgnoreIndex, 0, 3, 1}, {5});
  check("linear_cross_entropy", [&](V x) { return linear_cross_entropy(x[0], x[1], tgt5, kIgnoreIndex, 2); },
        {rnd({5, 3}), rnd({4, 3})});
  check("rms_norm", [](V x) { return rms_norm(x[0], x[1], 1e-5); }, {rnd({2, 3, 4}), rnd({4})});
  check("rms_norm strided", [](V x) { return rms_norm(x[0], x[1], 1e-6); }, {rnd_t(3, 4), rnd({4})});
  check("gated_rms_norm", [](V x) { return gated_rms_norm(x[0], x[1], x[2], 1e-5); },
        {rnd({3, 4}), rnd({3, 4}, -2, 2), rnd({4})});
  check("swiglu", [](V x) { return swiglu(x[0], x[1]); }, {rnd({2, 5}, -3, 3), rnd({2, 5})});
  check("short_conv", [](V x) { return short_conv(x[0], x[1], false); }, {rnd({2, 5, 3}), rnd({3, 4})});
  check("short_conv silu", [](V x) { return short_conv(x[0], x[1], true); }, {rnd({1, 6, 2}), rnd({2, 4})});
  check("short_conv cache", [](V x) { return short_conv(x[0], x[1], true, x[2]); },
        {rnd({2, 3, 2}), rnd({2, 4}), rnd({2, 2, 3})});
}
