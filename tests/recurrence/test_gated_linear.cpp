// Tests of the gated linear family (kernels/recurrence.h): GLA / HGRN2 (PerKey), simple GLA
// (ScalarPerHead), RetNet (FixedPerHead) and plain linear attention (None), in three tiers.
//
//   reference            vs central finite differences (f64), every input, with dout and dhT
//   recurrent, chunk     vs reference (f64 and f32): o, hT and every gradient by name, over ragged
//                        T, H = 1 and 3, K != V, and weak / moderate / strong decay
//   recurrent, chunk     f32 under extreme decay (cumulative log decays of -4000 per chunk)
//   recurrent, chunk     state carry: T steps == T1 steps, then T2 from the carried state (and the
//                        backward chained through dh0 -> dhT)
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "kernels/recurrence.h"
#include "tensor/random.h"
#include "tests/helpers/close.h"
#include "tests/helpers/sequences.h"

namespace {

using namespace hla::kernels;
using Vec = std::vector<double>;

// One problem: inputs, the output gradients dout and dhT of the loss L = sum(o*dout) + sum(hT*dhT).
struct Case {
  RecDims d;
  GateKind gate = GateKind::PerKey;
  double scale = 1.0;
  Vec q, k, v, g, h0, dout, dhT;  // g empty without a gate tensor; h0 / dhT may be empty (null)
};

bool has_gate(GateKind gate) {
  return gate == GateKind::PerKey || gate == GateKind::ScalarPerHead;
}

// Values rounded to float, so that the f32 kernels see exactly the reference's inputs.
Vec normal(hla::Generator& gen, int64_t n) {
  Vec x(n);
  for (double& e : x) e = static_cast<float>(gen.normal());
  return x;
}

// Gates logsigmoid(x) / n, x ~ N(0, 1): n = 16 decays weakly, n = 0.1 strongly (fla's tests).
Vec log_gates(hla::Generator& gen, int64_t count, double n) {
  Vec g(count);
  for (double& e : g) {
    const double x = gen.normal();
    e = static_cast<float>(-std::log1p(std::exp(-x)) / n);
  }
  return g;
}

Case make_case(RecDims d, GateKind gate, double decay_n, uint64_t seed, bool with_states = true) {
  hla::Generator gen(seed);
  Case c;
  c.d = d;
  c.gate = gate;
  c.scale = 1.0 / std::sqrt(static_cast<double>(d.K));
  const int64_t BTH = d.B * d.T * d.H;
  c.q = normal(gen, BTH * d.K);
  c.k = normal(gen, BTH * d.K);
  c.v = normal(gen, BTH * d.V);
  if (gate == GateKind::PerKey) c.g = log_gates(gen, BTH * d.K, decay_n);
  if (gate == GateKind::ScalarPerHead) c.g = log_gates(gen, BTH, decay_n);
  c.dout = normal(gen, BTH * d.V);
  if (with_states) {
    c.h0 = normal(gen, d.B * d.H * d.K * d.V);
    c.dhT = normal(gen, d.B * d.H * d.K * d.V);
  }
  return c;
}

template <class S>
struct Tier {
  const char* name;
  void (*forward)(const GatedLinearArgs<S>&, const GatedLinearOut<S>&);
  void (*backward)(const GatedLinearArgs<S>&, const GatedLinearGrad<S>&);
};
const Tier<double> kReference{"reference", gated_linear_reference_forward,
                              gated_linear_reference_backward};
template <class S>
Tier<S> recurrent() {
  return {"recurrent", gated_linear_recurrent_forward<S>, gated_linear_recurrent_backward<S>};
}
template <class S>
Tier<S> chunk() {
  return {"chunk", gated_linear_chunk_forward<S>, gated_linear_chunk_backward<S>};
}

template <class S>
struct Result {
  std::vector<S> o, hT, dq, dk, dv, dg, dh0;
};

template <class S>
std::vector<S> cast(const Vec& x) {
  return std::vector<S>(x.begin(), x.end());
}
template <class S>
const S* ptr(const std::vector<S>& x) {
  return x.empty() ? nullptr : x.data();
}

// Forward and backward of one tier, in precision S. With want_states = false, hT and dh0 are
// not requested (null), to exercise the "not wanted" paths.
template <class S>
Result<S> run(const Tier<S>& tier, const Case& c, bool want_states = true) {
  const RecDims& d = c.d;
  const auto q = cast<S>(c.q), k = cast<S>(c.k), v = cast<S>(c.v), g = cast<S>(c.g);
  const auto h0 = cast<S>(c.h0), dout = cast<S>(c.dout), dhT = cast<S>(c.dhT);
  const GatedLinearArgs<S> a{d, c.gate, q.data(), k.data(), v.data(), ptr(g), ptr(h0), c.scale};
  const int64_t BTH = d.B * d.T * d.H, state = d.B * d.H * d.K * d.V;
  Result<S> r;
  r.o.resize(BTH * d.V);
  if (want_states) r.hT.resize(state);
  tier.forward(a, {r.o.data(), want_states ? r.hT.data() : nullptr});
  r.dq.resize(BTH * d.K);
  r.dk.resize(BTH * d.K);
  r.dv.resize(BTH * d.V);
  r.dg.resize(g.size());
  if (want_states) r.dh0.resize(state);
  tier.backward(a, {dout.data(), ptr(dhT), r.dq.data(), r.dk.data(), r.dv.data(),
                    r.dg.empty() ? nullptr : r.dg.data(), want_states ? r.dh0.data() : nullptr});
  return r;
}

// Every output and gradient of `out` against `ref`, by name.
template <class S>
void require_close_all(const Result<double>& ref, const Result<S>& out, double tol) {
  INFO("precision f" << 8 * sizeof(S));
  REQUIRE_CLOSE("o", ref.o, out.o, tol);
  REQUIRE_CLOSE("hT", ref.hT, out.hT, tol);
  REQUIRE_CLOSE("dq", ref.dq, out.dq, tol);
  REQUIRE_CLOSE("dk", ref.dk, out.dk, tol);
  REQUIRE_CLOSE("dv", ref.dv, out.dv, tol);
  REQUIRE_CLOSE("dg", ref.dg, out.dg, tol);
  REQUIRE_CLOSE("dh0", ref.dh0, out.dh0, tol);
}

double loss(const Case& c) {
  const Result<double> r = run(kReference, c);
  double L = 0;
  for (size_t i = 0; i < r.o.size(); ++i) L += r.o[i] * c.dout[i];
  for (size_t i = 0; i < r.hT.size(); ++i) L += r.hT[i] * c.dhT[i];
  return L;
}

// dL/dx by central differences, for the input x = c.*member.
Vec finite_difference(Case c, Vec Case::*member) {
  return hla::test::central_differences(c.*member, [&] { return loss(c); });
}

// Inputs [B,T,...] restricted to steps [t0, t1): `inner` values per step.
Vec time_slice(const Vec& x, const RecDims& d, int64_t inner, int64_t t0, int64_t t1) {
  return hla::test::time_slice(x, d.B, d.T, inner, t0, t1);
}
using hla::test::time_concat;

struct GateCase {
  GateKind gate;
  double decay_n;  // logsigmoid(x) / n; unused without a gate tensor
  const char* name;
};
const GateCase kGateCases[] = {
    {GateKind::PerKey, 16, "gla n=16"},
    {GateKind::PerKey, 1, "gla n=1"},
    {GateKind::PerKey, 0.1, "gla n=0.1"},
    {GateKind::ScalarPerHead, 16, "simple_gla n=16"},
    {GateKind::ScalarPerHead, 1, "simple_gla n=1"},
    {GateKind::ScalarPerHead, 0.1, "simple_gla n=0.1"},
    {GateKind::FixedPerHead, 1, "retention"},
    {GateKind::None, 1, "linear"},
};

}  // namespace

TEST_CASE("retention_log_gamma is log(1 - 2^(-5-h))", "[recurrence][retention]") {
  CHECK(std::exp(retention_log_gamma(0)) == Approx(0.96875).epsilon(1e-15));
  CHECK(std::exp(retention_log_gamma(7)) == Approx(0.999755859375).epsilon(1e-15));
}

TEST_CASE("gated linear reference matches finite differences", "[recurrence][gla][gradcheck]") {
  const GateCase gc =
      GENERATE(values<GateCase>({kGateCases[1], kGateCases[4], kGateCases[6], kGateCases[7]}));
  INFO(gc.name);
  const Case c = make_case({2, 5, 2, 3, 4}, gc.gate, gc.decay_n, 11);
  const Result<double> r = run(kReference, c);
  // central differences in f64: truncation ~eps^2 and round-off ~1e-16/eps, both far below 1e-7
  REQUIRE_CLOSE("dq", finite_difference(c, &Case::q), r.dq, 1e-7);
  REQUIRE_CLOSE("dk", finite_difference(c, &Case::k), r.dk, 1e-7);
  REQUIRE_CLOSE("dv", finite_difference(c, &Case::v), r.dv, 1e-7);
  REQUIRE_CLOSE("dh0", finite_difference(c, &Case::h0), r.dh0, 1e-7);
  if (has_gate(gc.gate)) REQUIRE_CLOSE("dg", finite_difference(c, &Case::g), r.dg, 1e-7);
}

TEST_CASE("RetNet is simple GLA with g = log gamma_h", "[recurrence][retention]") {
  Case fixed = make_case({2, 70, 3, 4, 5}, GateKind::FixedPerHead, 1, 5);
  Case scalar = fixed;
  scalar.gate = GateKind::ScalarPerHead;
  for (int64_t bt = 0; bt < 2 * 70; ++bt)
    for (int64_t h = 0; h < 3; ++h) scalar.g.push_back(retention_log_gamma(h));
  const Result<double> rf = run(kReference, fixed), rs = run(kReference, scalar);
  REQUIRE_CLOSE("o", rs.o, rf.o, 1e-14);
  REQUIRE_CLOSE("hT", rs.hT, rf.hT, 1e-14);
  REQUIRE_CLOSE("dq", rs.dq, rf.dq, 1e-14);
  REQUIRE_CLOSE("dk", rs.dk, rf.dk, 1e-14);
  REQUIRE_CLOSE("dv", rs.dv, rf.dv, 1e-14);
  REQUIRE_CLOSE("dh0", rs.dh0, rf.dh0, 1e-14);
}

TEST_CASE("gated linear recurrent and chunk match the reference", "[recurrence][gla]") {
  const GateCase gc = GENERATE(from_range(std::begin(kGateCases), std::end(kGateCases)));
  const int64_t T = GENERATE(1, 7, 63, 64, 65, 200);
  const int64_t H = GENERATE(1, 3);
  INFO(gc.name << " T=" << T << " H=" << H);
  const Case c = make_case({2, T, H, 8, 5}, gc.gate, gc.decay_n, 100 + T + H);
  const Result<double> ref = run(kReference, c);

  // f64: only the summation order differs from the reference.
  // f32: unit round-off 6e-8 times sums of up to T = 200 terms and exp of cumulative log decays.
  SECTION("recurrent") {
    require_close_all(ref, run(recurrent<double>(), c), 1e-10);
    require_close_all(ref, run(recurrent<float>(), c), 1e-5);
  }
  SECTION("chunk") {
    require_close_all(ref, run(chunk<double>(), c), 1e-10);
    require_close_all(ref, run(chunk<float>(), c), 1e-5);
  }
}

TEST_CASE("gated linear kernels stay accurate under extreme decay", "[recurrence][gla]") {
  // logsigmoid(x) / 0.01: about -70 per step, so a chunk's cumulative decay G reaches -4000 and
  // e^{-G} overflows any float type; every factor must be formed as exp(G_i - G_j) <= 1.
  const GateKind gate = GENERATE(GateKind::PerKey, GateKind::ScalarPerHead);
  const Case c = make_case({1, 130, 2, 8, 5}, gate, 0.01, 61);
  const Result<double> ref = run(kReference, c);
  require_close_all(ref, run(chunk<float>(), c), 1e-5);
  require_close_all(ref, run(recurrent<float>(), c), 1e-5);
}

TEST_CASE("gated linear kernels without h0, hT, dhT, dh0", "[recurrence][gla]") {
  const GateCase gc = GENERATE(values<GateCase>({kGateCases[1], kGateCases[4], kGateCases[6]}));
  INFO(gc.name);
  const Case c = make_case({2, 65, 2, 8, 5}, gc.gate, gc.decay_n, 21, /*with_states=*/false);
  const Result<double> ref = run(kReference, c, false);
  require_close_all(ref, run(recurrent<double>(), c, false), 1e-10);
  require_close_all(ref, run(chunk<double>(), c, false), 1e-10);
}

TEST_CASE("gated linear state carry: T steps == T1 then T2", "[recurrence][gla]") {
  const GateCase gc =
      GENERATE(values<GateCase>({kGateCases[1], kGateCases[4], kGateCases[6], kGateCases[7]}));
  const bool use_chunk = GENERATE(false, true);
  const Tier<double> tier = use_chunk ? chunk<double>() : recurrent<double>();
  INFO(gc.name << " " << tier.name);
  const int64_t T1 = 70, T2 = 93;
  const RecDims d{2, T1 + T2, 2, 8, 5};
  const Case full = make_case(d, gc.gate, gc.decay_n, 31);
  const int64_t gate_width = gc.gate == GateKind::PerKey ? d.H * d.K : d.H;

  auto part = [&](int64_t t0, int64_t t1) {
    Case p = full;
    p.d.T = t1 - t0;
    p.q = time_slice(full.q, d, d.H * d.K, t0, t1);
    p.k = time_slice(full.k, d, d.H * d.K, t0, t1);
    p.v = time_slice(full.v, d, d.H * d.V, t0, t1);
    p.dout = time_slice(full.dout, d, d.H * d.V, t0, t1);
    if (has_gate(gc.gate)) p.g = time_slice(full.g, d, gate_width, t0, t1);
    return p;
  };
  Case first = part(0, T1), second = part(T1, T1 + T2);
  const Result<double> whole = run(tier, full);
  second.h0 = run(tier, first).hT;  // the carried state
  const Result<double> r2 = run(tier, second);
  first.dhT = r2.dh0;  // the carried state gradient
  const Result<double> r1 = run(tier, first);

  REQUIRE_CLOSE("o", whole.o, time_concat(r1.o, r2.o, d.B), 1e-12);
  REQUIRE_CLOSE("hT", whole.hT, r2.hT, 1e-12);
  REQUIRE_CLOSE("dq", whole.dq, time_concat(r1.dq, r2.dq, d.B), 1e-12);
  REQUIRE_CLOSE("dk", whole.dk, time_concat(r1.dk, r2.dk, d.B), 1e-12);
  REQUIRE_CLOSE("dv", whole.dv, time_concat(r1.dv, r2.dv, d.B), 1e-12);
  REQUIRE_CLOSE("dg", whole.dg, time_concat(r1.dg, r2.dg, d.B), 1e-12);
  REQUIRE_CLOSE("dh0", whole.dh0, r1.dh0, 1e-12);
}
