// Activation checkpointing (autograd/checkpoint.h) and the engine's backward from several
// roots: gradients equal the plain graph's (same ops, same order: exactly, in f64), the
// checkpointed graph keeps only the inputs (an intermediate's storage is freed after the
// forward), nested checkpoints, unused outputs, inputs without gradient or undefined,
// retain_graph, and the errors.
#include <catch2/catch.hpp>
#include <memory>

#include "autograd/checkpoint.h"
#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "autograd/primitives.h"

using namespace hla;

namespace {

Var leaf(const Tensor& t, bool requires_grad = true) {
  return Var(t, requires_grad);
}

// Two outputs of two inputs with a few intermediates; `seen` (when given) gets the storage of
// the intermediate exp(a * b).
std::vector<Var> two_outputs(const std::vector<Var>& x, std::weak_ptr<Storage>* seen = nullptr) {
  const Var e = exp(x[0] * x[1]);
  if (seen) *seen = e.data().storage();
  return {tanh(e) * x[0], sum(sigmoid(x[1]) * e, {-1})};
}

}  // namespace

TEST_CASE("checkpoint: the gradients of the plain graph, exactly", "[autograd]") {
  Generator gen(3);
  const Tensor a0 = Tensor::randn({4, 5}, gen, DType::f64);
  const Tensor b0 = Tensor::randn({4, 5}, gen, DType::f64);
  const Tensor w0 = Tensor::randn({4, 5}, gen, DType::f64),
               w1 = Tensor::randn({4}, gen, DType::f64);
  auto loss_of = [&](const std::vector<Var>& o) {
    return sum(o[0] * Var(w0)) + sum(o[1] * Var(w1));
  };
  Var a = leaf(a0), b = leaf(b0);
  loss_of(two_outputs({a, b})).backward();
  Var ca = leaf(a0), cb = leaf(b0);
  const std::vector<Var> outs =
      checkpoint([](const std::vector<Var>& x) { return two_outputs(x); }, {ca, cb});
  REQUIRE(std::string(outs[0].grad_fn()->name()) == "checkpoint");
  REQUIRE(outs[0].grad_fn() == outs[1].grad_fn());
  loss_of(outs).backward();
  CHECK(ca.grad().to_vector<double>() == a.grad().to_vector<double>());
  CHECK(cb.grad().to_vector<double>() == b.grad().to_vector<double>());
}

TEST_CASE("checkpoint: only the inputs stay alive until the backward", "[autograd]") {
  Generator gen(4);
  Var a = leaf(Tensor::randn({8}, gen, DType::f64)), b = leaf(Tensor::randn({8}, gen, DType::f64));
  std::weak_ptr<Storage> plain_e, kept_e;
  const std::vector<Var> plain = two_outputs({a, b}, &plain_e);
  CHECK(!plain_e.expired());  // the plain graph saves exp(a b) for tanh's and mul's backward
  const std::vector<Var> outs =
      checkpoint([&](const std::vector<Var>& x) { return two_outputs(x, &kept_e); }, {a, b});
  CHECK(kept_e.expired());
  const Node& node = *outs[0].grad_fn();
  REQUIRE(node.inputs.size() == 2);
  CHECK(node.inputs[0].same(a));
  CHECK(node.inputs[1].same(b));
}

TEST_CASE("checkpoint: nested, unused outputs, inputs without gradient or undefined",
          "[autograd]") {
  Generator gen(5);
  const Tensor a0 = Tensor::randn({6}, gen, DType::f64), b0 = Tensor::randn({6}, gen, DType::f64);
  // f(a, b, c) with c optional; the second output is never used by the loss
  auto f = [](const std::vector<Var>& x) {
    Var y = exp(x[0]) * x[1];
    if (x[2].defined()) y = y + x[2];
    return std::vector<Var>{tanh(y), y * 2.0};
  };
  Var a = leaf(a0), b = leaf(b0, false);
  sum(f({a, b, Var()})[0] * a).backward();
  Var ca = leaf(a0), cb = leaf(b0, false);
  auto outer = [&](const std::vector<Var>& x) {
    return std::vector<Var>{checkpoint(f, {x[0], x[1], Var()})[0] * x[0]};
  };
  sum(checkpoint(outer, {ca, cb})[0]).backward();
  CHECK(ca.grad().to_vector<double>() == a.grad().to_vector<double>());
  CHECK(!cb.grad().defined());
}

TEST_CASE("checkpoint: retain_graph runs the recomputation again; no graph, no node",
          "[autograd]") {
  Var a = leaf(Tensor::from_values({0.3, -0.2}, {2}, DType::f64));
  auto f = [](const std::vector<Var>& x) { return std::vector<Var>{exp(x[0]) * x[0]}; };
  Var y = sum(checkpoint(f, {a})[0]);
  y.backward(Tensor(), /*retain_graph=*/true);
  const std::vector<double> once = a.grad().to_vector<double>();
  y.backward();
  const std::vector<double> twice = a.grad().to_vector<double>();
  for (size_t i = 0; i < once.size(); ++i) CHECK(twice[i] == Approx(2 * once[i]));
  {
    NoGradGuard off;
    CHECK(!checkpoint(f, {a})[0].requires_grad());
  }
  CHECK(!checkpoint(f, {leaf(Tensor::ones({2}, DType::f64), false)})[0].requires_grad());
}

TEST_CASE("checkpoint: an undefined output is an error naming it", "[autograd]") {
  Var a = leaf(Tensor::ones({2}, DType::f64));
  auto f = [](const std::vector<Var>& x) { return std::vector<Var>{x[0] * 2.0, Var()}; };
  CHECK_THROWS_WITH(checkpoint(f, {a}), Catch::Contains("output 1"));
}

TEST_CASE("backward from several roots equals the sum of single backwards", "[autograd]") {
  Generator gen(6);
  const Tensor x0 = Tensor::randn({5}, gen, DType::f64);
  const Tensor g1 = Tensor::randn({5}, gen, DType::f64), g2 = Tensor::randn({5}, gen, DType::f64);
  // y2 depends on y1: y1's node may run only after y2's has passed its gradient on
  auto build = [](const Var& x) {
    const Var y1 = exp(x) * x;
    return std::pair<Var, Var>{y1, tanh(y1) + x};
  };
  Var x = leaf(x0);
  auto [y1, y2] = build(x);
  backward({y1, y2, sum(x)}, {g1, g2, Tensor()});
  Var r = leaf(x0);
  auto [r1, r2] = build(r);
  r1.backward(g1, /*retain_graph=*/true);
  r2.backward(g2);
  sum(r).backward();
  const std::vector<double> got = x.grad().to_vector<double>(), want = r.grad().to_vector<double>();
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(want[i]).epsilon(1e-14));
  CHECK_THROWS_WITH(backward({y1}, {}), Catch::Contains("1 roots and 0 gradients"));
}
