// The delta rules' value split (autograd/functions/value_split.h): running each head as s slices
// of its values gives the unsplit op's o, hT and every input gradient. f64 on the CPU, both
// tiers, DeltaNet and Gated DeltaNet (strong and weak decay), with and without l2norm_qk, K != V,
// H = 1 and 3, ragged T across chunk boundaries, an initial state and a final-state gradient;
// then a carried state split differently from the call that made it, and the argument errors.
// Tolerance (relative RMS, by name): 1e-12, the slices do the same arithmetic as the whole head
// except the sum of the shared inputs' gradients over slices (rounding only).
#include <catch2/catch.hpp>

#include "autograd/grad_mode.h"
#include "autograd/primitives.h"
#include "autograd/recurrences.h"
#include "tests/helpers/close.h"

using namespace hla;

namespace {

Generator gen(2024);
Tensor rnd(const Shape& s, double lo = -1, double hi = 1) {
  return Tensor::rand(s, gen, DType::f64, lo, hi);
}

enum class Decay { None, Strong, Weak };

// Inputs and upstream gradients of one call; beta in (0.1, 0.9); log decays <= 0.
struct Problem {
  Tensor q, k, v, beta, g, h0, dout, dhT;
};
Problem make_problem(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, Decay decay) {
  Problem p;
  p.q = rnd({B, T, H, K});
  p.k = rnd({B, T, H, K}, -0.5, 0.5);  // small enough that the raw-key recurrence stays stable
  p.v = rnd({B, T, H, V});
  p.beta = rnd({B, T, H}, 0.1, 0.9);
  if (decay == Decay::Strong) p.g = rnd({B, T, H}, -2.0, -0.1);
  if (decay == Decay::Weak) p.g = rnd({B, T, H}, -0.05, 0.0);
  p.h0 = rnd({B, H, K, V});
  p.dout = rnd({B, T, H, V});
  p.dhT = rnd({B, H, K, V});
  return p;
}

// o, hT and the gradients of q, k, v, beta, h0, [g] of loss = <o, dout> + <hT, dhT>.
std::vector<Tensor> run(const Problem& p, const RecurrenceOptions& opt) {
  Var q(p.q, true), k(p.k, true), v(p.v, true), beta(p.beta, true), h0(p.h0, true);
  Var g = p.g.defined() ? Var(p.g, true) : Var();
  const RecurrenceResult r = g.defined() ? gated_delta_rule(q, k, v, g, beta, h0, opt)
                                         : delta_rule(q, k, v, beta, h0, opt);
  (sum(r.o * Var(p.dout)) + sum(r.hT * Var(p.dhT))).backward();
  std::vector<Tensor> out{r.o.data(), r.hT.data(), q.grad(), k.grad(),
                          v.grad(),   beta.grad(), h0.grad()};
  if (g.defined()) out.push_back(g.grad());
  return out;
}

const char* const kNames[] = {"o", "hT", "dq", "dk", "dv", "dbeta", "dh0", "dg"};

}  // namespace

TEST_CASE("value split: s slices of the values equal the whole head", "[autograd][recurrence]") {
  struct Shape5 {
    int64_t B, T, H, K, V;
  };
  for (const Shape5 s :
       {Shape5{2, 100, 3, 5, 12}, Shape5{1, 130, 1, 8, 12}, Shape5{2, 9, 2, 6, 12}})
    for (Impl impl : {Impl::Recurrent, Impl::Chunk})
      for (Decay decay : {Decay::None, Decay::Strong, Decay::Weak})
        for (bool l2norm : {false, true}) {
          const Problem p = make_problem(s.B, s.T, s.H, s.K, s.V, decay);
          const std::vector<Tensor> whole = run(p, {impl, 0.0, l2norm, 1});
          for (int64_t split : {2, 3, 4, 12}) {
            INFO("B " << s.B << " T " << s.T << " H " << s.H << " K " << s.K << " V " << s.V << " "
                      << impl_name(impl) << " decay " << int(decay) << " l2norm " << l2norm
                      << " split " << split);
            const std::vector<Tensor> sliced = run(p, {impl, 0.0, l2norm, split});
            REQUIRE(sliced.size() == whole.size());
            for (size_t i = 0; i < whole.size(); ++i) {
              CHECK(sliced[i].shape() == whole[i].shape());
              REQUIRE_CLOSE(kNames[i], whole[i].to_vector<double>(), sliced[i].to_vector<double>(),
                            1e-12);
            }
          }
        }
}

TEST_CASE("value split: a state carried between calls split differently",
          "[autograd][recurrence]") {
  const Problem p = make_problem(2, 150, 2, 7, 12, Decay::Weak);
  const std::vector<Tensor> whole = run(p, {Impl::Chunk, 0.0, true, 1});
  // T = 150 as 70 tokens in 3 slices, then 80 tokens in 4 slices from the carried state.
  NoGradGuard ng;
  auto part = [&](int64_t t0, int64_t t1, const Var& h0, int64_t split) {
    const auto cut = [&](const Tensor& x) { return Var(x.narrow(1, t0, t1 - t0).contiguous()); };
    return gated_delta_rule(cut(p.q), cut(p.k), cut(p.v), cut(p.g), cut(p.beta), h0,
                            {Impl::Chunk, 0.0, true, split});
  };
  const RecurrenceResult first = part(0, 70, Var(p.h0), 3);
  const RecurrenceResult second = part(70, 150, first.hT, 4);
  const Tensor o = concat({first.o, second.o}, 1).data();
  REQUIRE_CLOSE("o", whole[0].to_vector<double>(), o.to_vector<double>(), 1e-12);
  REQUIRE_CLOSE("hT", whole[1].to_vector<double>(), second.hT.data().to_vector<double>(), 1e-12);
}

TEST_CASE("value split: a count that does not divide V is an error naming it",
          "[autograd][recurrence]") {
  const Problem p = make_problem(1, 4, 1, 3, 12, Decay::None);
  const Var q(p.q), k(p.k), v(p.v), beta(p.beta);
  for (int64_t bad : {5, 24, -1}) {
    INFO("value_split " << bad);
    try {
      (void)delta_rule(q, k, v, beta, Var(), {Impl::Chunk, 0.0, false, bad});
      FAIL("no error");
    } catch (const Error& e) {
      CHECK_THAT(e.what(), Catch::Contains("value_split") && Catch::Contains(std::to_string(bad)));
    }
  }
  // 0 (the op's choice) is 1 on the CPU: the same numbers as an explicit 1.
  const RecurrenceResult chosen = delta_rule(q, k, v, beta, Var(), {Impl::Chunk, 0.0, false, 0});
  const RecurrenceResult one = delta_rule(q, k, v, beta, Var(), {Impl::Chunk, 0.0, false, 1});
  CHECK(chosen.o.data().to_vector<double>() == one.o.data().to_vector<double>());
}
