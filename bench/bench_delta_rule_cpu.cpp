// bench_delta_rule_cpu: CPU throughput (tokens/s = items_per_second, one item per (b, t)) of
//   - the delta-rule kernels, recurrent vs chunk, forward and forward+backward, for DeltaNet and
//     Gated DeltaNet (f32, B=2, H=4, K=V=64, l2norm_qk, T in {256, 1024, 4096});
//   - softmax attention, reference (f64) vs tiled (f64, f32), causal, same shapes, T in
//     {256, 1024}.
// Every case first runs its kernel on a small input and compares every output and gradient with
// the reference (relative RMS); a mismatch skips the case with an error instead of timing it.
//
//   ./bench_delta_rule_cpu --benchmark_filter=delta
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/recurrence.h"
#include "tensor/random.h"

namespace {

using namespace hla::kernels;

constexpr int64_t kB = 2, kH = 4, kK = 64, kV = 64;

template <class S>
std::vector<S> normal(hla::Generator& gen, int64_t n, double sd = 1.0) {
  std::vector<S> x(n);
  for (S& e : x) e = S(sd * gen.normal());
  return x;
}

template <class A, class B>
double rel_rms(const std::vector<A>& ref, const std::vector<B>& out) {
  double se = 0, sr = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(ref[i]) - double(out[i]);
    se += d * d;
    sr += double(ref[i]) * double(ref[i]);
  }
  return std::isfinite(se) ? std::sqrt(se / (sr + 1e-300)) : INFINITY;
}

// ---- delta rule

enum class Tier { Reference, Recurrent, Chunk };

// Inputs and outputs of one delta-rule call, with h0 and dhT.
template <class S>
struct DeltaCase {
  RecDims d;
  std::vector<S> q, k, v, beta, g, h0, dout, dhT;
  std::vector<S> o, hT, dq, dk, dv, dbeta, dg, dh0;

  DeltaCase(RecDims dims, bool gated, uint64_t seed) : d(dims) {
    hla::Generator gen(seed);
    const int64_t rows = d.B * d.T * d.H, states = d.B * d.H * d.K * d.V;
    q = normal<S>(gen, rows * d.K);
    k = normal<S>(gen, rows * d.K);
    v = normal<S>(gen, rows * d.V);
    beta = normal<S>(gen, rows);
    for (S& b : beta) b = S(1 / (1 + std::exp(-double(b))));
    if (gated) {
      g = normal<S>(gen, rows);
      for (S& x : g) x = S(-std::log1p(std::exp(-double(x))) / 4);  // logsigmoid / 4
    }
    h0 = normal<S>(gen, states, 0.1);
    dout = normal<S>(gen, rows * d.V);
    dhT = normal<S>(gen, states);
    o.resize(rows * d.V);
    hT.resize(states);
    dq.resize(rows * d.K);
    dk.resize(rows * d.K);
    dv.resize(rows * d.V);
    dbeta.resize(rows);
    dg.resize(g.size());
    dh0.resize(states);
  }
  DeltaRuleArgs<S> args() const {
    return {d, q.data(), k.data(), v.data(), beta.data(), g.empty() ? nullptr : g.data(),
            h0.data(), 1.0 / std::sqrt(double(d.K)), true};
  }
  DeltaRuleOut<S> out() { return {o.data(), hT.data()}; }
  DeltaRuleGrad<S> grad() {
    return {dout.data(), dhT.data(), dq.data(),  dk.data(),
            dv.data(),   dbeta.data(), g.empty() ? nullptr : dg.data(), dh0.data()};
  }
  void run(Tier tier, bool backward) {
    if constexpr (std::is_same_v<S, double>) {
      if (tier == Tier::Reference) {
        delta_rule_reference_forward(args(), out());
        if (backward) delta_rule_reference_backward(args(), grad());
        return;
      }
    }
    if (tier == Tier::Recurrent) {
      delta_rule_recurrent_forward(args(), out());
      if (backward) delta_rule_recurrent_backward(args(), grad());
    } else {
      delta_rule_chunk_forward(args(), out());
      if (backward) delta_rule_chunk_backward(args(), grad());
    }
  }
};

// The f32 kernel against the f64 reference on the same (float-valued) small input.
bool delta_matches_reference(Tier tier, bool gated, std::string& why) {
  const RecDims d{1, 130, 2, 16, 12};
  DeltaCase<float> f(d, gated, 5);
  DeltaCase<double> ref(d, gated, 5);
  ref.q.assign(f.q.begin(), f.q.end());  // the same float-valued inputs
  ref.k.assign(f.k.begin(), f.k.end());
  ref.v.assign(f.v.begin(), f.v.end());
  ref.beta.assign(f.beta.begin(), f.beta.end());
  ref.g.assign(f.g.begin(), f.g.end());
  ref.h0.assign(f.h0.begin(), f.h0.end());
  ref.dout.assign(f.dout.begin(), f.dout.end());
  ref.dhT.assign(f.dhT.begin(), f.dhT.end());
  f.run(tier, true);
  ref.run(Tier::Reference, true);
  const std::pair<const char*, double> errs[] = {
      {"o", rel_rms(ref.o, f.o)},        {"hT", rel_rms(ref.hT, f.hT)},
      {"dq", rel_rms(ref.dq, f.dq)},     {"dk", rel_rms(ref.dk, f.dk)},
      {"dv", rel_rms(ref.dv, f.dv)},     {"dbeta", rel_rms(ref.dbeta, f.dbeta)},
      {"dg", rel_rms(ref.dg, f.dg)},     {"dh0", rel_rms(ref.dh0, f.dh0)}};
  for (const auto& [name, err] : errs)
    if (!(err <= 1e-4)) {  // the tests hold f32 to 1e-5 (5e-5 for dg)
      why = std::string("differs from the reference: ") + name + " rel_rms " + std::to_string(err);
      return false;
    }
  return true;
}

template <Tier tier, bool gated, bool backward>
void BM_delta_rule(benchmark::State& state) {
  std::string why;
  if (!delta_matches_reference(tier, gated, why)) {
    state.SkipWithError(why.c_str());
    return;
  }
  DeltaCase<float> c({kB, state.range(0), kH, kK, kV}, gated, 1);
  for (auto _ : state) {
    c.run(tier, backward);
    benchmark::DoNotOptimize(c.o.data());
    benchmark::DoNotOptimize(c.dq.data());
  }
  state.SetItemsProcessed(state.iterations() * kB * state.range(0));
}

#define DELTA_BENCH(tier, gated, backward)                                 \
  BENCHMARK_TEMPLATE(BM_delta_rule, tier, gated, backward)                  \
      ->Arg(256)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond)

DELTA_BENCH(Tier::Recurrent, false, false);
DELTA_BENCH(Tier::Chunk, false, false);
DELTA_BENCH(Tier::Recurrent, false, true);
DELTA_BENCH(Tier::Chunk, false, true);
DELTA_BENCH(Tier::Recurrent, true, false);
DELTA_BENCH(Tier::Chunk, true, false);
DELTA_BENCH(Tier::Recurrent, true, true);
DELTA_BENCH(Tier::Chunk, true, true);

// ---- softmax attention (causal, H = Hkv = 4)

template <class S>
struct AttnCase {
  AttnDims d;
  std::vector<S> q, k, v, dout, o, lse, dq, dk, dv;

  AttnCase(AttnDims dims, uint64_t seed) : d(dims) {
    hla::Generator gen(seed);
    q = normal<S>(gen, d.B * d.T * d.H * d.K);
    k = normal<S>(gen, d.B * d.T * d.Hkv * d.K);
    v = normal<S>(gen, d.B * d.T * d.Hkv * d.V);
    dout = normal<S>(gen, d.B * d.T * d.H * d.V);
    o.resize(dout.size());
    lse.resize(d.B * d.H * d.T);
    dq.resize(q.size());
    dk.resize(k.size());
    dv.resize(v.size());
  }
  void run(bool tiled, bool backward) {
    const AttentionArgs<S> a{d, q.data(), k.data(), v.data(), true, 0,
                             1.0 / std::sqrt(double(d.K))};
    const AttentionOut<S> out{o.data(), lse.data()};
    const AttentionGrad<S> grad{dout.data(), o.data(), lse.data(), dq.data(), dk.data(), dv.data()};
    if constexpr (std::is_same_v<S, double>) {
      if (!tiled) {
        softmax_attention_reference_forward(a, out);
        if (backward) softmax_attention_reference_backward(a, grad);
        return;
      }
    }
    softmax_attention_tiled_forward(a, out);
    if (backward) softmax_attention_tiled_backward(a, grad);
  }
};

template <class S>
bool attention_matches_reference(std::string& why) {
  const AttnDims d{1, 150, 4, 2, 16, 12};
  AttnCase<S> t(d, 9);
  AttnCase<double> ref(d, 9);
  ref.q.assign(t.q.begin(), t.q.end());  // the same (float-valued for S = float) inputs
  ref.k.assign(t.k.begin(), t.k.end());
  ref.v.assign(t.v.begin(), t.v.end());
  ref.dout.assign(t.dout.begin(), t.dout.end());
  t.run(true, true);
  ref.run(false, true);
  const double tol = std::is_same_v<S, double> ? 1e-10 : 1e-5;
  const std::pair<const char*, double> errs[] = {
      {"o", rel_rms(ref.o, t.o)},   {"lse", rel_rms(ref.lse, t.lse)},
      {"dq", rel_rms(ref.dq, t.dq)}, {"dk", rel_rms(ref.dk, t.dk)}, {"dv", rel_rms(ref.dv, t.dv)}};
  for (const auto& [name, err] : errs)
    if (!(err <= tol)) {
      why = std::string("differs from the reference: ") + name + " rel_rms " + std::to_string(err);
      return false;
    }
  return true;
}

// The reference (tiled = false) is timed as is: it is what the others are checked against.
template <class S, bool tiled, bool backward>
void BM_attention(benchmark::State& state) {
  std::string why;
  if (tiled && !attention_matches_reference<S>(why)) {
    state.SkipWithError(why.c_str());
    return;
  }
  AttnCase<S> c({kB, state.range(0), kH, kH, kK, kV}, 1);
  for (auto _ : state) {
    c.run(tiled, backward);
    benchmark::DoNotOptimize(c.o.data());
    benchmark::DoNotOptimize(c.dq.data());
  }
  state.SetItemsProcessed(state.iterations() * kB * state.range(0));
}

#define ATTN_BENCH(S, tiled, backward)                                                 \
  BENCHMARK_TEMPLATE(BM_attention, S, tiled, backward)->Arg(256)->Arg(1024)            \
      ->Unit(benchmark::kMillisecond)

ATTN_BENCH(double, false, false);
ATTN_BENCH(double, true, false);
ATTN_BENCH(float, true, false);
ATTN_BENCH(double, false, true);
ATTN_BENCH(double, true, true);
ATTN_BENCH(float, true, true);

}  // namespace

BENCHMARK_MAIN();
