// Core CPU kernels: matmul (f32, 1024^3 and model shapes), RMSNorm, softmax, and
// cross-entropy over a 32000 vocabulary. Each case first checks its kernel against a direct
// double-precision computation, then reports GFLOP/s (matmul) or GB/s (memory-bound kernels).
#include <benchmark/benchmark.h>

#include <cmath>

#include "kernels/ops.h"

using namespace hla;

namespace {
Generator gen(1);

bool matmul_ok(int64_t M, int64_t K, int64_t N) {
  const Tensor a = Tensor::randn({M, K}, gen), b = Tensor::randn({K, N}, gen);
  const Tensor c = ops::matmul(a, b);
  for (int trial = 0; trial < 16; ++trial) {  // spot-check entries against a double dot product
    const int64_t i = gen.below(M), j = gen.below(N);
    double s = 0;
    for (int64_t k = 0; k < K; ++k) s += a.at({i, k}) * b.at({k, j});
    if (std::abs(c.at({i, j}) - s) > 1e-3 * (1 + std::abs(s))) return false;
  }
  return true;
}

void BM_matmul(benchmark::State& st) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  if (!matmul_ok(std::min<int64_t>(M, 64), K, std::min<int64_t>(N, 64))) {
    st.SkipWithError("matmul differs from the reference");
    return;
  }
  const Tensor a = Tensor::randn({M, K}, gen), b = Tensor::randn({K, N}, gen);
  for (auto _ : st) benchmark::DoNotOptimize(ops::matmul(a, b));
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * K * N, benchmark::Counter::kIsIterationInvariantRate,
                                             benchmark::Counter::kIs1000);
}
// 1024^3; a 340M layer's projections at B*T=2048 tokens (q/k/v/o and the MLP).
BENCHMARK(BM_matmul)->Args({1024, 1024, 1024})->Args({2048, 1024, 1024})->Args({2048, 1024, 2816})
    ->Args({2048, 2816, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_rms_norm(benchmark::State& st) {
  const int64_t rows = st.range(0), D = st.range(1);
  const Tensor x = Tensor::randn({rows, D}, gen), w = Tensor::randn({D}, gen);
  const Tensor y = ops::rms_norm(x, w, 1e-6, nullptr);
  double ss = 0;
  for (int64_t i = 0; i < D; ++i) ss += x.at({0, i}) * x.at({0, i});
  if (std::abs(y.at({0, 3}) - x.at({0, 3}) / std::sqrt(ss / D + 1e-6) * w.at({3})) > 1e-4) {
    st.SkipWithError("rms_norm differs from the direct formula");
    return;
  }
  for (auto _ : st) benchmark::DoNotOptimize(ops::rms_norm(x, w, 1e-6, nullptr));
  st.SetBytesProcessed(st.iterations() * 2 * rows * D * 4);  // read x, write y
}
BENCHMARK(BM_rms_norm)->Args({2048, 1024})->Args({16384, 1024})->UseRealTime();

void BM_softmax(benchmark::State& st) {
  const int64_t rows = st.range(0), C = st.range(1);
  const Tensor x = Tensor::randn({rows, C}, gen);
  const Tensor y = ops::softmax(x);
  double s = 0;
  for (int64_t i = 0; i < C; ++i) s += y.at({0, i});
  if (std::abs(s - 1) > 1e-4) {
    st.SkipWithError("softmax rows do not sum to 1");
    return;
  }
  for (auto _ : st) benchmark::DoNotOptimize(ops::softmax(x));
  st.SetBytesProcessed(st.iterations() * 2 * rows * C * 4);
}
BENCHMARK(BM_softmax)->Args({2048, 1024})->Args({256, 32000})->UseRealTime();

void BM_cross_entropy(benchmark::State& st) {
  const int64_t N = st.range(0), C = 32000;
  const Tensor logits = Tensor::randn({N, C}, gen);
  std::vector<int64_t> t(N);
  for (auto& x : t) x = static_cast<int64_t>(gen.below(C));
  const Tensor targets = Tensor::from_vector(t, {N});
  Tensor lse;
  const double loss = ops::cross_entropy(logits, targets, -100, &lse).item();
  double ref = 0;
  for (int64_t r = 0; r < N; ++r) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += std::exp(logits.at({r, c}));
    ref += std::log(s) - logits.at({r, t[r]});
  }
  if (std::abs(loss - ref / N) > 1e-3) {
    st.SkipWithError("cross_entropy differs from the direct formula");
    return;
  }
  for (auto _ : st) {
    benchmark::DoNotOptimize(ops::cross_entropy(logits, targets, -100, &lse));
    benchmark::DoNotOptimize(ops::cross_entropy_backward(logits, targets, -100, lse, 1.0));
  }
  st.SetBytesProcessed(st.iterations() * 3 * N * C * 4);  // fwd read, bwd read + write
}
BENCHMARK(BM_cross_entropy)->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
