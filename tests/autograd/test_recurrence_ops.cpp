// The recurrence ops on Vars: wiring of every input and both outputs through the Function nodes
// (gradcheck of the reference tier in f64, with h0 and a final-state gradient), agreement of the
// tiers through the Var API, the StepRule path against the ops, and argument errors.
#include <catch2/catch.hpp>

#include "autograd/composites.h"
#include "autograd/grad_mode.h"
#include "autograd/gradcheck.h"
#include "autograd/primitives.h"
#include "autograd/recurrences.h"
#include "autograd/step_rule.h"
#include "tests/helpers/close.h"

using namespace hla;

namespace {
Generator gen(99);
Tensor rnd(const Shape& s, double lo = -1, double hi = 1) { return Tensor::rand(s, gen, DType::f64, lo, hi); }
Tensor log_gate(const Shape& s) {  // logsigmoid(x) in (-inf, 0): strong enough to matter
  const Tensor x = rnd(s, -2, 2);
  NoGradGuard ng;
  return logsigmoid(Var(x)).data();
}
// o and hT flattened into one output, so gradcheck's random weights cover both.
Var both(const RecurrenceResult& r) {
  return concat({reshape(r.o, {-1}), reshape(r.hT, {-1})}, 0);
}
using Vs = const std::vector<Var>&;
const RecurrenceOptions ref{Impl::Reference};

void check(const char* name, const std::function<Var(Vs)>& f, const std::vector<Tensor>& xs) {
  const GradcheckResult r = gradcheck(f, xs);
  INFO(name << ": " << r.report);
  CHECK(r.ok);
}
std::vector<double> vals(const Var& v) { return v.data().to_vector<double>(); }
}  // namespace

TEST_CASE("recurrence ops: gradients of every input and of hT reach the kernels",
          "[autograd][recurrence][gradcheck]") {
  const int64_t B = 1, T = 3, H = 2, K = 3, V = 2;
  const Tensor q = rnd({B, T, H, K}), k = rnd({B, T, H, K}), v = rnd({B, T, H, V});
  const Tensor h0 = rnd({B, H, K, V});
  check("gla", [](Vs x) { return both(gla(x[0], x[1], x[2], x[3], x[4], ref)); },
        {q, k, v, log_gate({B, T, H, K}), h0});
  check("simple_gla", [](Vs x) { return both(simple_gla(x[0], x[1], x[2], x[3], x[4], ref)); },
        {q, k, v, log_gate({B, T, H}), h0});
  check("retention", [](Vs x) { return both(retention(x[0], x[1], x[2], x[3], ref)); }, {q, k, v, h0});
  const RecurrenceOptions l2{Impl::Reference, 0.0, true};
  check("delta_rule", [&](Vs x) { return both(delta_rule(x[0], x[1], x[2], x[3], x[4], l2)); },
        {q, k, v, rnd({B, T, H}, 0.1, 1.9), h0});
  check("gated_delta_rule",
        [&](Vs x) { return both(gated_delta_rule(x[0], x[1], x[2], x[3], x[4], x[5], l2)); },
        {q, k, v, log_gate({B, T, H}), rnd({B, T, H}, 0.1, 0.9), h0});
  check("hgrn", [](Vs x) { return both(hgrn(x[0], x[1], x[2], Impl::Reference)); },
        {rnd({2, 4, 3}), log_gate({2, 4, 3}), rnd({2, 3})});
  AttentionOptions ao;
  ao.reference = true;
  ao.window = 2;
  check("softmax_attention", [&](Vs x) { return softmax_attention(x[0], x[1], x[2], ao); },
        {rnd({1, 4, 4, 3}), rnd({1, 4, 2, 3}), rnd({1, 4, 2, 2})});
}

TEST_CASE("recurrence ops: the tiers agree through the Var API (f32)", "[autograd][recurrence]") {
  const int64_t B = 2, T = 70, H = 2, K = 4, V = 3;  // T spans a chunk boundary
  auto f32 = [](const Tensor& t) { return Var(t.to(DType::f32), true); };
  const Var q = f32(rnd({B, T, H, K})), k = f32(rnd({B, T, H, K})), v = f32(rnd({B, T, H, V}));
  const Var gk = f32(log_gate({B, T, H, K}));
  std::vector<double> o_ref;
  for (Impl impl : {Impl::Reference, Impl::Recurrent, Impl::Chunk, Impl::Auto}) {
    const RecurrenceResult r = gla(q, k, v, gk, Var(), {impl});
    CHECK(r.o.dtype() == DType::f32);
    if (o_ref.empty()) o_ref = vals(r.o);
    REQUIRE_CLOSE(impl_name(impl), o_ref, vals(r.o), 1e-5);
  }
  const Var beta = f32(rnd({B, T, H}, 0.1, 0.9)), g = f32(log_gate({B, T, H}));
  std::vector<double> d_ref;
  for (Impl impl : {Impl::Reference, Impl::Recurrent, Impl::Chunk}) {
    const RecurrenceResult r = gated_delta_rule(q, k, v, g, beta, Var(), {impl, 0.0, true});
    if (d_ref.empty()) d_ref = vals(r.o);
    REQUIRE_CLOSE(impl_name(impl), d_ref, vals(r.o), 1e-5);
  }
}

TEST_CASE("StepRule: GLA and gated delta rule written as one step equal the ops",
          "[autograd][recurrence][steprule]") {
  const int64_t B = 2, T = 9, H = 2, K = 3, V = 4;
  const double s = 1.0 / std::sqrt(static_cast<double>(K));
  const Var q(rnd({B, T, H, K}), true), k(rnd({B, T, H, K}), true), v(rnd({B, T, H, V}), true);
  const Var gk(log_gate({B, T, H, K}), true), h0(rnd({B, H, K, V}), true);
  {
    const RecurrenceResult a = gla(q, k, v, gk, h0, ref);
    const RecurrenceResult b = run_step_rule(gla_step_rule(), {q * s, k, v, gk}, h0);
    REQUIRE_CLOSE("o", vals(a.o), vals(b.o), 1e-12);
    REQUIRE_CLOSE("hT", vals(a.hT), vals(b.hT), 1e-12);
    // Gradients through autograd of the step rule equal the op's hand-written backward.
    const Tensor w = rnd(a.o.shape());
    sum(a.o * Var(w)).backward();
    const Tensor dq = q.grad(), dgk = gk.grad(), dh0 = h0.grad();
    q.zero_grad(), k.zero_grad(), v.zero_grad(), gk.zero_grad(), h0.zero_grad();
    sum(b.o * Var(w)).backward();
    REQUIRE_CLOSE("dq", dq.to_vector<double>(), q.grad().to_vector<double>(), 1e-12);
    REQUIRE_CLOSE("dgk", dgk.to_vector<double>(), gk.grad().to_vector<double>(), 1e-12);
    REQUIRE_CLOSE("dh0", dh0.to_vector<double>(), h0.grad().to_vector<double>(), 1e-12);
  }
  {
    const Var kn(l2_normalize(Var(k.data())).data(), true);
    const Var g(log_gate({B, T, H}), true), beta(rnd({B, T, H}, 0.1, 0.9), true);
    const RecurrenceResult a = gated_delta_rule(q, kn, v, g, beta, h0, ref);
    const RecurrenceResult b = run_step_rule(gated_delta_step_rule(), {q * s, kn, v, g, beta}, h0);
    REQUIRE_CLOSE("o", vals(a.o), vals(b.o), 1e-12);
    REQUIRE_CLOSE("hT", vals(a.hT), vals(b.hT), 1e-12);
    const Tensor w = rnd(a.o.shape());
    sum(a.o * Var(w)).backward();
    const Tensor dbeta = beta.grad(), dg = g.grad();
    beta.zero_grad(), g.zero_grad();
    sum(b.o * Var(w)).backward();
    REQUIRE_CLOSE("dbeta", dbeta.to_vector<double>(), beta.grad().to_vector<double>(), 1e-12);
    REQUIRE_CLOSE("dg", dg.to_vector<double>(), g.grad().to_vector<double>(), 1e-12);
  }
}

TEST_CASE("recurrence ops: argument errors name the input and its layout",
          "[autograd][recurrence][errors]") {
  const Var q(rnd({1, 4, 2, 3})), v(rnd({1, 4, 2, 5}));
  CHECK_THROWS_WITH(gla(q, Var(rnd({1, 4, 2, 2})), v, Var(rnd({1, 4, 2, 3}))),
                    Catch::Contains("k must be [B,T,H,K]=[1, 4, 2, 3]") && Catch::Contains("[1, 4, 2, 2]"));
  CHECK_THROWS_WITH(gla(q, q, v, Var(rnd({1, 4, 2}))), Catch::Contains("gk must be [B,T,H,K]"));
  CHECK_THROWS_WITH(simple_gla(q, q, v, Var(rnd({1, 4, 2, 3}))), Catch::Contains("g must be [B,T,H]"));
  CHECK_THROWS_WITH(gla(q, q, v, Var(rnd({1, 4, 2, 3})), Var(rnd({1, 2, 5, 3}))),
                    Catch::Contains("h0 must be [B,H,K,V]=[1, 2, 3, 5]"));
  CHECK_THROWS_WITH(retention(q, Var(q.data().to(DType::f32)), v), Catch::Contains("dtype"));
  CHECK_THROWS_WITH(delta_rule(q, q, v, Var()), Catch::Contains("beta"));
  CHECK_THROWS_WITH(hgrn(q, q), Catch::Contains("x of rank 3"));
  CHECK_THROWS_WITH(softmax_attention(q, Var(rnd({1, 4, 3, 3})), Var(rnd({1, 4, 3, 3}))),
                    Catch::Contains("divisible"));
  CHECK_THROWS_WITH(parse_impl("fast"), Catch::Contains("reference, recurrent, chunk"));
}
