// The flash-style softmax attention kernels on CUDA (kernels/cuda/attention_tiled.cu) against
// the CPU tiled kernel and, in f64, the reference: o, lse, dq, dk, dv compared separately by name
// (relative RMS) over causal and not, windows 0 / 1 / 17 / 100, GQA (H=4 with Hkv=2 and 1) and
// H=1, ragged T (1, 17, 63, 64, 65, 130, 300 around the 64-row tiles), B=2, K != V, and every
// head-size class up to 256 (tiles of 64, 32 and 16 rows) with peaked and flat softmax rows; the
// backward's determinism; and the autograd op softmax_attention() on CUDA Vars against CPU Vars
// (o and the three gradients), with its argument errors.
// Tolerances: f32 outputs 1e-5 and gradients 5e-5 (dS = P (dP - D) cancels, and the GPU sums in
// another order than Eigen); f64 1e-10 against both the CPU tiled kernel and the reference.
#include "tests/cuda/cuda_test_helpers.h"
#ifdef HLA_WITH_CUDA
#include <cmath>
#include <type_traits>

#include "autograd/recurrences.h"
#include "autograd/var.h"
#include "kernels/cuda/recurrence_cuda.h"
#include "kernels/recurrence.h"

using namespace hla;
using namespace hla::cuda_test;

namespace {

double out_tol(DType dt) { return dt == DType::f64 ? 1e-10 : kF32; }
double grad_tol(DType dt) { return dt == DType::f64 ? 1e-10 : 5e-5; }
// dq and dk vanish in exact arithmetic when every query sees one key (T = 1, window = 1):
// dS = P (dP - D) is then rounding noise of two dot products summed in different orders, so the
// check also passes when the largest difference is below this floor.
double abs_floor(DType dt) { return dt == DType::f64 ? 1e-12 : 1e-5; }

// REQUIRE_CLOSE with an absolute floor (tests/helpers/close.h).
#define REQUIRE_CLOSE_OR_TINY(name, ref, out, tol, floor)                       \
  do {                                                                          \
    const auto rep_ = ::hla::test::close_report((ref), (out));                  \
    INFO(rep_.describe(name) << " tol=" << (tol) << " floor=" << (floor));      \
    REQUIRE(::hla::test::close_ok(rep_, (tol), (floor)));                       \
  } while (0)

enum class Tier { CpuTiled, CudaTiled, Reference };

struct Problem {
  kernels::AttnDims d;
  bool causal = true;
  int64_t window = 0;
  double scale = 1.0;
  Tensor q, k, v, dout;  // CPU tensors
};

Problem make_problem(Generator& gen, DType dt, kernels::AttnDims d, bool causal, int64_t window,
                     double logit_std = 1.0) {
  Problem p{d, causal, window, logit_std / std::sqrt(double(d.K)), {}, {}, {}, {}};
  p.q = Tensor::randn({d.B, d.T, d.H, d.K}, gen, dt);
  p.k = Tensor::randn({d.B, d.T, d.Hkv, d.K}, gen, dt);
  p.v = Tensor::randn({d.B, d.T, d.Hkv, d.V}, gen, dt);
  p.dout = Tensor::randn({d.B, d.T, d.H, d.V}, gen, dt);
  return p;
}

// Forward then backward of one tier: o, lse, dq, dk, dv as CPU tensors.
template <class S>
std::vector<Tensor> run_tier(const Problem& p, Tier tier) {
  const Device dev = tier == Tier::CudaTiled ? Device::CUDA : Device::CPU;
  const DType dt = p.q.dtype();
  const kernels::AttnDims& d = p.d;
  const Tensor q = p.q.to(dev), k = p.k.to(dev), v = p.v.to(dev), dout = p.dout.to(dev);
  Tensor o = Tensor::empty({d.B, d.T, d.H, d.V}, dt, dev);
  Tensor lse = Tensor::empty({d.B, d.H, d.T}, dt, dev);
  Tensor dq = Tensor::empty(q.shape(), dt, dev), dk = Tensor::empty(k.shape(), dt, dev);
  Tensor dv = Tensor::empty(v.shape(), dt, dev);
  const kernels::AttentionArgs<S> a{d, q.data<S>(), k.data<S>(), v.data<S>(),
                                    p.causal, p.window, p.scale};
  const kernels::AttentionOut<S> out{o.data<S>(), lse.data<S>()};
  const kernels::AttentionGrad<S> g{dout.data<S>(), o.data<S>(), lse.data<S>(),
                                    dq.data<S>(),   dk.data<S>(), dv.data<S>()};
  switch (tier) {
    case Tier::CudaTiled:
      cuda::softmax_attention_tiled_forward<S>(a, out);
      cuda::softmax_attention_tiled_backward<S>(a, g);
      break;
    case Tier::CpuTiled:
      kernels::softmax_attention_tiled_forward<S>(a, out);
      kernels::softmax_attention_tiled_backward<S>(a, g);
      break;
    case Tier::Reference:
      if constexpr (std::is_same_v<S, double>) {
        kernels::softmax_attention_reference_forward(a, out);
        kernels::softmax_attention_reference_backward(a, g);
      } else {
        FAIL("the reference runs in f64 only");
      }
      break;
  }
  std::vector<Tensor> res{o, lse, dq, dk, dv};
  for (Tensor& t : res) t = t.to(Device::CPU);
  return res;
}

// The CUDA tier against the CPU tiled kernel (and, in f64, the reference), every output by name.
void check_problem(const Problem& p) {
  const char* names[] = {"o", "lse", "dq", "dk", "dv"};
  const DType dt = p.q.dtype();
  std::vector<Tensor> gpu_res, cpu_res;
  if (dt == DType::f32) {
    gpu_res = run_tier<float>(p, Tier::CudaTiled);
    cpu_res = run_tier<float>(p, Tier::CpuTiled);
  } else {
    gpu_res = run_tier<double>(p, Tier::CudaTiled);
    cpu_res = run_tier<double>(p, Tier::CpuTiled);
  }
  for (size_t i = 0; i < gpu_res.size(); ++i)
    REQUIRE_CLOSE_OR_TINY(names[i], vals(cpu_res[i]), vals(gpu_res[i]),
                          i < 2 ? out_tol(dt) : grad_tol(dt), abs_floor(dt));
  if (dt != DType::f64) return;
  const std::vector<Tensor> ref = run_tier<double>(p, Tier::Reference);
  for (size_t i = 0; i < gpu_res.size(); ++i)
    REQUIRE_CLOSE_OR_TINY(std::string(names[i]) + " vs reference", vals(ref[i]), vals(gpu_res[i]),
                          i < 2 ? out_tol(dt) : grad_tol(dt), abs_floor(dt));
}

}  // namespace

TEST_CASE("cuda tiled softmax attention matches the CPU: masks, lengths, GQA", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(61);
  const int64_t heads[][2] = {{4, 2}, {4, 1}, {1, 1}};
  for (DType dt : {DType::f32, DType::f64})
    for (bool causal : {true, false})
      for (int64_t window : {0, 1, 17, 100})
        for (const auto& hh : heads)
          for (int64_t T : {1, 17, 63, 64, 65, 130, 300}) {
            INFO(dtype_name(dt) << " causal " << causal << " window " << window << " H " << hh[0]
                                << " Hkv " << hh[1] << " T " << T);
            const kernels::AttnDims d{2, T, hh[0], hh[1], 32, 48};
            check_problem(make_problem(gen, dt, d, causal, window));
          }
}

TEST_CASE("cuda tiled softmax attention matches the CPU: head sizes up to 256", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(62);
  // every head-size class (<= 64, <= 128, <= 256) with K == V, K != V and odd sizes
  const int64_t sizes[][2] = {{64, 64}, {128, 128}, {32, 48}, {60, 33}, {256, 256}, {200, 96}};
  for (DType dt : {DType::f32, DType::f64})
    for (const auto& kv : sizes)
      for (int64_t T : {65, 130})
        for (bool causal : {true, false})
          for (int64_t window : {0, 17}) {
            // logits of std 3 on the non-causal cases: peaked rows stress the online max
            const double logit_std = causal ? 1.0 : 3.0;
            INFO(dtype_name(dt) << " K " << kv[0] << " V " << kv[1] << " T " << T << " causal "
                                << causal << " window " << window);
            const kernels::AttnDims d{2, T, 4, 2, kv[0], kv[1]};
            check_problem(make_problem(gen, dt, d, causal, window, logit_std));
          }
}

TEST_CASE("cuda tiled softmax attention backward is deterministic", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(63);
  for (DType dt : {DType::f32, DType::f64}) {
    INFO(dtype_name(dt));
    const Problem p = make_problem(gen, dt, {2, 300, 4, 1, 64, 48}, true, 100);
    std::vector<Tensor> first, second;
    if (dt == DType::f32) {
      first = run_tier<float>(p, Tier::CudaTiled);
      second = run_tier<float>(p, Tier::CudaTiled);
    } else {
      first = run_tier<double>(p, Tier::CudaTiled);
      second = run_tier<double>(p, Tier::CudaTiled);
    }
    for (size_t i = 0; i < first.size(); ++i) REQUIRE(vals(first[i]) == vals(second[i]));
  }
}

TEST_CASE("cuda softmax_attention autograd op matches the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(64);
  const int64_t B = 2, T = 70, H = 4, Hkv = 2, K = 24, V = 40;
  for (DType dt : {DType::f32, DType::f64})
    for (const AttentionOptions& opt :
         {AttentionOptions{}, AttentionOptions{.causal = false, .window = 9},
          AttentionOptions{.causal = true, .window = 17, .scale = 0.5}}) {
      INFO(dtype_name(dt) << " causal " << opt.causal << " window " << opt.window);
      // q as a transposed view of a [B,H,T,K] tensor: the op makes it contiguous itself
      const Tensor q = Tensor::randn({B, H, T, K}, gen, dt).transpose(1, 2);
      const Tensor k = Tensor::randn({B, T, Hkv, K}, gen, dt);
      const Tensor v = Tensor::randn({B, T, Hkv, V}, gen, dt);
      const Tensor dout = Tensor::randn({B, T, H, V}, gen, dt);
      std::vector<std::vector<Tensor>> res;
      for (Device dev : {Device::CPU, Device::CUDA}) {
        Var vq(q.to(dev), true), vk(k.to(dev), true), vv(v.to(dev), true);
        Var o = softmax_attention(vq, vk, vv, opt);
        REQUIRE(o.device() == dev);
        o.backward(dout.to(dev));
        REQUIRE(vq.grad().device() == dev);
        res.push_back({o.data(), vq.grad(), vk.grad(), vv.grad()});
      }
      const char* names[] = {"o", "dq", "dk", "dv"};
      for (size_t i = 0; i < res[0].size(); ++i)
        REQUIRE_CLOSE(names[i], vals(res[0][i]), vals(res[1][i]),
                      i == 0 ? out_tol(dt) : grad_tol(dt));
    }
}

TEST_CASE("cuda softmax_attention autograd op rejects bad arguments", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(65);
  const Tensor q = gpu(Tensor::randn({1, 5, 2, 8}, gen)), v = gpu(Tensor::randn({1, 5, 2, 6}, gen));
  const Var vq(q), vv(v);
  AttentionOptions reference;
  reference.reference = true;
  CHECK_THROWS_WITH(softmax_attention(vq, vq, vv, reference),
                    Catch::Contains("reference") && Catch::Contains("CPU"));
  CHECK_THROWS_WITH(softmax_attention(vq, Var(q.to(Device::CPU)), vv),
                    Catch::Contains("k on cuda like q"));
  CHECK_THROWS_WITH(softmax_attention(vq, vq, Var(v.to(DType::f64))),
                    Catch::Contains("v of dtype f32 like q"));
  CHECK_THROWS_WITH(softmax_attention(vq, Var(gpu(Tensor::randn({1, 5, 3, 8}, gen))),
                                      Var(gpu(Tensor::randn({1, 5, 3, 6}, gen)))),
                    Catch::Contains("divisible"));
  const Tensor wide = gpu(Tensor::randn({1, 5, 2, 300}, gen));
  CHECK_THROWS_WITH(softmax_attention(Var(wide), Var(wide), vv), Catch::Contains("<= 256"));
}
#endif
