// Tests of HGRN's elementwise recurrence (kernels/recurrence.h), in three tiers:
//
//   reference            vs central finite differences (f64): dx, dg, dh0, with dout and dhT
//   recurrent, chunk     vs reference (f64 and f32): o, hT, dx, dg, dh0 by name, over ragged T,
//                        a width D that is not a multiple of the SIMD width, and weak /
//                        moderate / strong decay
//   recurrent            channel tiles (several per batch row when threads outnumber rows)
//   recurrent, chunk     state carry: T steps == T1 steps, then T2 from the carried state (and the
//                        backward chained through dh0 -> dhT)
#include <omp.h>

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
  HgrnDims d;
  Vec x, g, h0, dout, dhT;  // h0 / dhT may be empty (null)
};

// Values rounded to float, so that the f32 kernels see exactly the reference's inputs.
Vec normal(hla::Generator& gen, int64_t n) {
  Vec x(n);
  for (double& e : x) e = static_cast<float>(gen.normal());
  return x;
}

// Gates logsigmoid(z) / n, z ~ N(0, 1): n = 16 decays weakly, n = 0.1 strongly.
Vec log_gates(hla::Generator& gen, int64_t count, double n) {
  Vec g(count);
  for (double& e : g) e = static_cast<float>(-std::log1p(std::exp(-gen.normal())) / n);
  return g;
}

Case make_case(HgrnDims d, double decay_n, uint64_t seed, bool with_states = true) {
  hla::Generator gen(seed);
  Case c;
  c.d = d;
  c.x = normal(gen, d.B * d.T * d.D);
  c.g = log_gates(gen, d.B * d.T * d.D, decay_n);
  c.dout = normal(gen, d.B * d.T * d.D);
  if (with_states) {
    c.h0 = normal(gen, d.B * d.D);
    c.dhT = normal(gen, d.B * d.D);
  }
  return c;
}

template <class S>
struct Tier {
  const char* name;
  void (*forward)(const HgrnArgs<S>&, const HgrnOut<S>&);
  void (*backward)(const HgrnArgs<S>&, const HgrnGrad<S>&);
};
const Tier<double> kReference{"reference", hgrn_reference_forward, hgrn_reference_backward};
template <class S>
Tier<S> recurrent() {
  return {"recurrent", hgrn_recurrent_forward<S>, hgrn_recurrent_backward<S>};
}
template <class S>
Tier<S> chunk() {
  return {"chunk", hgrn_chunk_forward<S>, hgrn_chunk_backward<S>};
}

template <class S>
struct Result {
  std::vector<S> o, hT, dx, dg, dh0;
};

// Forward and backward of one tier, in precision S (hT and dh0 only when c has states).
template <class S>
Result<S> run(const Tier<S>& tier, const Case& c) {
  const std::vector<S> x(c.x.begin(), c.x.end()), g(c.g.begin(), c.g.end());
  const std::vector<S> h0(c.h0.begin(), c.h0.end()), dhT(c.dhT.begin(), c.dhT.end());
  const std::vector<S> dout(c.dout.begin(), c.dout.end());
  const bool states = !c.h0.empty();
  const HgrnArgs<S> a{c.d, x.data(), g.data(), states ? h0.data() : nullptr};
  Result<S> r;
  r.o.resize(x.size());
  r.dx.resize(x.size());
  r.dg.resize(x.size());
  if (states) {
    r.hT.resize(h0.size());
    r.dh0.resize(h0.size());
  }
  tier.forward(a, {r.o.data(), states ? r.hT.data() : nullptr});
  tier.backward(a, {dout.data(), states ? dhT.data() : nullptr, r.dx.data(), r.dg.data(),
                    states ? r.dh0.data() : nullptr});
  return r;
}

template <class S>
void require_close_all(const Result<double>& ref, const Result<S>& out, double tol) {
  INFO("precision f" << 8 * sizeof(S));
  REQUIRE_CLOSE("o", ref.o, out.o, tol);
  REQUIRE_CLOSE("hT", ref.hT, out.hT, tol);
  REQUIRE_CLOSE("dx", ref.dx, out.dx, tol);
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

// [B,T,D] restricted to steps [t0, t1).
Vec time_slice(const Vec& x, const HgrnDims& d, int64_t t0, int64_t t1) {
  return hla::test::time_slice(x, d.B, d.T, d.D, t0, t1);
}
using hla::test::time_concat;

}  // namespace

TEST_CASE("hgrn reference matches finite differences", "[recurrence][hgrn][gradcheck]") {
  const Case c = make_case({2, 5, 3}, 1, 7);
  const Result<double> r = run(kReference, c);
  // central differences in f64: truncation ~eps^2 and round-off ~1e-16/eps, both far below 1e-7
  REQUIRE_CLOSE("dx", finite_difference(c, &Case::x), r.dx, 1e-7);
  REQUIRE_CLOSE("dg", finite_difference(c, &Case::g), r.dg, 1e-7);
  REQUIRE_CLOSE("dh0", finite_difference(c, &Case::h0), r.dh0, 1e-7);
}

TEST_CASE("hgrn recurrent and chunk match the reference", "[recurrence][hgrn]") {
  const double decay_n = GENERATE(16.0, 1.0, 0.1);
  const int64_t T = GENERATE(1, 7, 63, 64, 65, 200);
  INFO("n=" << decay_n << " T=" << T);
  // D = 70: not a multiple of any SIMD width
  const Case c = make_case({2, T, 70}, decay_n, 300 + T);
  const Result<double> ref = run(kReference, c);
  // f64: only the summation order differs from the reference.
  // f32: unit round-off 6e-8 over products and sums along up to T = 200 steps.
  SECTION("recurrent") {
    require_close_all(ref, run(recurrent<double>(), c), 1e-10);
    require_close_all(ref, run(recurrent<float>(), c), 1e-5);
  }
  SECTION("chunk") {
    require_close_all(ref, run(chunk<double>(), c), 1e-10);
    require_close_all(ref, run(chunk<float>(), c), 1e-5);
  }
}

TEST_CASE("hgrn recurrent splits channels into tiles when threads outnumber rows",
          "[recurrence][hgrn]") {
  // With 4 threads and B = 1 the recurrent kernel cuts D = 150 into 3 tiles of 50 channels.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(4);
  const Case c = make_case({1, 70, 150}, 1, 45);
  const Result<double> ref = run(kReference, c), out = run(recurrent<double>(), c);
  omp_set_num_threads(threads);
  require_close_all(ref, out, 1e-10);
}

TEST_CASE("hgrn kernels without h0, hT, dhT, dh0", "[recurrence][hgrn]") {
  const Case c = make_case({2, 130, 9}, 1, 41, /*with_states=*/false);
  const Result<double> ref = run(kReference, c);
  require_close_all(ref, run(recurrent<double>(), c), 1e-10);
  require_close_all(ref, run(chunk<double>(), c), 1e-10);
}

TEST_CASE("hgrn state carry: T steps == T1 then T2", "[recurrence][hgrn]") {
  const bool use_chunk = GENERATE(false, true);
  const Tier<double> tier = use_chunk ? chunk<double>() : recurrent<double>();
  INFO(tier.name);
  const int64_t T1 = 70, T2 = 93;
  const HgrnDims d{2, T1 + T2, 9};
  const Case full = make_case(d, 1, 51);
  auto part = [&](int64_t t0, int64_t t1) {
    Case p = full;
    p.d.T = t1 - t0;
    p.x = time_slice(full.x, d, t0, t1);
    p.g = time_slice(full.g, d, t0, t1);
    p.dout = time_slice(full.dout, d, t0, t1);
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
  REQUIRE_CLOSE("dx", whole.dx, time_concat(r1.dx, r2.dx, d.B), 1e-12);
  REQUIRE_CLOSE("dg", whole.dg, time_concat(r1.dg, r2.dg, d.B), 1e-12);
  REQUIRE_CLOSE("dh0", whole.dh0, r1.dh0, 1e-12);
}
