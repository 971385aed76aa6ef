// The autograd engine: accumulation, shared subgraphs, multi-use, retain_graph, detach,
// NoGradGuard, leaves vs non-leaves, what nodes keep of their inputs, and errors.
#include <catch2/catch.hpp>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "autograd/fused.h"
#include "autograd/grad_mode.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "autograd/primitives.h"

using namespace hla;

namespace {
Var leaf(std::vector<double> v, bool rg = true) {
  return Var(Tensor::from_values(v, {static_cast<int64_t>(v.size())}, DType::f64), rg);
}
}  // namespace

TEST_CASE("a Var used several times accumulates its gradient", "[autograd]") {
  Var x = leaf({1, 2, 3});
  Var y = sum(x * x + x * 3.0);  // dy/dx = 2x + 3
  y.backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{5, 7, 9});
  // A second backward on a new graph adds to the leaf's gradient.
  sum(x).backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{6, 8, 10});
  x.zero_grad();
  CHECK(!x.grad().defined());
}

TEST_CASE("diamond-shaped graphs visit each node once, after all its consumers", "[autograd]") {
  Var x = leaf({0.5});
  Var a = exp(x);
  Var b = a * a;  // e^{2x}
  Var c = a + b;  // e^x + e^{2x}
  c.backward();
  const double e = std::exp(0.5);
  CHECK(x.grad().item() == Approx(e + 2 * e * e));
}

TEST_CASE("retain_graph allows a second backward; without it a clear error", "[autograd]") {
  Var x = leaf({2});
  Var y = exp(x) * x;
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  const double g = std::exp(2.0) * 3;  // d(x e^x) = e^x (1 + x)
  CHECK(x.grad().item() == Approx(2 * g));
  CHECK_THROWS_WITH(y.backward(), Catch::Contains("retain_graph"));
}

TEST_CASE("detach and NoGradGuard cut the graph", "[autograd]") {
  Var x = leaf({1, 2});
  Var d = x.detach();
  CHECK(!d.requires_grad());
  CHECK(d.data().storage() == x.data().storage());
  Var y = sum(x * d);  // gradient flows only through the first factor
  y.backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{1, 2});
  {
    NoGradGuard ng;
    Var z = x * x;
    CHECK(!z.requires_grad());
    CHECK(!z.grad_fn());
  }
  CHECK(grad_enabled());
  Var w = x * x;
  CHECK(w.requires_grad());
  CHECK(std::string(w.grad_fn()->name()) == "mul");
  CHECK(!w.is_leaf());
}

TEST_CASE("only inputs that need it receive gradients", "[autograd]") {
  Var x = leaf({1, 2});
  Var c = leaf({3, 4}, false);
  sum(x * c).backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{3, 4});
  CHECK(!c.grad().defined());
}

// A node whose derivative reads only its inputs' shapes (add, sum, the views, to_dtype, ...)
// keeps a non-leaf input as an edge without its values: an activation consumed only by such ops
// is freed when the forward drops it; ops whose derivative reads the values keep them.
TEST_CASE("shape-only derivatives keep no values of non-leaf inputs", "[autograd]") {
  Var x = leaf({1, 2, 3}), w = leaf({0.5, -1, 2});
  std::weak_ptr<Storage> freed, kept;
  Var y;
  {
    const Var m = x * x;  // read only by add, reshape, to_dtype, sum below
    const Var p = x * w;  // read by mul, whose derivative needs it
    freed = m.data().storage();
    kept = p.data().storage();
    y = sum(to_dtype(reshape(add(m, x), {3, 1}), DType::f32)) + sum(to_dtype(p * p, DType::f32));
  }
  CHECK(freed.expired());
  CHECK(!kept.expired());
  y.backward();  // d/dx: 2x + 1 + 2 (x w) w;  d/dw: 2 (x w) x
  const std::vector<double> dx = x.grad().to_vector<double>(), dw = w.grad().to_vector<double>();
  const std::vector<double> xs{1, 2, 3}, ws{0.5, -1, 2};
  for (size_t i = 0; i < 3; ++i) {
    CHECK(dx[i] == Approx(2 * xs[i] + 1 + 2 * xs[i] * ws[i] * ws[i]));
    CHECK(dw[i] == Approx(2 * xs[i] * ws[i] * xs[i]));
  }
}

// Linear multiplies by a transposed view of W [out, in]; its gradient must reach W in W's layout
// (a transposed one would be copied, strided, before every conversion and update).
// Rotary's backward is the inverse rotation and softmax's reads its output: neither keeps the
// values of its input (the rotated q and k of attention are kept by the attention node alone).
TEST_CASE("rotary and softmax keep no values of their non-leaf inputs", "[autograd]") {
  Generator gen(3);
  const Tensor a0 = Tensor::randn({1, 3, 2, 4}, gen, DType::f64);
  Var a(a0, true);
  std::weak_ptr<Storage> rotary_in, softmax_in;
  Var y;
  {
    const Var r = a * 2.0, s = a * 3.0;
    rotary_in = r.data().storage();
    softmax_in = s.data().storage();
    y = sum(rotary(r, 1, 100.0) * softmax(s));
  }
  CHECK(rotary_in.expired());
  CHECK(softmax_in.expired());
  // the gradient through both, with their inputs dropped, against finite differences
  const GradcheckResult r = gradcheck(
      [](const std::vector<Var>& x) { return rotary(x[0] * 2.0, 1, 100.0) * softmax(x[0] * 3.0); },
      {a0});
  INFO(r.report);
  CHECK(r.ok);
  y.backward();
  CHECK(a.grad().defined());
}

TEST_CASE("a backward observer sees every node once, after the nodes that consume it",
          "[autograd]") {
  Var x = leaf({0.5, -1}), w = leaf({2, 3});
  const Var y = sum(exp(x * w) + x);  // nodes: sum <- add <- {exp <- mul, x}
  std::vector<std::string> seen;
  const BackwardObserver before =
      set_backward_observer([&](const Node& n) { seen.push_back(n.name()); });
  CHECK(!before);
  y.backward();
  CHECK(set_backward_observer(BackwardObserver()));  // the one set above comes back
  REQUIRE(seen.size() == 4);
  CHECK(seen.front() == "sum");
  CHECK(seen[1] == "add");
  CHECK(seen[2] == "exp");
  CHECK(seen[3] == "mul");
  sum(x).backward();  // no observer now
  CHECK(seen.size() == 4);
}

// The graph lives as long as its root; the activations it read are freed during the backward,
// once the nodes that read them have run (without retain_graph), not when the root goes.
TEST_CASE("the backward frees the activations its nodes read as it goes", "[autograd]") {
  Var x = leaf({1, 2, 3}), w = leaf({0.5, -1, 2});
  std::weak_ptr<Storage> p_data;
  Var y;
  {
    const Var p = x * w;  // read by the mul below (and by nothing after it in the backward)
    p_data = p.data().storage();
    y = sum(exp(p) * p);
  }
  CHECK(!p_data.expired());  // held by the graph for the backward
  bool freed_before_end = false;
  set_backward_observer([&](const Node& n) {
    if (std::string(n.name()) == "exp") freed_before_end = p_data.expired();
  });
  y.backward();
  set_backward_observer(BackwardObserver());
  CHECK(freed_before_end);  // exp runs after the mul that read p, before x * w's node
  CHECK(p_data.expired());
  // d/dx of sum(e^p p), p = x w: (e^p (1 + p)) w, and likewise for w
  const std::vector<double> dx = x.grad().to_vector<double>(), dw = w.grad().to_vector<double>();
  const std::vector<double> xs{1, 2, 3}, ws{0.5, -1, 2};
  for (size_t i = 0; i < 3; ++i) {
    const double p = xs[i] * ws[i], d = std::exp(p) * (1 + p);
    CHECK(dx[i] == Approx(d * ws[i]));
    CHECK(dw[i] == Approx(d * xs[i]));
  }
}

TEST_CASE("a weight read transposed gets a contiguous gradient in its own layout", "[autograd]") {
  Generator gen(3);
  const Var w(Tensor::randn({3, 4}, gen, DType::f64), true);
  const Tensor x = Tensor::randn({5, 4}, gen, DType::f64), c = Tensor::randn({5, 3}, gen, DType::f64);
  sum(matmul(Var(x), transpose(w, 0, 1)) * Var(c)).backward();
  REQUIRE(w.grad().is_contiguous());
  // dW = c^T x
  const std::vector<double> dw = w.grad().to_vector<double>(), xs = x.to_vector<double>(),
                            cs = c.to_vector<double>();
  for (int64_t o = 0; o < 3; ++o)
    for (int64_t i = 0; i < 4; ++i) {
      double ref = 0;
      for (int64_t n = 0; n < 5; ++n) ref += cs[n * 3 + o] * xs[n * 4 + i];
      CHECK(dw[o * 4 + i] == Approx(ref));
    }
  const Var w2(Tensor::randn({3, 4}, gen, DType::f64), true);  // the fused projection's node
  sum(swiglu_linear(Var(x), Var(x), w2)).backward();
  CHECK(w2.grad().is_contiguous());
}

TEST_CASE("autograd misuse throws hla::Error", "[autograd][errors]") {
  Var c = leaf({1, 2}, false);
  CHECK_THROWS_WITH(sum(c).backward(), Catch::Contains("requires grad") && Catch::Contains("hint"));
  Var x = leaf({1, 2});
  CHECK_THROWS_WITH((x * 2.0).backward(), Catch::Contains("explicit gradient"));
  CHECK_THROWS_WITH((x * 2.0).set_requires_grad(false), Catch::Contains("leaf"));
  CHECK_THROWS_WITH(Var(Tensor::zeros({2}, DType::i64), true), Catch::Contains("floating"));
  CHECK_THROWS_WITH(x + leaf({1, 2, 3}), Catch::Contains("broadcast"));
  CHECK_THROWS_WITH(x + Var(Tensor::zeros({2}, DType::f32)), Catch::Contains("one dtype"));
  CHECK_THROWS_WITH(Var().data(), Catch::Contains("empty Var"));
}
