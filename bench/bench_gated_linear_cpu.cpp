// CPU throughput (tokens/s) of the recurrent and chunked tiers of the gated linear family and of
// HGRN, forward and forward+backward, in float:
//   gla (PerKey gate), retention (FixedPerHead), simple_gla (ScalarPerHead) at B=2, H=4, K=V=64
//   hgrn at B=2, D=256
// for T in {256, 1024, 4096}. items_processed = B*T per iteration, so the "items_per_second"
// column is tokens/s (over the main thread's CPU time: with OMP_NUM_THREADS=1 that is one core's
// throughput even on a shared machine; with more threads, compare wall times). Before timing, every
// case runs its kernel once on a small input and compares o, hT and all gradients with the f64
// reference; a mismatch skips the case with an error.
//
//   bench_gated_linear_cpu --benchmark_filter=gla/chunk
#include <benchmark/benchmark.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/recurrence.h"
#include "tensor/random.h"

namespace {

using namespace hla::kernels;

enum class Tier { Recurrent, Chunk };
enum class Pass { Forward, ForwardBackward };

// f32 kernels agree with the f64 reference to ~1e-6 (tests/recurrence); a bug is far above this
constexpr double kValidateTol = 1e-4;

std::vector<double> normal(hla::Generator& gen, int64_t n) {
  std::vector<double> x(n);
  for (double& e : x) e = gen.normal();
  return x;
}
// logsigmoid(x) / normalizer
std::vector<double> log_gates(hla::Generator& gen, int64_t n, double normalizer) {
  std::vector<double> g(n);
  for (double& e : g) e = -std::log1p(std::exp(-gen.normal())) / normalizer;
  return g;
}
template <class S>
std::vector<S> cast(const std::vector<double>& x) {
  return std::vector<S>(x.begin(), x.end());
}

template <class A, class B>
double rel_rms(const std::vector<A>& ref, const std::vector<B>& out) {
  double se = 0, sr = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(ref[i]) - static_cast<double>(out[i]);
    se += d * d;
    sr += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
  }
  return std::isfinite(se) ? std::sqrt(se / (sr + 1e-300)) : INFINITY;
}

// ---- gated linear family

struct GatedLinearInputs {
  RecDims d;
  GateKind gate = GateKind::PerKey;
  std::vector<double> q, k, v, g, h0, dout, dhT;
};

GatedLinearInputs gated_linear_inputs(RecDims d, GateKind gate, uint64_t seed) {
  hla::Generator gen(seed);
  const int64_t BTH = d.B * d.T * d.H, state = d.B * d.H * d.K * d.V;
  GatedLinearInputs in;
  in.d = d;
  in.gate = gate;
  in.q = normal(gen, BTH * d.K);
  in.k = normal(gen, BTH * d.K);
  in.v = normal(gen, BTH * d.V);
  // the GLA layer's gate_logit_normalizer (spec 3.3)
  if (gate == GateKind::PerKey) in.g = log_gates(gen, BTH * d.K, 16);
  if (gate == GateKind::ScalarPerHead) in.g = log_gates(gen, BTH, 16);
  in.h0 = normal(gen, state);
  in.dout = normal(gen, BTH * d.V);
  in.dhT = normal(gen, state);
  return in;
}

// The inputs in precision S and room for every output.
template <class S>
struct GatedLinearProblem {
  RecDims d;
  GateKind gate;
  std::vector<S> q, k, v, g, h0, dout, dhT;
  std::vector<S> o, hT, dq, dk, dv, dg, dh0;

  explicit GatedLinearProblem(const GatedLinearInputs& in)
      : d(in.d),
        gate(in.gate),
        q(cast<S>(in.q)),
        k(cast<S>(in.k)),
        v(cast<S>(in.v)),
        g(cast<S>(in.g)),
        h0(cast<S>(in.h0)),
        dout(cast<S>(in.dout)),
        dhT(cast<S>(in.dhT)),
        o(dout.size()),
        hT(h0.size()),
        dq(q.size()),
        dk(k.size()),
        dv(v.size()),
        dg(g.size()),
        dh0(h0.size()) {}
  GatedLinearArgs<S> args() const {
    return {d,         gate,
            q.data(),  k.data(),
            v.data(),  g.empty() ? nullptr : g.data(),
            h0.data(), 1.0 / std::sqrt(static_cast<double>(d.K))};
  }
  GatedLinearOut<S> out() { return {o.data(), hT.data()}; }
  GatedLinearGrad<S> grad() {
    return {dout.data(), dhT.data(), dq.data(),
            dk.data(),   dv.data(),  dg.empty() ? nullptr : dg.data(),
            dh0.data()};
  }
};

template <class S>
void run_gated_linear(Tier tier, Pass pass, GatedLinearProblem<S>& p) {
  const GatedLinearArgs<S> a = p.args();
  if (tier == Tier::Recurrent) {
    gated_linear_recurrent_forward(a, p.out());
    if (pass == Pass::ForwardBackward) gated_linear_recurrent_backward(a, p.grad());
  } else {
    gated_linear_chunk_forward(a, p.out());
    if (pass == Pass::ForwardBackward) gated_linear_chunk_backward(a, p.grad());
  }
}

// Empty if the float kernel matches the reference on a small input crossing a chunk boundary.
std::string validate_gated_linear(GateKind gate, Tier tier) {
  const GatedLinearInputs in = gated_linear_inputs({1, 100, 2, 16, 8}, gate, 1);
  GatedLinearProblem<float> p(in);
  GatedLinearProblem<double> ref(in);
  gated_linear_reference_forward(ref.args(), ref.out());
  gated_linear_reference_backward(ref.args(), ref.grad());
  run_gated_linear(tier, Pass::ForwardBackward, p);
  const std::pair<const char*, double> errors[] = {
      {"o", rel_rms(ref.o, p.o)},      {"hT", rel_rms(ref.hT, p.hT)}, {"dq", rel_rms(ref.dq, p.dq)},
      {"dk", rel_rms(ref.dk, p.dk)},   {"dv", rel_rms(ref.dv, p.dv)}, {"dg", rel_rms(ref.dg, p.dg)},
      {"dh0", rel_rms(ref.dh0, p.dh0)}};
  for (const auto& [name, err] : errors) {
    if (!(err <= kValidateTol)) {
      std::ostringstream os;
      os << name << " differs from the reference: rel_rms=" << err;
      return os.str();
    }
  }
  return "";
}

void bm_gated_linear(benchmark::State& state, GateKind gate, Tier tier, Pass pass) {
  if (const std::string error = validate_gated_linear(gate, tier); !error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  const int64_t T = state.range(0);
  GatedLinearProblem<float> p(gated_linear_inputs({2, T, 4, 64, 64}, gate, 2));
  for (auto _ : state) {
    run_gated_linear(tier, pass, p);
    benchmark::DoNotOptimize(p.o.data());
    benchmark::DoNotOptimize(p.dq.data());
  }
  state.SetItemsProcessed(state.iterations() * p.d.B * T);
}

// ---- HGRN

struct HgrnInputs {
  HgrnDims d;
  std::vector<double> x, g, h0, dout, dhT;
};

HgrnInputs hgrn_inputs(HgrnDims d, uint64_t seed) {
  hla::Generator gen(seed);
  const int64_t n = d.B * d.T * d.D;
  HgrnInputs in;
  in.d = d;
  in.x = normal(gen, n);
  in.g = log_gates(gen, n, 1);
  in.h0 = normal(gen, d.B * d.D);
  in.dout = normal(gen, n);
  in.dhT = normal(gen, d.B * d.D);
  return in;
}

template <class S>
struct HgrnProblem {
  HgrnDims d;
  std::vector<S> x, g, h0, dout, dhT;
  std::vector<S> o, hT, dx, dg, dh0;

  explicit HgrnProblem(const HgrnInputs& in)
      : d(in.d),
        x(cast<S>(in.x)),
        g(cast<S>(in.g)),
        h0(cast<S>(in.h0)),
        dout(cast<S>(in.dout)),
        dhT(cast<S>(in.dhT)),
        o(x.size()),
        hT(h0.size()),
        dx(x.size()),
        dg(x.size()),
        dh0(h0.size()) {}
  HgrnArgs<S> args() const { return {d, x.data(), g.data(), h0.data()}; }
  HgrnOut<S> out() { return {o.data(), hT.data()}; }
  HgrnGrad<S> grad() { return {dout.data(), dhT.data(), dx.data(), dg.data(), dh0.data()}; }
};

template <class S>
void run_hgrn(Tier tier, Pass pass, HgrnProblem<S>& p) {
  if (tier == Tier::Recurrent) {
    hgrn_recurrent_forward(p.args(), p.out());
    if (pass == Pass::ForwardBackward) hgrn_recurrent_backward(p.args(), p.grad());
  } else {
    hgrn_chunk_forward(p.args(), p.out());
    if (pass == Pass::ForwardBackward) hgrn_chunk_backward(p.args(), p.grad());
  }
}

std::string validate_hgrn(Tier tier) {
  const HgrnInputs in = hgrn_inputs({1, 100, 70}, 1);
  HgrnProblem<float> p(in);
  HgrnProblem<double> ref(in);
  hgrn_reference_forward(ref.args(), ref.out());
  hgrn_reference_backward(ref.args(), ref.grad());
  run_hgrn(tier, Pass::ForwardBackward, p);
  const std::pair<const char*, double> errors[] = {{"o", rel_rms(ref.o, p.o)},
                                                   {"hT", rel_rms(ref.hT, p.hT)},
                                                   {"dx", rel_rms(ref.dx, p.dx)},
                                                   {"dg", rel_rms(ref.dg, p.dg)},
                                                   {"dh0", rel_rms(ref.dh0, p.dh0)}};
  for (const auto& [name, err] : errors) {
    if (!(err <= kValidateTol)) {
      std::ostringstream os;
      os << name << " differs from the reference: rel_rms=" << err;
      return os.str();
    }
  }
  return "";
}

void bm_hgrn(benchmark::State& state, Tier tier, Pass pass) {
  if (const std::string error = validate_hgrn(tier); !error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  const int64_t T = state.range(0);
  HgrnProblem<float> p(hgrn_inputs({2, T, 256}, 2));
  for (auto _ : state) {
    run_hgrn(tier, pass, p);
    benchmark::DoNotOptimize(p.o.data());
    benchmark::DoNotOptimize(p.dx.data());
  }
  state.SetItemsProcessed(state.iterations() * p.d.B * T);
}

}  // namespace

int main(int argc, char** argv) {
  struct GatedLinearOp {
    const char* name;
    GateKind gate;
  };
  const GatedLinearOp ops[] = {{"gla", GateKind::PerKey},
                               {"retention", GateKind::FixedPerHead},
                               {"simple_gla", GateKind::ScalarPerHead}};
  const std::pair<const char*, Tier> tiers[] = {{"recurrent", Tier::Recurrent},
                                                {"chunk", Tier::Chunk}};
  const std::pair<const char*, Pass> passes[] = {{"fwd", Pass::Forward},
                                                 {"fwd_bwd", Pass::ForwardBackward}};
  // names: <op>/<tier>/<pass>/<T>, e.g. gla/chunk/fwd_bwd/1024
  auto configure = [](benchmark::internal::Benchmark* b) {
    b->Arg(256)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);
  };
  for (const auto& op : ops)
    for (const auto& [pass_name, pass] : passes)
      for (const auto& [tier_name, tier] : tiers)
        configure(benchmark::RegisterBenchmark(
            (std::string(op.name) + "/" + tier_name + "/" + pass_name).c_str(), bm_gated_linear,
            op.gate, tier, pass));
  for (const auto& [pass_name, pass] : passes)
    for (const auto& [tier_name, tier] : tiers)
      configure(benchmark::RegisterBenchmark(
          (std::string("hgrn/") + tier_name + "/" + pass_name).c_str(), bm_hgrn, tier, pass));

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
