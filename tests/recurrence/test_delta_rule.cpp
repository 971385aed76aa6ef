// Tests of the delta-rule family (DeltaNet, Gated DeltaNet): kernels/recurrence.h.
//
// The ladder (spec/style.md P10):
//   1. the reference's backward against central finite differences of its forward (double),
//      for every input, through the one scalar L = sum(o * dout) + sum(hT * dhT);
//   2. the recurrent and chunked kernels against the reference, every output and gradient by
//      name, on ragged T around the chunk size, K != V, three decay regimes, f64 and f32;
//   3. state carry: T tokens equal T1 then T2 from the carried state, forward and backward.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <utility>
#include <type_traits>
#include <vector>

#include "kernels/recurrence.h"
#include "tensor/random.h"
#include "tests/helpers/close.h"
#include "tests/helpers/sequences.h"

namespace {

using namespace hla::kernels;
using Buf = std::vector<double>;

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double logsigmoid(double x) { return -std::log1p(std::exp(-x)); }

// Decay regimes of the tests (fla's): g = logsigmoid(x) / n; n = 0 means DeltaNet (no gate).
struct Variant {
  double decay_n = 0;
  bool l2norm = false;
};

// One delta-rule problem in double: inputs and the upstream gradients dout, dhT.
struct Problem {
  RecDims d;
  Variant var;
  Buf q, k, v, beta, g, h0, dout, dhT;
  double scale = 1;
};

Problem make_problem(RecDims d, Variant var, uint64_t seed) {
  hla::Generator gen(seed);
  auto normal = [&](int64_t n, double sd) {
    Buf x(n);
    for (double& e : x) e = sd * gen.normal();
    return x;
  };
  Problem p{d, var, {}, {}, {}, {}, {}, {}, {}, {}, 1.0 / std::sqrt(double(d.K))};
  const int64_t rows = d.B * d.T * d.H;
  p.q = normal(rows * d.K, 1.0);
  p.k = normal(rows * d.K, 1.0);
  if (!var.l2norm) {  // unit keys keep the recurrence contractive for beta in (0,2)
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < d.K; ++i) ss += p.k[r * d.K + i] * p.k[r * d.K + i];
      for (int64_t i = 0; i < d.K; ++i) p.k[r * d.K + i] /= std::sqrt(ss);
    }
  }
  p.v = normal(rows * d.V, 1.0);
  p.beta = normal(rows, 1.0);
  for (double& b : p.beta) b = 2.0 * sigmoid(b);  // allow_neg_eigval: beta in (0, 2)
  if (var.decay_n > 0) {
    p.g = normal(rows, 1.0);
    for (double& g : p.g) g = logsigmoid(g) / var.decay_n;
  }
  p.h0 = normal(d.B * d.H * d.K * d.V, 0.5);
  p.dout = normal(rows * d.V, 1.0);
  p.dhT = normal(d.B * d.H * d.K * d.V, 1.0);
  return p;
}

// The problem with its inputs rounded to float, so that f32 kernels and the f64 reference see
// the same numbers and only the kernel's arithmetic differs.
Problem rounded_to_float(Problem p) {
  for (Buf* x : {&p.q, &p.k, &p.v, &p.beta, &p.g, &p.h0, &p.dout, &p.dhT})
    for (double& e : *x) e = static_cast<float>(e);
  return p;
}

template <class S>
struct Result {
  std::vector<S> o, hT, dq, dk, dv, dbeta, dg, dh0;
};

enum class Tier { Reference, Recurrent, Chunk };

template <class S>
Result<S> run(const Problem& p, Tier tier) {
  auto cast = [](const Buf& x) { return std::vector<S>(x.begin(), x.end()); };
  const std::vector<S> q = cast(p.q), k = cast(p.k), v = cast(p.v), beta = cast(p.beta),
                       g = cast(p.g), h0 = cast(p.h0), dout = cast(p.dout), dhT = cast(p.dhT);
  const RecDims& d = p.d;
  const int64_t rows = d.B * d.T * d.H, states = d.B * d.H * d.K * d.V;
  DeltaRuleArgs<S> a{d, q.data(), k.data(), v.data(), beta.data(),
                     g.empty() ? nullptr : g.data(), h0.data(), p.scale, p.var.l2norm};
  Result<S> r;
  r.o.resize(rows * d.V);
  r.hT.resize(states);
  r.dq.resize(rows * d.K);
  r.dk.resize(rows * d.K);
  r.dv.resize(rows * d.V);
  r.dbeta.resize(rows);
  r.dg.resize(g.size());
  r.dh0.resize(states);
  const DeltaRuleOut<S> out{r.o.data(), r.hT.data()};
  const DeltaRuleGrad<S> grad{dout.data(), dhT.data(), r.dq.data(),    r.dk.data(),
                              r.dv.data(), r.dbeta.data(), g.empty() ? nullptr : r.dg.data(),
                              r.dh0.data()};
  if constexpr (std::is_same_v<S, double>) {
    if (tier == Tier::Reference) {
      delta_rule_reference_forward(a, out);
      delta_rule_reference_backward(a, grad);
      return r;
    }
  }
  if (tier == Tier::Recurrent) {
    delta_rule_recurrent_forward(a, out);
    delta_rule_recurrent_backward(a, grad);
  } else {
    delta_rule_chunk_forward(a, out);
    delta_rule_chunk_backward(a, grad);
  }
  return r;
}

template <class S>
void require_all_close(const Result<double>& ref, const Result<S>& out, double tol,
                       double tol_dg) {
  REQUIRE_CLOSE("o", ref.o, out.o, tol);
  REQUIRE_CLOSE("hT", ref.hT, out.hT, tol);
  REQUIRE_CLOSE("dq", ref.dq, out.dq, tol);
  REQUIRE_CLOSE("dk", ref.dk, out.dk, tol);
  REQUIRE_CLOSE("dv", ref.dv, out.dv, tol);
  REQUIRE_CLOSE("dbeta", ref.dbeta, out.dbeta, tol);
  REQUIRE_CLOSE("dg", ref.dg, out.dg, tol_dg);
  REQUIRE_CLOSE("dh0", ref.dh0, out.dh0, tol);
}

// L = sum(o * dout) + sum(hT * dhT) by the reference forward.
double loss(const Problem& p) {
  const Result<double> r = run<double>(p, Tier::Reference);
  double L = 0;
  for (size_t i = 0; i < r.o.size(); ++i) L += r.o[i] * p.dout[i];
  for (size_t i = 0; i < r.hT.size(); ++i) L += r.hT[i] * p.dhT[i];
  return L;
}

// Central differences of loss() with respect to every element of one input.
Buf numeric_grad(Problem p, Buf Problem::*input) {
  return hla::test::central_differences(p.*input, [&] { return loss(p); });
}

// x [B,T,D'] (D' = H*D) -> rows t0 .. t0+n-1 of every batch.
Buf slice_time(const Buf& x, const RecDims& d, int64_t D, int64_t t0, int64_t n) {
  return hla::test::time_slice(x, d.B, d.T, d.H * D, t0, t0 + n);
}

Problem slice_problem(const Problem& p, int64_t t0, int64_t n) {
  Problem s = p;
  s.d.T = n;
  for (auto [x, D] : {std::pair{&Problem::q, p.d.K}, {&Problem::k, p.d.K}, {&Problem::v, p.d.V},
                      {&Problem::beta, int64_t{1}}, {&Problem::dout, p.d.V}}) {
    s.*x = slice_time(p.*x, p.d, D, t0, n);
  }
  if (!p.g.empty()) s.g = slice_time(p.g, p.d, 1, t0, n);
  return s;
}

}  // namespace

TEST_CASE("delta_rule: reference backward matches finite differences",
          "[recurrence][delta][gradcheck]") {
  const RecDims d{2, 5, 2, 3, 2};
  for (const Variant var : {Variant{0, false}, Variant{0, true}, Variant{1, false},
                            Variant{1, true}, Variant{0.1, true}}) {
    INFO("decay_n=" << var.decay_n << " l2norm=" << var.l2norm);
    const Problem p = make_problem(d, var, 7);
    const Result<double> r = run<double>(p, Tier::Reference);
    const double tol = 1e-7;  // central differences, eps 1e-5: O(eps^2) truncation
    REQUIRE_CLOSE("dq", r.dq, numeric_grad(p, &Problem::q), tol);
    REQUIRE_CLOSE("dk", r.dk, numeric_grad(p, &Problem::k), tol);
    REQUIRE_CLOSE("dv", r.dv, numeric_grad(p, &Problem::v), tol);
    REQUIRE_CLOSE("dbeta", r.dbeta, numeric_grad(p, &Problem::beta), tol);
    REQUIRE_CLOSE("dh0", r.dh0, numeric_grad(p, &Problem::h0), tol);
    if (var.decay_n > 0) REQUIRE_CLOSE("dg", r.dg, numeric_grad(p, &Problem::g), tol);
  }
}

TEST_CASE("delta_rule: reference with g = 0 is DeltaNet", "[recurrence][delta]") {
  const Problem plain = make_problem({1, 9, 2, 4, 3}, {0, true}, 3);
  Problem gated = plain;
  gated.g.assign(plain.d.B * plain.d.T * plain.d.H, 0.0);
  const Result<double> a = run<double>(plain, Tier::Reference), b = run<double>(gated, Tier::Reference);
  REQUIRE_CLOSE("o", a.o, b.o, 1e-15);
  REQUIRE_CLOSE("dk", a.dk, b.dk, 1e-15);
  REQUIRE_CLOSE("dbeta", a.dbeta, b.dbeta, 1e-15);
}

TEST_CASE("delta_rule: reference dg satisfies the identity of spec 6.6", "[recurrence][delta]") {
  // dg_t = sum_{u >= t} (q_u . dq_u - v_u . dv_u) + <hT, dhT>  (q as the recurrence reads it)
  const Problem p = make_problem({2, 40, 2, 4, 3}, {1, false}, 5);
  const Result<double> r = run<double>(p, Tier::Reference);
  const RecDims& d = p.d;
  Buf identity(r.dg.size());
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      double acc = 0;
      for (int64_t n = 0; n < d.K * d.V; ++n)
        acc += r.hT[(b * d.H + h) * d.K * d.V + n] * p.dhT[(b * d.H + h) * d.K * d.V + n];
      for (int64_t t = d.T - 1; t >= 0; --t) {
        const int64_t row = (b * d.T + t) * d.H + h;
        for (int64_t i = 0; i < d.K; ++i) acc += p.q[row * d.K + i] * r.dq[row * d.K + i];
        for (int64_t j = 0; j < d.V; ++j) acc -= p.v[row * d.V + j] * r.dv[row * d.V + j];
        identity[row] = acc;
      }
    }
  REQUIRE_CLOSE("dg", r.dg, identity, 1e-12);
}

TEMPLATE_TEST_CASE("delta_rule: recurrent and chunk kernels match the reference",
                   "[recurrence][delta]", float, double) {
  // f64: rounding only. f32: single-precision arithmetic over T <= 200 steps and 64-row chunks;
  // f32 dg: under strong decay (n = 0.1) the chunked dg sums q-side and k-side decay terms
  // that cancel ~10x (measured worst 2.2e-5).
  const bool f64 = std::is_same_v<TestType, double>;
  const double tol = f64 ? 1e-10 : 1e-5, tol_dg = f64 ? 1e-10 : 5e-5;
  const Variant variants[] = {{0, false}, {0, true}, {16, false}, {1, true}, {0.1, false},
                              {0.1, true}};
  const int64_t H = GENERATE(1, 3);
  const int64_t T = GENERATE(1, 7, 63, 64, 65, 200);
  for (const Variant& var : variants) {
    INFO("T=" << T << " H=" << H << " decay_n=" << var.decay_n << " l2norm=" << var.l2norm);
    Problem p = make_problem({2, T, H, 8, 5}, var, 100 + T);
    if (std::is_same_v<TestType, float>) p = rounded_to_float(p);
    const Result<double> ref = run<double>(p, Tier::Reference);
    {
      INFO("recurrent");
      require_all_close(ref, run<TestType>(p, Tier::Recurrent), tol, tol_dg);
    }
    {
      INFO("chunk");
      require_all_close(ref, run<TestType>(p, Tier::Chunk), tol, tol_dg);
    }
  }
}

TEST_CASE("delta_rule: T tokens equal T1 then T2 from the carried state", "[recurrence][delta]") {
  const Tier tier = GENERATE(Tier::Recurrent, Tier::Chunk);
  const int64_t T = 130, T1 = 70, T2 = T - T1;
  const Problem full = make_problem({2, T, 2, 6, 4}, {1, true}, 11);
  Problem first = slice_problem(full, 0, T1), second = slice_problem(full, T1, T2);

  const Result<double> all = run<double>(full, tier);
  const Result<double> r1_fwd = run<double>(first, tier);
  second.h0 = r1_fwd.hT;  // carry the state
  const Result<double> r2 = run<double>(second, tier);
  first.dhT = r2.dh0;  // carry its gradient back
  const Result<double> r1 = run<double>(first, tier);

  const RecDims& d = full.d;
  const double tol = 1e-12;
  REQUIRE_CLOSE("o[0,T1)", slice_time(all.o, d, d.V, 0, T1), r1.o, tol);
  REQUIRE_CLOSE("o[T1,T)", slice_time(all.o, d, d.V, T1, T2), r2.o, tol);
  REQUIRE_CLOSE("hT", all.hT, r2.hT, tol);
  REQUIRE_CLOSE("dq[0,T1)", slice_time(all.dq, d, d.K, 0, T1), r1.dq, tol);
  REQUIRE_CLOSE("dk[T1,T)", slice_time(all.dk, d, d.K, T1, T2), r2.dk, tol);
  REQUIRE_CLOSE("dv[0,T1)", slice_time(all.dv, d, d.V, 0, T1), r1.dv, tol);
  REQUIRE_CLOSE("dbeta[0,T1)", slice_time(all.dbeta, d, 1, 0, T1), r1.dbeta, tol);
  REQUIRE_CLOSE("dg[0,T1)", slice_time(all.dg, d, 1, 0, T1), r1.dg, tol);
  REQUIRE_CLOSE("dg[T1,T)", slice_time(all.dg, d, 1, T1, T2), r2.dg, tol);
  REQUIRE_CLOSE("dh0", all.dh0, r1.dh0, tol);
}
