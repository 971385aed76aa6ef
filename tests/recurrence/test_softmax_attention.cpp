// Tests of softmax attention (kernels/recurrence.h): the reference's backward against central
// finite differences of its forward, then the flash-style tiled kernel against the reference
// (o, lse, dq, dk, dv by name) on ragged T, causal / non-causal, sliding windows and GQA.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/recurrence.h"
#include "tensor/random.h"
#include "tests/helpers/close.h"
#include "tests/helpers/sequences.h"

namespace {

using namespace hla::kernels;
using Buf = std::vector<double>;

struct Mask {
  int64_t H, Hkv;
  bool causal;
  int64_t window;
};

struct Problem {
  AttnDims d;
  Mask mask;
  Buf q, k, v, dout;
  double scale = 1;
};

Problem make_problem(int64_t B, int64_t T, int64_t K, int64_t V, Mask m, uint64_t seed,
                     bool round_to_float = false) {
  hla::Generator gen(seed);
  auto normal = [&](int64_t n) {
    Buf x(n);
    for (double& e : x) e = round_to_float ? double(float(gen.normal())) : gen.normal();
    return x;
  };
  Problem p{{B, T, m.H, m.Hkv, K, V}, m, {}, {}, {}, {}, 1.0 / std::sqrt(double(K))};
  p.q = normal(B * T * m.H * K);
  p.k = normal(B * T * m.Hkv * K);
  p.v = normal(B * T * m.Hkv * V);
  p.dout = normal(B * T * m.H * V);
  return p;
}

template <class S>
struct Result {
  std::vector<S> o, lse, dq, dk, dv;
};

template <class S>
Result<S> run(const Problem& p, bool tiled) {
  auto cast = [](const Buf& x) { return std::vector<S>(x.begin(), x.end()); };
  const std::vector<S> q = cast(p.q), k = cast(p.k), v = cast(p.v), dout = cast(p.dout);
  const AttnDims& d = p.d;
  const AttentionArgs<S> a{d, q.data(), k.data(), v.data(), p.mask.causal, p.mask.window,
                           p.scale};
  Result<S> r;
  r.o.resize(d.B * d.T * d.H * d.V);
  r.lse.resize(d.B * d.H * d.T);
  r.dq.resize(q.size());
  r.dk.resize(k.size());
  r.dv.resize(v.size());
  const AttentionOut<S> out{r.o.data(), r.lse.data()};
  const AttentionGrad<S> grad{dout.data(), r.o.data(), r.lse.data(),
                              r.dq.data(),  r.dk.data(), r.dv.data()};
  if constexpr (std::is_same_v<S, double>) {
    if (!tiled) {
      softmax_attention_reference_forward(a, out);
      softmax_attention_reference_backward(a, grad);
      return r;
    }
  }
  softmax_attention_tiled_forward(a, out);
  softmax_attention_tiled_backward(a, grad);
  return r;
}

// L = sum(o * dout) by the reference forward.
double loss(const Problem& p) {
  const Result<double> r = run<double>(p, false);
  double L = 0;
  for (size_t i = 0; i < r.o.size(); ++i) L += r.o[i] * p.dout[i];
  return L;
}

Buf numeric_grad(Problem p, Buf Problem::*input) {
  return hla::test::central_differences(p.*input, [&] { return loss(p); });
}

}  // namespace

TEST_CASE("softmax_attention: reference backward matches finite differences",
          "[recurrence][attention][gradcheck]") {
  const Mask masks[] = {{2, 2, true, 0},    // causal
                        {2, 2, true, 3},    // causal + window
                        {2, 2, false, 0},   // non-causal
                        {2, 2, false, 3},   // non-causal + window
                        {4, 2, true, 0}};   // GQA
  for (const Mask& m : masks) {
    INFO("H=" << m.H << " Hkv=" << m.Hkv << " causal=" << m.causal << " window=" << m.window);
    const Problem p = make_problem(2, 6, 3, 2, m, 21);
    const Result<double> r = run<double>(p, false);
    const double tol = 1e-7;  // central differences, eps 1e-5: O(eps^2) truncation
    REQUIRE_CLOSE("dq", r.dq, numeric_grad(p, &Problem::q), tol);
    REQUIRE_CLOSE("dk", r.dk, numeric_grad(p, &Problem::k), tol);
    REQUIRE_CLOSE("dv", r.dv, numeric_grad(p, &Problem::v), tol);
  }
}

TEST_CASE("softmax_attention: reference rows are softmax-weighted averages",
          "[recurrence][attention]") {
  // With v constant over keys, every allowed-key average returns that constant; with a window
  // of 1 each query sees only its own key: o_i = v_i and lse_i = scale q_i . k_i.
  Problem p = make_problem(1, 9, 4, 3, {2, 1, true, 1}, 4);
  const Result<double> r = run<double>(p, false);
  for (int64_t i = 0; i < p.d.T; ++i)
    for (int64_t h = 0; h < p.d.H; ++h) {
      double s = 0;
      for (int64_t x = 0; x < p.d.K; ++x) s += p.q[(i * p.d.H + h) * p.d.K + x] * p.k[i * p.d.K + x];
      REQUIRE(r.lse[h * p.d.T + i] == Approx(p.scale * s).epsilon(1e-12));
      for (int64_t x = 0; x < p.d.V; ++x)
        REQUIRE(r.o[(i * p.d.H + h) * p.d.V + x] == Approx(p.v[i * p.d.V + x]).epsilon(1e-12));
    }
}

TEMPLATE_TEST_CASE("softmax_attention: tiled kernel matches the reference",
                   "[recurrence][attention]", float, double) {
  const bool f64 = std::is_same_v<TestType, double>;
  const double tol = f64 ? 1e-10 : 1e-5;  // f32: single-precision tiles over <= 200 keys
  const Mask masks[] = {{2, 2, true, 0},   {2, 2, true, 16}, {2, 2, false, 0},
                        {2, 2, false, 70}, {4, 2, true, 0},  {4, 1, true, 100},
                        {3, 3, true, 2}};
  const int64_t T = GENERATE(1, 7, 65, 200);
  for (const Mask& m : masks) {
    INFO("T=" << T << " H=" << m.H << " Hkv=" << m.Hkv << " causal=" << m.causal
              << " window=" << m.window);
    const Problem p = make_problem(2, T, 16, 12, m, 300 + T, !f64);
    const Result<double> ref = run<double>(p, false);
    const Result<TestType> out = run<TestType>(p, true);
    REQUIRE_CLOSE("o", ref.o, out.o, tol);
    REQUIRE_CLOSE("lse", ref.lse, out.lse, tol);
    REQUIRE_CLOSE("dq", ref.dq, out.dq, tol);
    REQUIRE_CLOSE("dk", ref.dk, out.dk, tol);
    REQUIRE_CLOSE("dv", ref.dv, out.dv, tol);
  }
}
