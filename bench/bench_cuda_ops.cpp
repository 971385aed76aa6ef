// GPU op timings of the autograd recurrence ops, softmax attention and the short convolution on
// CUDA Vars, f32 and bf16, at the shape of perf/ANCHORS.md (B=8, T=2048, H=16, K=V=64; HGRN and
// the short convolution: D = H*K = 1024), the layouts of autograd/recurrences.h and
// autograd/fused.h:
//   gla               q, k, gk [B,T,H,K], v [B,T,H,V]     gk = logsigmoid(N(0,1)) / 16
//   simple_gla        q, k, v, g [B,T,H]                  g = logsigmoid(N(0,1) + 2)
//   retention         q, k, v                             fixed per-head decay
//   delta_rule        q, k, v, beta [B,T,H]               beta ~ U(0,1), l2norm_qk
//   gated_delta_rule  q, k, v, g, beta                    l2norm_qk
//   hgrn              x, g [B,T,D]                        g = logsigmoid(N(0,1))
//   short_conv        x [B,T,D], w [D,4]                  silu; the layers' q/k/v convolution
//   softmax_attention q, k, v                             causal
// The delta rules also run at Gated DeltaNet's 340M head layout, B=8, T=2048, H=4,
// K=V=256 (few wide heads: the op splits each into value slices, autograd/recurrences.h), gla at
// GLA's (H=4, K=128, V=256), and
// every op over heads (not hgrn or short_conv) at fla_bench.py's second shape, B=4, T=4096,
// H=8, K=V=128 (HGRN2's layout).
// Each with Impl::Auto (what the layers run: the chunked tier at this T) and inputs that require
// grad, as fla's benchmark calls its ops. "fwd" times the op (graph built and dropped);
// "fwd_bwd" the op plus o.backward(do) with a fixed random do (gradients reset after each).
//
// Dtypes: every op runs once per dtype, f32 and bf16 (environment HLA_BENCH_DTYPE = f32, bf16 or
// both; default both). bf16 means every input, do, o and gradient in bf16, as fla's benchmark
// feeds its kernels; the op picks its kernels (tensor cores for attention and the chunked GLA
// family at these head sizes, bf16 loads and stores for HGRN, bf16 reads and writes around f32
// states and bf16 tensor-core products for the delta rules: docs/cuda.md). Names:
// <op>/<dtype>/<shape>/<pass>, e.g. gla/bf16/B8_T2048_H16_K64_V64/fwd_bwd.
//
// Timing: as triton.testing.do_bench times fla's ops (cuda::flushed_gpu_ms): before every
// iteration a 256 MiB memset evicts the L2 cache, then CUDA events on the stream bracket the call
// (manual time), after two warm-up calls; counter "ms" is the median iteration. The host's time
// queueing the call runs under the memset, as Python's does under do_bench's.
// "copy/device_to_device" measures the memory ceiling in the same program: a 1 GiB device-to-device
// copy, GB/s counting bytes read plus written.
//
// Rates (counters), from these counts per call (C = 64, the chunk length):
//   gla, simple_gla, retention: chunked form, per token and head: 2C(K+V) (intra-chunk q k^T and
//     A v, dense C x C blocks) + 4KV (q S and the state update k^T v); decays are not counted.
//   delta_rule, gated_delta_rule: the above + 4CK (k k^T and W = A beta k) + 2CV (U = A beta v)
//     + 2KV (W S) + C^2/3 (the triangular inverse of the C x C chunk matrix).
//   softmax_attention: causal T^2/2 pairs, 2(K+V) per pair and head: B H T^2 (K+V).
//   backward FLOPs: 2x forward for the recurrences, 2.5x for attention (five matrix products
//     against two), so fwd_bwd = 3x and 3.5x forward; TFLOP/s = that count / median time.
//   hgrn (memory-bound; the fewest bytes): forward reads x, g and writes o (3 B T D elements);
//     backward reads g, o, do and writes dx, dg (5 more); 4 bytes an element in f32, 2 in bf16;
//     GB/s = bytes / median time.
//   short_conv (memory-bound): forward reads x and writes y (2 B T D elements); backward reads
//     x, dy and writes dx (3 more); the weight, dw and the per-tile dw sums are not counted.
//
// Before timing, every op runs once at a small shape crossing a chunk boundary (T = 130) on the
// GPU in the case's dtype and on the CPU in f32 (same Impl; for bf16 the CPU gets the same
// bf16-rounded inputs and do), and o, hT and every input gradient must agree in rel RMS: 1e-4
// for f32 (summation order only); 2e-2 for bf16 (outputs and gradients rounded to 8 significant
// bits, ~2e-3 each, and bf16 operands inside the tensor-core products; the kernel tests hold
// them to 1e-2), 3e-2 for the gradients of log gates (a reverse cumulative sum of differences:
// some cancellation; tests/cuda/test_gated_linear_mma.cpp's kGateTol). Otherwise, or if the op
// throws (no CUDA kernel yet), the case reports an error instead of a time. Without a visible GPU
// the program says so and runs nothing.
//
// Environment: HLA_BENCH_DTYPE (above), HLA_BENCH_B, HLA_BENCH_T (a smaller shape for a quick
// run), HLA_TF32 (0: exact f32 cuBLAS products, the library default), HLA_BENCH_VALUE_SPLIT
// (the delta rules' value slices per head; 0, the default, lets the op choose).
//
//   bench/run_gpu.sh                     (builds and runs this with JSON output)
//   HLA_BENCH_B=2 HLA_BENCH_T=512 build-gpu/bench/bench_cuda_ops --benchmark_filter=gla
//   HLA_BENCH_DTYPE=bf16 build-gpu/bench/bench_cuda_ops --benchmark_filter=^hgrn/
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/fused.h"
#include "autograd/recurrences.h"
#include "autograd/var.h"
#include "kernels/cuda/ops_cuda.h"
#include "tensor/random.h"
#include "tensor/storage.h"
#include "tensor/tensor.h"

namespace {

using namespace hla;

enum class Pass { Forward, ForwardBackward };

constexpr double kChunk = 64;
// The check before timing (header comment): f32 GPU vs f32 CPU of the same tier (different
// summation orders give ~1e-6; a bug is far above), bf16 GPU vs f32 CPU on the same values.
constexpr double kValidateTolF32 = 1e-4;
constexpr double kValidateTolBf16 = 2e-2;
constexpr double kValidateTolBf16Gate = 3e-2;

struct Dims {
  int64_t B, T, H, K, V;
  int64_t D() const { return H * K; }  // HGRN's width
};

int64_t env_int(const char* name, int64_t fallback) {
  const char* s = std::getenv(name);
  return s && *s ? std::atoll(s) : fallback;
}

// The dtypes HLA_BENCH_DTYPE asks for: f32, bf16 or both (the default).
std::vector<DType> bench_dtypes() {
  const char* s = std::getenv("HLA_BENCH_DTYPE");
  const std::string v = s && *s ? s : "both";
  if (v == "f32") return {DType::f32};
  if (v == "bf16") return {DType::bf16};
  if (v == "both") return {DType::f32, DType::bf16};
  throw Error("HLA_BENCH_DTYPE", "f32, bf16 or both", "'" + v + "'");
}

// ---- inputs (f32, CPU; moved to the GPU and converted to the case's dtype by the caller)

Tensor from_fn(const Shape& shape, Generator& gen, double (*f)(Generator&)) {
  std::vector<float> x(static_cast<size_t>(numel(shape)));
  for (float& e : x) e = static_cast<float>(f(gen));
  return Tensor::from_vector<float>(x, shape);
}
double normal(Generator& g) {
  return g.normal();
}
double log_sigmoid(double x) {
  return -std::log1p(std::exp(-x));
}
// GLA: the layer's gate_logit_normalizer (16)
double gla_gate(Generator& g) {
  return log_sigmoid(g.normal()) / 16;
}
double head_gate(Generator& g) {
  return log_sigmoid(g.normal() + 2);
}
double hgrn_gate(Generator& g) {
  return log_sigmoid(g.normal());
}
double beta(Generator& g) {
  return g.uniform();
}

// ---- the ops

enum class Rate { Flops, Bandwidth };   // what work() counts: FLOPs or bytes moved
enum class Layout { Heads, Channels };  // [B,T,H,*] or HGRN's [B,T,D]

struct OpCase {
  const char* name;
  std::vector<const char*> input_names;
  std::vector<Tensor> (*inputs)(const Dims&, Generator&);
  std::vector<Var> (*run)(const std::vector<Var>&);  // {o, hT} ({o} for attention)
  double (*work)(const Dims&, Pass, DType);
  Rate rate;
  Layout layout;
};

std::vector<Var> result(const RecurrenceResult& r) {
  return {r.o, r.hT};
}
// The delta rules' options: l2norm_qk, and the value slices per head from HLA_BENCH_VALUE_SPLIT
// (default 0: the op's choice).
RecurrenceOptions l2norm() {
  RecurrenceOptions o;
  o.l2norm_qk = true;
  o.value_split = env_int("HLA_BENCH_VALUE_SPLIT", 0);
  return o;
}

double gated_linear_flops(const Dims& d, Pass p, DType) {
  const double per = 2 * kChunk * double(d.K + d.V) + 4.0 * double(d.K * d.V);
  return double(d.B * d.T * d.H) * per * (p == Pass::Forward ? 1 : 3);
}
double delta_rule_flops(const Dims& d, Pass p, DType) {
  const double K = double(d.K), V = double(d.V);
  const double per = 2 * kChunk * (K + V) + 4 * K * V + 4 * kChunk * K + 2 * kChunk * V +
                     2 * K * V + kChunk * kChunk / 3;
  return double(d.B * d.T * d.H) * per * (p == Pass::Forward ? 1 : 3);
}
double attention_flops(const Dims& d, Pass p, DType) {
  const double fwd = double(d.B * d.H) * double(d.T) * double(d.T) * double(d.K + d.V);
  return fwd * (p == Pass::Forward ? 1 : 3.5);
}
double hgrn_bytes(const Dims& d, Pass p, DType dt) {
  return double(d.B * d.T * d.D()) * double(dtype_size(dt)) * (p == Pass::Forward ? 3 : 8);
}
double short_conv_bytes(const Dims& d, Pass p, DType dt) {
  return double(d.B * d.T * d.D()) * double(dtype_size(dt)) * (p == Pass::Forward ? 2 : 5);
}

std::vector<Tensor> qkv(const Dims& d, Generator& gen) {
  return {from_fn({d.B, d.T, d.H, d.K}, gen, normal), from_fn({d.B, d.T, d.H, d.K}, gen, normal),
          from_fn({d.B, d.T, d.H, d.V}, gen, normal)};
}
std::vector<Tensor> with(std::vector<Tensor> xs, std::initializer_list<Tensor> more) {
  xs.insert(xs.end(), more);
  return xs;
}

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = {
      {"gla",
       {"q", "k", "v", "gk"},
       [](const Dims& d, Generator& g) {
         return with(qkv(d, g), {from_fn({d.B, d.T, d.H, d.K}, g, gla_gate)});
       },
       [](const std::vector<Var>& x) { return result(gla(x[0], x[1], x[2], x[3])); },
       gated_linear_flops,
       Rate::Flops,
       Layout::Heads},
      {"simple_gla",
       {"q", "k", "v", "g"},
       [](const Dims& d, Generator& g) {
         return with(qkv(d, g), {from_fn({d.B, d.T, d.H}, g, head_gate)});
       },
       [](const std::vector<Var>& x) { return result(simple_gla(x[0], x[1], x[2], x[3])); },
       gated_linear_flops,
       Rate::Flops,
       Layout::Heads},
      {"retention",
       {"q", "k", "v"},
       qkv,
       [](const std::vector<Var>& x) { return result(retention(x[0], x[1], x[2])); },
       gated_linear_flops,
       Rate::Flops,
       Layout::Heads},
      {"delta_rule",
       {"q", "k", "v", "beta"},
       [](const Dims& d, Generator& g) {
         return with(qkv(d, g), {from_fn({d.B, d.T, d.H}, g, beta)});
       },
       [](const std::vector<Var>& x) {
         return result(delta_rule(x[0], x[1], x[2], x[3], Var(), l2norm()));
       },
       delta_rule_flops,
       Rate::Flops,
       Layout::Heads},
      {"gated_delta_rule",
       {"q", "k", "v", "g", "beta"},
       [](const Dims& d, Generator& g) {
         return with(qkv(d, g),
                     {from_fn({d.B, d.T, d.H}, g, head_gate), from_fn({d.B, d.T, d.H}, g, beta)});
       },
       [](const std::vector<Var>& x) {
         return result(gated_delta_rule(x[0], x[1], x[2], x[3], x[4], Var(), l2norm()));
       },
       delta_rule_flops,
       Rate::Flops,
       Layout::Heads},
      {"hgrn",
       {"x", "g"},
       [](const Dims& d, Generator& g) {
         return std::vector<Tensor>{from_fn({d.B, d.T, d.D()}, g, normal),
                                    from_fn({d.B, d.T, d.D()}, g, hgrn_gate)};
       },
       [](const std::vector<Var>& x) { return result(hgrn(x[0], x[1])); },
       hgrn_bytes,
       Rate::Bandwidth,
       Layout::Channels},
      {"short_conv",
       {"x", "w"},
       [](const Dims& d, Generator& g) {
         return std::vector<Tensor>{from_fn({d.B, d.T, d.D()}, g, normal),
                                    from_fn({d.D(), 4}, g, normal)};
       },
       [](const std::vector<Var>& x) { return std::vector<Var>{short_conv(x[0], x[1], true)}; },
       short_conv_bytes,
       Rate::Bandwidth,
       Layout::Channels},
      {"softmax_attention",
       {"q", "k", "v"},
       qkv,
       [](const std::vector<Var>& x) {
         return std::vector<Var>{softmax_attention(x[0], x[1], x[2])};
       },
       attention_flops,
       Rate::Flops,
       Layout::Heads},
  };
  return cases;
}

// The shape of o (and of its gradient do).
Shape output_shape(const OpCase& op, const Dims& d) {
  return op.layout == Layout::Channels ? Shape{d.B, d.T, d.D()} : Shape{d.B, d.T, d.H, d.V};
}

// "B8_T2048_H16_K64_V64" (fla's tag), or "B8_T2048_D1024" for HGRN.
std::string shape_tag(const OpCase& op, const Dims& d) {
  std::ostringstream os;
  os << "B" << d.B << "_T" << d.T;
  if (op.layout == Layout::Channels)
    os << "_D" << d.D();
  else
    os << "_H" << d.H << "_K" << d.K << "_V" << d.V;
  return os.str();
}

// Leaves requiring grad on `dev` in dtype `dt` (bf16 converted on the device).
std::vector<Var> leaves(const std::vector<Tensor>& xs, Device dev, DType dt) {
  std::vector<Var> vs;
  for (const Tensor& x : xs) vs.emplace_back(x.to(dev).to(dt), true);
  return vs;
}

// The value of an f32 tensor after rounding to dt (the identity for f32).
Tensor rounded_to(const Tensor& t, DType dt) {
  return t.to(dt).to(DType::f32);
}

double rel_rms(const Tensor& ref, const Tensor& out) {
  const std::vector<double> r = ref.to_vector<double>(), o = out.to_vector<double>();
  if (r.size() != o.size()) return INFINITY;
  double se = 0, sr = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    se += (r[i] - o[i]) * (r[i] - o[i]);
    sr += r[i] * r[i];
  }
  return std::isfinite(se) ? std::sqrt(se / (sr + 1e-300)) : INFINITY;
}

// The bound of the check before timing for result `name` ("o", "hT", "d<input>") in dtype dt.
double validate_tol(DType dt, const std::string& name) {
  if (dt == DType::f32) return kValidateTolF32;
  return name == "dg" || name == "dgk" ? kValidateTolBf16Gate : kValidateTolBf16;
}

// Empty if the GPU op in dtype dt matches the CPU op in f32 on the same (dt-rounded) values: o,
// hT and every input gradient, on a small input.
std::string validate(const OpCase& op, DType dt) {
  const Dims d{2, 130, 2, 64, 64};
  Generator gen(1);
  std::vector<Tensor> in = op.inputs(d, gen);
  for (Tensor& t : in) t = rounded_to(t, dt);
  const Tensor dout = rounded_to(from_fn(output_shape(op, d), gen, normal), dt);
  std::vector<std::pair<std::string, Tensor>> got[2];
  const Device devices[] = {Device::CPU, Device::CUDA};
  const DType dtypes[] = {DType::f32, dt};
  for (int i = 0; i < 2; ++i) {
    const std::vector<Var> x = leaves(in, devices[i], dtypes[i]);
    const std::vector<Var> out = op.run(x);
    out[0].backward(dout.to(devices[i]).to(dtypes[i]));
    got[i].emplace_back("o", out[0].data());
    if (out.size() > 1) got[i].emplace_back("hT", out[1].data());
    for (size_t j = 0; j < x.size(); ++j)
      got[i].emplace_back(std::string("d") + op.input_names[j], x[j].grad());
  }
  for (size_t j = 0; j < got[0].size(); ++j) {
    const std::string& name = got[0][j].first;
    const double tol = validate_tol(dt, name);
    const double err = rel_rms(got[0][j].second, got[1][j].second.to(Device::CPU).to(DType::f32));
    if (!(err <= tol)) {
      std::ostringstream os;
      os << op.name << " (" << dtype_name(dt) << "): " << name
         << " on cuda differs from the CPU f32 op: rel_rms=" << err << " (tolerance " << tol << ")";
      return os.str();
    }
  }
  return "";
}

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  const size_t n = xs.size();
  return n == 0 ? NAN : n % 2 ? xs[n / 2] : 0.5 * (xs[n / 2 - 1] + xs[n / 2]);
}

// Runs `body` once per iteration, timed on the GPU as do_bench times (cuda::flushed_gpu_ms: L2
// flushed, CUDA events around the call); returns the median in ms.
template <class F>
double timed_loop(benchmark::State& state, F&& body) {
  for (int i = 0; i < 2; ++i) body();  // warm-up: module load, pool growth, cuBLAS workspaces
  cuda::synchronize();
  std::vector<double> ms;
  for (auto _ : state) {
    const double t = cuda::flushed_gpu_ms(body);
    state.SetIterationTime(t * 1e-3);
    ms.push_back(t);
  }
  return median(ms);
}

// validate() once per op and dtype: Google Benchmark calls a case several times while it sizes
// the iteration count, and the check (a CPU reference) costs more than the timing.
const std::string& validated(const OpCase& op, DType dt) {
  static std::map<std::string, std::string> done;
  const std::string key = std::string(op.name) + "/" + dtype_name(dt);
  auto it = done.find(key);
  if (it == done.end()) it = done.emplace(key, validate(op, dt)).first;
  return it->second;
}

// The inputs and do of one (op, shape) on the GPU in f32, kept for the next call: Google
// Benchmark calls a case several times while it sizes the iteration count, and every dtype and
// pass of an op times the same values, where drawing 16.8M-element inputs on the host takes
// seconds. One entry: the previous op's tensors are freed when the next op starts.
struct GpuInputs {
  std::string key;
  std::vector<Tensor> x;
  Tensor dout;
};
const GpuInputs& gpu_inputs(const OpCase& op, const Dims& d) {
  static GpuInputs cache;
  const std::string key = std::string(op.name) + "/" + shape_tag(op, d);
  if (cache.key != key) {
    cache = GpuInputs{};
    Generator gen(2);
    for (const Tensor& t : op.inputs(d, gen)) cache.x.push_back(t.to(Device::CUDA));
    cache.dout = from_fn(output_shape(op, d), gen, normal).to(Device::CUDA);
    cache.key = key;
  }
  return cache;
}

void bm_op(benchmark::State& state, const OpCase& op, Dims d, DType dt, Pass pass) {
  try {
    if (const std::string& error = validated(op, dt); !error.empty()) {
      state.SkipWithError(error.c_str());
      return;
    }
    const GpuInputs& in = gpu_inputs(op, d);
    std::vector<Var> x;
    for (const Tensor& t : in.x) x.emplace_back(t.to(dt).clone(), true);  // fresh leaves
    const Tensor dout = in.dout.to(dt);
    const double ms = timed_loop(state, [&] {
      const std::vector<Var> out = op.run(x);
      if (pass == Pass::ForwardBackward) {
        out[0].backward(dout);
        for (const Var& v : x) v.zero_grad();
      }
    });
    state.counters["ms"] = ms;
    const double work = op.work(d, pass, dt);
    if (op.rate == Rate::Bandwidth)
      state.counters["GB/s"] = work / (ms * 1e-3) / 1e9;
    else
      state.counters["TFLOP/s"] = work / (ms * 1e-3) / 1e12;
  } catch (const std::exception& e) {
    state.SkipWithError((std::string(op.name) + ": " + e.what()).c_str());
  }
}

// The memory ceiling: a 1 GiB device-to-device copy (GB/s = bytes read + written / time).
void bm_copy(benchmark::State& state) {
  try {
    const int64_t n = int64_t(1) << 28, tile = int64_t(1) << 24;  // floats
    Generator gen(3);
    const Tensor pattern = Tensor::randn({tile}, gen).to(Device::CUDA);
    Tensor src = Tensor::empty({n}, DType::f32, Device::CUDA);
    Tensor dst = Tensor::empty({n}, DType::f32, Device::CUDA);
    const size_t tile_bytes = size_t(tile) * sizeof(float);
    for (int64_t i = 0; i < n; i += tile)  // random data, never zeros
      copy_bytes(src.data<float>() + i, Device::CUDA, pattern.data<float>(), Device::CUDA,
                 tile_bytes);
    const size_t bytes = size_t(n) * sizeof(float);
    const double ms = timed_loop(state, [&] {
      copy_bytes(dst.data<float>(), Device::CUDA, src.data<float>(), Device::CUDA, bytes);
    });
    state.counters["ms"] = ms;
    state.counters["GB/s"] = 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (!device_available(Device::CUDA)) {
    std::fprintf(stderr,
                 "bench_cuda_ops: no CUDA device visible to this process; nothing to time "
                 "(run it on a GPU machine: bench/run_gpu.sh)\n");
    return 0;
  }
  const Dims d{env_int("HLA_BENCH_B", 8), env_int("HLA_BENCH_T", 2048), 16, 64, 64};
  std::vector<DType> dtypes;
  try {
    dtypes = bench_dtypes();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_ops: %s\n", e.what());
    return 1;
  }
  std::string dtype_list;
  for (DType dt : dtypes) dtype_list += std::string(dtype_list.empty() ? "" : ",") + dtype_name(dt);
  benchmark::AddCustomContext("hla_dtype", dtype_list);
  cuda::set_tf32(env_int("HLA_TF32", 0) != 0);  // cuBLAS f32 products on TF32 tensor cores
  benchmark::AddCustomContext("hla_tf32", cuda::tf32_enabled() ? "1" : "0");
  benchmark::RegisterBenchmark("copy/device_to_device/1GiB", bm_copy)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  const std::pair<const char*, Pass> passes[] = {{"fwd", Pass::Forward},
                                                 {"fwd_bwd", Pass::ForwardBackward}};
  // names: <op>/<dtype>/<shape>/<pass>, e.g. gla/bf16/B8_T2048_H16_K64_V64/fwd_bwd
  auto register_at = [&](const OpCase& op, const Dims& shape) {
    for (DType dt : dtypes)
      for (const auto& [pass_name, pass] : passes)
        benchmark::RegisterBenchmark((std::string(op.name) + "/" + dtype_name(dt) + "/" +
                                      shape_tag(op, shape) + "/" + pass_name)
                                         .c_str(),
                                     bm_op, op, shape, dt, pass)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
  };
  for (const OpCase& op : op_cases()) register_at(op, d);
  // The delta rules at Gated DeltaNet's 340M head layout: 4 heads of K = V = 256, i.e. B*H = 32
  // heads for the GPU's 132 multiprocessors, which the op splits into value slices.
  const Dims wide{d.B, d.T, 4, 256, 256};
  for (const OpCase& op : op_cases())
    if (op.name == std::string("delta_rule") || op.name == std::string("gated_delta_rule"))
      register_at(op, wide);
  // gla at GLA's 340M head layout: 4 heads of K = 128, V = 256 (expand_k 0.5, expand_v 1), the
  // recurrence of every GLA layer of the model benchmark.
  const Dims gla_340m{d.B, d.T, 4, 128, 256};
  for (const OpCase& op : op_cases())
    if (op.name == std::string("gla")) register_at(op, gla_340m);
  // fla_bench.py's second op shape, B=4, T=4096, H=8, K=V=128 (half the batch, twice the
  // length of the first: HLA_BENCH_B / _T scale it too): HGRN2's 340M head layout (its
  // recurrence is gla at H=8, K=V=128) and wide heads for the other ops.
  const Dims second{std::max<int64_t>(1, d.B / 2), 2 * d.T, 8, 128, 128};
  for (const OpCase& op : op_cases())
    if (op.layout == Layout::Heads) register_at(op, second);  // the channel ops' D = H*K: the first's
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
