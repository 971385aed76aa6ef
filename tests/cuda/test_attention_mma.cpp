// The bf16 tensor-core softmax attention kernels (kernels/cuda/attention_mma.cu) against the CPU
// tiled kernel in double precision run on the same bf16-rounded q, k, v, dout: o, lse, dq, dk, dv
// compared separately by name (relative RMS), over causal and not, windows 0 / 17 / 300, negative
// and zero scales, GQA (H=4 with Hkv=2 and 1) and H=1, B=2, ragged T (1, 63, 64, 65, 130 around
// the 64-row tiles; 1000 and 2048 for length), K = V = 64 and 128; the error at T = 2048
// against T = 130 (fp32 accumulators and statistics: the error stays flat in T); the unsupported
// head sizes; the backward's determinism; and the autograd op on bf16 CUDA Vars (the
// tensor-core path for K = V = 64, the f32 fallback for K = V = 32) against f32 CPU Vars. The
// forward and backward run twice, on their two kinds of products: wgmma (sm_90a, compute
// capability 9.0) and mma.sync.
// Tolerances:
//   o, dq, dk, dv: relative RMS 1e-2. The kernels round P and dS to bf16 before their second
//     product and o, dq, dk, dv on the way out (2^-9 relative per element, a few 1e-3 RMS), and
//     D = rowsum(dO o O) reads the bf16 o.
//   lse: 1e-4. S = Q K^T of bf16-exact inputs is exact products, summed in fp32 on the GPU
//     (~1e-7 relative against the double sums, as are its exp2 / log).
//   T = 1 (one key per query): dq and dk vanish in exact arithmetic, dS = P (dP - D) is then the
//     noise of D from the bf16 o (~|dO| |o| 2^-9 sqrt(V)): an absolute floor of 5e-2 applies.
//   growth: every rel RMS at T = 2048 at most 3x its value at T = 130 (plus 1e-3): an
//     accumulation or a running sum kept in bf16 would grow with the number of keys.
#include "tests/cuda/cuda_test_helpers.h"
#ifdef HLA_WITH_CUDA
#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/recurrences.h"
#include "autograd/var.h"
#include "kernels/cuda/recurrence_cuda.h"
#include "kernels/recurrence.h"

using namespace hla;
using namespace hla::cuda_test;

namespace {

constexpr double kBf16Tol = 1e-2;         // o, dq, dk, dv
constexpr double kLseTol = 1e-4;          // lse (f32 statistics of exact products)
constexpr double kSingleKeyFloor = 5e-2;  // dq, dk at T = 1
constexpr double kGrowth = 3.0;           // rel RMS at T = 2048 over T = 130
constexpr double kGrowthSlack = 1e-3;

const char* const kNames[] = {"o", "lse", "dq", "dk", "dv"};

// q, k, v, dout: bf16-exact f32 CPU tensors, the inputs both sides see.
struct Problem {
  kernels::AttnDims d;
  bool causal = true;
  int64_t window = 0;
  double scale = 1.0;
  Tensor q, k, v, dout;
};

Tensor bf16_exact(const Tensor& t) {
  return t.to(DType::bf16).to(DType::f32);
}

Problem make_problem(Generator& gen, kernels::AttnDims d, bool causal, int64_t window) {
  Problem p{d, causal, window, 1.0 / std::sqrt(double(d.K)), {}, {}, {}, {}};
  p.q = bf16_exact(Tensor::randn({d.B, d.T, d.H, d.K}, gen));
  p.k = bf16_exact(Tensor::randn({d.B, d.T, d.Hkv, d.K}, gen));
  p.v = bf16_exact(Tensor::randn({d.B, d.T, d.Hkv, d.V}, gen));
  p.dout = bf16_exact(Tensor::randn({d.B, d.T, d.H, d.V}, gen));
  return p;
}

// The CPU tiled kernel in double precision (the reference), on the same bf16-exact inputs:
// o, lse, dq, dk, dv.
std::vector<Tensor> run_cpu(const Problem& p) {
  const kernels::AttnDims& d = p.d;
  const Tensor q = p.q.to(DType::f64), k = p.k.to(DType::f64), v = p.v.to(DType::f64);
  const Tensor dout = p.dout.to(DType::f64);
  Tensor o = Tensor::empty({d.B, d.T, d.H, d.V}, DType::f64);
  Tensor lse = Tensor::empty({d.B, d.H, d.T}, DType::f64);
  Tensor dq = Tensor::empty(q.shape(), DType::f64), dk = Tensor::empty(k.shape(), DType::f64);
  Tensor dv = Tensor::empty(v.shape(), DType::f64);
  const kernels::AttentionArgs<double> a{
      d, q.data<double>(), k.data<double>(), v.data<double>(), p.causal, p.window, p.scale};
  kernels::softmax_attention_tiled_forward<double>(a, {o.data<double>(), lse.data<double>()});
  kernels::softmax_attention_tiled_backward<double>(
      a, {dout.data<double>(), o.data<double>(), lse.data<double>(), dq.data<double>(),
          dk.data<double>(), dv.data<double>()});
  return {o, lse, dq, dk, dv};
}

// The tensor-core kernels on bf16 copies on the GPU, on the products `mma` picks: o, lse, dq,
// dk, dv as f32 CPU tensors.
std::vector<Tensor> run_mma(const Problem& p, cuda::AttentionMma mma = cuda::AttentionMma::Auto) {
  const kernels::AttnDims& d = p.d;
  const Tensor q = gpu(p.q).to(DType::bf16), k = gpu(p.k).to(DType::bf16);
  const Tensor v = gpu(p.v).to(DType::bf16), dout = gpu(p.dout).to(DType::bf16);
  Tensor o = Tensor::empty({d.B, d.T, d.H, d.V}, DType::bf16, Device::CUDA);
  Tensor lse = Tensor::empty({d.B, d.H, d.T}, DType::f32, Device::CUDA);
  Tensor dq = Tensor::empty(q.shape(), DType::bf16, Device::CUDA);
  Tensor dk = Tensor::empty(k.shape(), DType::bf16, Device::CUDA);
  Tensor dv = Tensor::empty(v.shape(), DType::bf16, Device::CUDA);
  const kernels::AttentionArgs<bf16> a{d,        q.data<bf16>(), k.data<bf16>(), v.data<bf16>(),
                                       p.causal, p.window,       p.scale};
  cuda::softmax_attention_mma_forward(a, {o.data<bf16>(), lse.data<float>()}, mma);
  cuda::softmax_attention_mma_backward(a,
                                       {dout.data<bf16>(), o.data<bf16>(), lse.data<float>(),
                                        dq.data<bf16>(), dk.data<bf16>(), dv.data<bf16>()},
                                       mma);
  std::vector<Tensor> res{o, lse, dq, dk, dv};
  for (Tensor& t : res) t = t.to(DType::f32).to(Device::CPU);
  return res;
}

// The two kinds of products of the kernels: Auto (wgmma where
// softmax_attention_wgmma_available()) and mma.sync.
const cuda::AttentionMma kMmas[] = {cuda::AttentionMma::Auto, cuda::AttentionMma::Sync};
const char* mma_name(cuda::AttentionMma m) {
  return m == cuda::AttentionMma::Sync ? "mma.sync" : "auto";
}

// Runs the CPU reference and the GPU with each kind of forward products, checks every output
// by name; returns the reports [kind][output] (kMmas, kNames order).
std::vector<std::vector<test::CloseReport>> check_problem(const Problem& p) {
  const std::vector<Tensor> cpu_res = run_cpu(p);
  std::vector<std::vector<test::CloseReport>> reports;
  for (cuda::AttentionMma mma : kMmas) {
    INFO("products " << mma_name(mma));
    const std::vector<Tensor> gpu_res = run_mma(p, mma);
    reports.emplace_back();
    for (size_t i = 0; i < gpu_res.size(); ++i) {
      const std::string name = kNames[i];
      const auto rep = test::close_report(vals(cpu_res[i]), vals(gpu_res[i]));
      const double tol = name == "lse" ? kLseTol : kBf16Tol;
      const double floor = p.d.T == 1 && (name == "dq" || name == "dk") ? kSingleKeyFloor : 0.0;
      INFO(rep.describe(name) << " tol=" << tol << " floor=" << floor);
      REQUIRE(test::close_ok(rep, tol, floor));
      reports.back().push_back(rep);
    }
  }
  return reports;
}

}  // namespace

TEST_CASE("cuda bf16 mma attention matches the CPU f64 kernel: masks, lengths, GQA", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(71);
  const int64_t heads[][2] = {{4, 2}, {4, 1}, {1, 1}};
  for (int64_t D : {64, 128})
    for (bool causal : {true, false})
      for (int64_t window : {0, 17, 300})
        for (const auto& hh : heads)
          for (int64_t T : {1, 63, 64, 65, 130}) {
            INFO("D " << D << " causal " << causal << " window " << window << " H " << hh[0]
                      << " Hkv " << hh[1] << " T " << T);
            check_problem(make_problem(gen, {2, T, hh[0], hh[1], D, D}, causal, window));
          }
}

// The forward takes its row maxima from the raw scores, in the scale's direction, and zeroes
// masked entries whatever the scale: a negative scale and scale 0 take their own paths.
TEST_CASE("cuda bf16 mma attention matches the CPU at negative and zero scales", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(73);
  for (double scale : {-0.3, 0.0})
    for (int64_t D : {64, 128})
      for (bool causal : {true, false})
        for (int64_t window : {0, 17})
          for (int64_t T : {65, 130}) {
            INFO("scale " << scale << " D " << D << " causal " << causal << " window " << window
                          << " T " << T);
            Problem p = make_problem(gen, {2, T, 2, 1, D, D}, causal, window);
            p.scale = scale;
            check_problem(p);
          }
}

TEST_CASE("cuda bf16 mma attention: long sequences, error flat in T", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(72);
  for (int64_t D : {64, 128})
    for (bool causal : {true, false})
      for (int64_t window : {0, 300}) {
        INFO("D " << D << " causal " << causal << " window " << window);
        const auto short_rep =
            check_problem(make_problem(gen, {2, 130, 1, 1, D, D}, causal, window));
        {
          INFO("T 1000");
          check_problem(make_problem(gen, {2, 1000, 1, 1, D, D}, causal, window));
        }
        INFO("T 2048");
        const auto long_rep =
            check_problem(make_problem(gen, {2, 2048, 1, 1, D, D}, causal, window));
        for (size_t m = 0; m < long_rep.size(); ++m)
          for (size_t i = 0; i < long_rep[m].size(); ++i) {
            INFO(mma_name(kMmas[m]) << " " << kNames[i] << ": rel_rms T=130 "
                                    << short_rep[m][i].rel_rms << ", T=2048 "
                                    << long_rep[m][i].rel_rms);
            CHECK(long_rep[m][i].rel_rms <= kGrowth * short_rep[m][i].rel_rms + kGrowthSlack);
          }
      }
  // GQA over a long sequence: the dK/dV kernel sums four query heads
  check_problem(make_problem(gen, {2, 1000, 4, 1, 128, 128}, true, 0));
}

// A build with the sm_90a kernels (HLA_WITH_SM90A: its CUDA architectures include 90, as by
// default) must take them exactly on compute capability 9.0 devices; a build without never.
TEST_CASE("cuda bf16 mma attention takes wgmma exactly where it is built and runs", "[cuda]") {
  HLA_REQUIRE_GPU();
  int device = 0, major = 0, minor = 0;
  REQUIRE(cudaGetDevice(&device) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) ==
          cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) ==
          cudaSuccess);
#ifdef HLA_WITH_SM90A
  const bool built = true;
#else
  const bool built = false;
#endif
  INFO("compute capability " << major << "." << minor << ", sm_90a kernels built: " << built);
  WARN("bf16 attention products: "
       << (cuda::softmax_attention_wgmma_available() ? "wgmma and mma.sync" : "mma.sync"));
  REQUIRE(cuda::softmax_attention_wgmma_available() == (built && major == 9 && minor == 0));
}

TEST_CASE("cuda bf16 mma attention rejects head sizes other than 64 and 128", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(73);
  const int64_t sizes[][2] = {{96, 96}, {64, 128}, {32, 32}};
  for (const auto& kv : sizes) {
    const kernels::AttnDims d{1, 5, 2, 2, kv[0], kv[1]};
    INFO("K " << d.K << " V " << d.V);
    REQUIRE_FALSE(cuda::softmax_attention_mma_supports(d));
    const Tensor q = gpu(Tensor::randn({1, 5, 2, d.K}, gen)).to(DType::bf16);
    const Tensor v = gpu(Tensor::randn({1, 5, 2, d.V}, gen)).to(DType::bf16);
    Tensor o = Tensor::empty({1, 5, 2, d.V}, DType::bf16, Device::CUDA);
    const kernels::AttentionArgs<bf16> a{d, q.data<bf16>(), q.data<bf16>(), v.data<bf16>()};
    CHECK_THROWS_WITH(cuda::softmax_attention_mma_forward(a, {o.data<bf16>(), nullptr}),
                      Catch::Contains("either 64 or 128"));
  }
}

TEST_CASE("cuda bf16 mma attention backward is deterministic", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(74);
  for (int64_t D : {64, 128}) {
    const Problem p = make_problem(gen, {2, 300, 4, 1, D, D}, true, 100);
    const std::vector<Tensor> first = run_mma(p), second = run_mma(p);
    for (size_t i = 0; i < first.size(); ++i) {
      INFO("D " << D << " " << kNames[i]);
      REQUIRE(vals(first[i]) == vals(second[i]));
    }
  }
}

TEST_CASE("cuda softmax_attention on bf16 Vars matches f32 on the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(75);
  const int64_t B = 2, T = 130, H = 4, Hkv = 2;
  // 64: the tensor-core kernels; 32: the f32 kernels on f32 copies
  for (int64_t D : {64, 32})
    for (const AttentionOptions& opt :
         {AttentionOptions{}, AttentionOptions{.causal = false, .window = 17},
          AttentionOptions{.causal = true, .window = 300, .scale = 0.2}}) {
      INFO("D " << D << " causal " << opt.causal << " window " << opt.window);
      const Tensor q = bf16_exact(Tensor::randn({B, T, H, D}, gen));
      const Tensor k = bf16_exact(Tensor::randn({B, T, Hkv, D}, gen));
      const Tensor v = bf16_exact(Tensor::randn({B, T, Hkv, D}, gen));
      const Tensor dout = bf16_exact(Tensor::randn({B, T, H, D}, gen));
      Var rq(q, true), rk(k, true), rv(v, true);
      Var ref = softmax_attention(rq, rk, rv, opt);
      ref.backward(dout);
      Var gq(gpu(q).to(DType::bf16), true), gk(gpu(k).to(DType::bf16), true),
          gv(gpu(v).to(DType::bf16), true);
      Var o = softmax_attention(gq, gk, gv, opt);
      REQUIRE(o.dtype() == DType::bf16);
      REQUIRE(o.device() == Device::CUDA);
      o.backward(gpu(dout).to(DType::bf16));
      const std::vector<Tensor> want{ref.data(), rq.grad(), rk.grad(), rv.grad()};
      const std::vector<Tensor> got{o.data(), gq.grad(), gk.grad(), gv.grad()};
      const char* names[] = {"o", "dq", "dk", "dv"};
      for (size_t i = 0; i < got.size(); ++i) {
        REQUIRE(got[i].dtype() == DType::bf16);
        REQUIRE_CLOSE(names[i], vals(want[i]), vals(got[i].to(DType::f32)), kBf16Tol);
      }
      if (D != 64) continue;
      // the node ran the tensor-core kernel: its o is bit for bit the kernel's
      const kernels::AttnDims d{B, T, H, Hkv, D, D};
      Tensor o_mma = Tensor::empty({B, T, H, D}, DType::bf16, Device::CUDA);
      const kernels::AttentionArgs<bf16> a{d,
                                           gq.data().data<bf16>(),
                                           gk.data().data<bf16>(),
                                           gv.data().data<bf16>(),
                                           opt.causal,
                                           opt.window,
                                           opt.scale > 0 ? opt.scale : 1.0 / std::sqrt(double(D))};
      cuda::softmax_attention_mma_forward(a, {o_mma.data<bf16>(), nullptr});
      REQUIRE(vals(o.data().to(DType::f32)) == vals(o_mma.to(DType::f32)));
    }
}
#endif
