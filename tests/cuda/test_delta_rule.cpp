// The delta-rule kernels on CUDA (DeltaNet, Gated DeltaNet; recurrent and chunk tiers) against the
// CPU recurrent tier, and the CUDA chunk tier against the CUDA recurrent tier: o, hT, dq, dk, dv,
// dbeta, dg, dh0 compared separately by name (relative RMS, tests/helpers/close.h) with random
// upstream gradients dout and dhT (fla's one-scalar trick). Covered: ragged T around the chunk size
// (1, 63, 64, 65, 130, 200), H = 1, K != V (32/48, 60/33, 160/96), K = V = 64, 128, 256 (the
// shared-memory and global-workspace paths of the chunk kernels, the one-kernel and the tiled
// gradients), DeltaNet and two decay regimes (strong g = logsigmoid(N(0,1)), weak g =
// logsigmoid(N(4,1)) / 16), with and without l2norm_qk, with and without h0 / dhT, f32 and f64.
// Then the autograd ops delta_rule() / gated_delta_rule() on CUDA Vars against CPU Vars (outputs
// and the .grad() of every input, for Auto, Recurrent and Chunk, heads whole and split into value
// slices), the CPU-only reference tier's error, and the state carry: T tokens equal T1 then T2
// tokens from the carried state, forward and backward, on both CUDA tiers. The chunk tier's TF32
// products against the CPU with TF32 tolerances, and its bf16 kernels (bf16 products) against
// the CPU with bf16 ones, whole and split with the state carried in bf16. Inputs: beta =
// sigmoid(N(0,1)) in (0,1); k rows unit-norm (or raw with l2norm_qk) so that the recurrence is
// contractive (spec 5.x). Tolerances (relative RMS): f64
// 1e-10 (same algorithm or an exact reformulation, double rounding); f32 2e-5 for outputs and
// 5e-5 for gradients (other summation orders over K, V and up to 200 steps; the CPU tiers agree
// with the f64 reference to 1e-5 / 5e-5 on the same problems).
#include "tests/cuda/cuda_test_helpers.h"
#ifdef HLA_WITH_CUDA
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "autograd/primitives.h"
#include "autograd/recurrences.h"
#include "autograd/var.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/recurrence_cuda.h"
#include "kernels/recurrence.h"
#include "tests/helpers/sequences.h"

using namespace hla;
using namespace hla::cuda_test;

namespace {

double out_tol(DType dt) {
  return dt == DType::f64 ? 1e-10 : 2e-5;
}
double grad_tol(DType dt) {
  return dt == DType::f64 ? 1e-10 : 5e-5;
}

enum class Decay { None, Strong, Weak };
const char* decay_name(Decay d) {
  return d == Decay::None ? "none" : d == Decay::Strong ? "strong" : "weak";
}

// One problem on the CPU: inputs and upstream gradients; g, h0, dhT undefined when absent.
struct Problem {
  kernels::RecDims d;
  bool l2norm = false;
  double scale = 1;
  Tensor q, k, v, beta, g, h0, dout, dhT;
};

Problem make_problem(kernels::RecDims d, DType dt, Decay decay, bool l2norm, bool with_state,
                     uint64_t seed) {
  Generator gen(seed);
  const int64_t rows = d.B * d.T * d.H;
  auto normal = [&](int64_t n, double mean, double sd) {
    std::vector<double> x(n);
    for (double& e : x) e = mean + sd * gen.normal();
    return x;
  };
  auto tensor = [&](const std::vector<double>& x, const Shape& shape) {
    return Tensor::from_values(x, shape, dt);
  };
  Problem p;
  p.d = d;
  p.l2norm = l2norm;
  p.scale = 1.0 / std::sqrt(double(d.K));
  p.q = tensor(normal(rows * d.K, 0, 1), {d.B, d.T, d.H, d.K});
  std::vector<double> k = normal(rows * d.K, 0, 1);
  if (!l2norm)  // unit keys keep the recurrence contractive
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < d.K; ++i) ss += k[r * d.K + i] * k[r * d.K + i];
      for (int64_t i = 0; i < d.K; ++i) k[r * d.K + i] /= std::sqrt(ss);
    }
  p.k = tensor(k, {d.B, d.T, d.H, d.K});
  p.v = tensor(normal(rows * d.V, 0, 1), {d.B, d.T, d.H, d.V});
  std::vector<double> beta = normal(rows, 0, 1);
  for (double& b : beta) b = 1.0 / (1.0 + std::exp(-b));
  p.beta = tensor(beta, {d.B, d.T, d.H});
  if (decay != Decay::None) {
    std::vector<double> g = normal(rows, decay == Decay::Weak ? 4.0 : 0.0, 1);
    for (double& x : g) x = -std::log1p(std::exp(-x)) / (decay == Decay::Weak ? 16.0 : 1.0);
    p.g = tensor(g, {d.B, d.T, d.H});
  }
  p.dout = tensor(normal(rows * d.V, 0, 1), {d.B, d.T, d.H, d.V});
  if (with_state) {
    p.h0 = tensor(normal(d.B * d.H * d.K * d.V, 0, 0.5), {d.B, d.H, d.K, d.V});
    p.dhT = tensor(normal(d.B * d.H * d.K * d.V, 0, 1), {d.B, d.H, d.K, d.V});
  }
  return p;
}

enum class Tier { CpuRecurrent, CudaRecurrent, CudaChunk, CudaChunkTF32 };

const char* kNames[] = {"o", "hT", "dq", "dk", "dv", "dbeta", "dg", "dh0"};

// Forward and backward of one tier; returns o, hT, dq, dk, dv, dbeta, dg, dh0 on the CPU
// (dg / dh0 undefined when g / h0 are absent).
template <class S>
std::vector<Tensor> run_tier(const Problem& p, Tier tier) {
  const Device dev = tier == Tier::CpuRecurrent ? Device::CPU : Device::CUDA;
  auto on = [&](const Tensor& t) { return t.defined() ? t.to(dev) : Tensor(); };
  auto like = [&](const Tensor& t) {
    return t.defined() ? Tensor::empty(t.shape(), t.dtype(), dev) : Tensor();
  };
  auto cptr = [](const Tensor& t) { return t.defined() ? t.data<S>() : nullptr; };
  auto mptr = [](Tensor& t) { return t.defined() ? t.data<S>() : nullptr; };
  const Tensor q = on(p.q), k = on(p.k), v = on(p.v), beta = on(p.beta), g = on(p.g), h0 = on(p.h0),
               dout = on(p.dout), dhT = on(p.dhT);
  const kernels::RecDims& d = p.d;
  const kernels::DeltaRuleArgs<S> a{
      d,       q.data<S>(), k.data<S>(), v.data<S>(), beta.data<S>(),
      cptr(g), cptr(h0),    p.scale,     p.l2norm,    tier == Tier::CudaChunkTF32};
  Tensor o = like(p.v), hT = Tensor::empty({d.B, d.H, d.K, d.V}, q.dtype(), dev);
  Tensor dq = like(p.q), dk = like(p.k), dv = like(p.v), dbeta = like(p.beta), dg = like(p.g),
         dh0 = like(p.h0);
  const kernels::DeltaRuleOut<S> out{o.data<S>(), hT.data<S>()};
  const kernels::DeltaRuleGrad<S> grad{dout.data<S>(), cptr(dhT),       dq.data<S>(), dk.data<S>(),
                                       dv.data<S>(),   dbeta.data<S>(), mptr(dg),     mptr(dh0)};
  if constexpr (std::is_same_v<S, bf16>) {  // the chunk tier only
    REQUIRE(tier == Tier::CudaChunk);
    cuda::delta_rule_chunk_forward<S>(a, out);
    cuda::delta_rule_chunk_backward<S>(a, grad);
  } else {
    switch (tier) {
      case Tier::CpuRecurrent:
        kernels::delta_rule_recurrent_forward<S>(a, out);
        kernels::delta_rule_recurrent_backward<S>(a, grad);
        break;
      case Tier::CudaRecurrent:
        cuda::delta_rule_recurrent_forward<S>(a, out);
        cuda::delta_rule_recurrent_backward<S>(a, grad);
        break;
      case Tier::CudaChunk:
      case Tier::CudaChunkTF32:
        cuda::delta_rule_chunk_forward<S>(a, out);
        cuda::delta_rule_chunk_backward<S>(a, grad);
        break;
    }
  }
  std::vector<Tensor> res{o, hT, dq, dk, dv, dbeta, dg, dh0};
  for (Tensor& t : res)
    if (t.defined()) t = t.to(Device::CPU);
  return res;
}

std::vector<Tensor> run(const Problem& p, Tier tier) {
  return p.q.dtype() == DType::f64 ? run_tier<double>(p, tier) : run_tier<float>(p, tier);
}

// x rounded to TF32's 11-bit significand (to nearest, ties to even), on the host.
float round_to_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  u = (u + 0xFFFu + ((u >> 13) & 1u)) & ~0x1FFFu;
  std::memcpy(&x, &u, sizeof u);
  return x;
}

// The f32 problem with the tensor cores' operands q, k, v and h0 rounded to TF32.
Problem rounded_to_tf32(Problem p) {
  for (Tensor* t : {&p.q, &p.k, &p.v, &p.h0}) {
    if (!t->defined()) continue;
    std::vector<float> x = t->to_vector<float>();
    for (float& e : x) e = round_to_tf32(e);
    *t = Tensor::from_values(std::vector<double>(x.begin(), x.end()), t->shape(), t->dtype());
  }
  return p;
}

// Every input and upstream gradient of p rounded to bf16, then held as dt.
Problem through_bf16(Problem p, DType dt) {
  for (Tensor* t : {&p.q, &p.k, &p.v, &p.beta, &p.g, &p.h0, &p.dout, &p.dhT})
    if (t->defined()) *t = t->to(DType::bf16).to(dt);
  return p;
}

void require_all_close(const std::string& what, const std::vector<Tensor>& ref,
                       const std::vector<Tensor>& out, DType dt) {
  for (size_t i = 0; i < ref.size(); ++i) {
    REQUIRE(ref[i].defined() == out[i].defined());
    if (!ref[i].defined()) continue;
    REQUIRE_CLOSE(what + " " + kNames[i], vals(ref[i]), vals(out[i]),
                  i < 2 ? out_tol(dt) : grad_tol(dt));
  }
}

// Both CUDA tiers against the CPU recurrent tier, and the chunk tier against the recurrent one.
void check_tiers(const Problem& p) {
  const DType dt = p.q.dtype();
  const std::vector<Tensor> cpu = run(p, Tier::CpuRecurrent);
  const std::vector<Tensor> rec = run(p, Tier::CudaRecurrent);
  const std::vector<Tensor> chunk = run(p, Tier::CudaChunk);
  require_all_close("cuda recurrent vs cpu:", cpu, rec, dt);
  require_all_close("cuda chunk vs cpu:", cpu, chunk, dt);
  require_all_close("cuda chunk vs cuda recurrent:", rec, chunk, dt);
}

}  // namespace

TEST_CASE("cuda delta rule kernels match the CPU recurrent tier", "[cuda]") {
  HLA_REQUIRE_GPU();
  uint64_t seed = 100;
  for (DType dt : {DType::f32, DType::f64})
    for (Decay decay : {Decay::None, Decay::Strong, Decay::Weak})
      for (bool l2norm : {false, true})
        for (int64_t T : {1, 63, 64, 65, 130, 200})
          for (const kernels::RecDims& shape :
               {kernels::RecDims{2, 0, 2, 32, 48}, kernels::RecDims{1, 0, 1, 60, 33}}) {
            const bool with_state = (T + shape.K) % 2 == 0 || T == 130;
            kernels::RecDims d = shape;
            d.T = T;
            INFO(dtype_name(dt) << " decay " << decay_name(decay) << " l2norm " << l2norm << " T "
                                << T << " B,H,K,V " << d.B << "," << d.H << "," << d.K << "," << d.V
                                << " h0/dhT " << with_state);
            check_tiers(make_problem(d, dt, decay, l2norm, with_state, ++seed));
          }
}

// The chunk tier's walks take 32 value columns a block when B*H*ceil(V/32) blocks fit in one wave
// of the GPU's multiprocessors, else 64: a batch of one takes the narrow slices, a batch past
// the SM count the wide ones (V = 80: a partial slice either way).
TEST_CASE("cuda delta rule chunk tier with walks of 32 and of 64 value columns", "[cuda]") {
  HLA_REQUIRE_GPU();
  const int64_t H = 2, V = 80, slices32 = (V + 31) / 32;
  const int64_t wide_batch = cuda::multiprocessor_count() / (H * slices32) + 1;
  uint64_t seed = 700;
  for (int64_t B : {int64_t(1), wide_batch})
    for (Decay decay : {Decay::None, Decay::Strong}) {
      INFO("B " << B << " decay " << decay_name(decay));
      check_tiers(make_problem({B, 130, H, 48, V}, DType::f32, decay, true, true, ++seed));
    }
}

// K = V = 64 runs the single grad kernel in shared memory; 128, 256 and K = 160, V = 96 (a
// partial tile of 32 keys, of 32 values) the three grad kernels on 64-wide tiles. Each kernel
// has a shared and a global instance (block buffers over the shared-memory limit): f64 runs the
// walks' global ones at K = 160 and 256, f32 at K = V = 512.
TEST_CASE("cuda delta rule kernels at K = V = 64, 128, 256 and 512, and K = 160, V = 96", "[cuda]") {
  HLA_REQUIRE_GPU();
  uint64_t seed = 200;
  for (DType dt : {DType::f32, DType::f64})
    for (auto [K, V] : {std::pair<int64_t, int64_t>{64, 64}, {128, 128}, {256, 256}, {160, 96},
                        {512, 512}})
      for (Decay decay : {Decay::None, Decay::Strong}) {
        if (K == 512 && dt == DType::f64) continue;  // f64's global instances run at K = 160
        const bool l2norm = decay == Decay::Strong;
        INFO(dtype_name(dt) << " K=" << K << " V=" << V << " decay " << decay_name(decay)
                            << " l2norm " << l2norm);
        check_tiers(make_problem({2, 130, 2, K, V}, dt, decay, l2norm, true, ++seed));
      }
}

// The chunk tier's products on the TF32 tensor cores (f32 with tensor_cores) against the f32 CPU
// recurrent tier. Tolerances (relative RMS): outputs 4e-3, gradients 1e-2, for operands
// rounded to an 11-bit significand (2.4e-4 relative each) through the chunk's chained products
// (Ti, then U - W S, over up to 4 chunks) and the backward's longer chains; a wrong fragment
// mapping or a dropped tail of R gives O(1). An ill-conditioned draw loosens them: each is at
// least 4x the problem's own sensitivity, the CPU tier's change when only its inputs q, k, v, h0
// are rounded to TF32 (at T = 1 the output is beta (q.k) v, and a q.k that cancels to 1/80 of
// sum |q_i k_i| turns 2.4e-4 per operand into 7.6e-3). The TF32 path must also differ from the f32 FMA
// path by more than f32 rounding (1e-6), so that a silent fallback to FMAs fails.
TEST_CASE("cuda delta rule chunk tier on the TF32 tensor cores", "[cuda]") {
  HLA_REQUIRE_GPU();
  uint64_t seed = 400;
  for (Decay decay : {Decay::None, Decay::Strong, Decay::Weak})
    for (bool l2norm : {false, true})
      for (int64_t T : {1, 63, 65, 200})
        for (const kernels::RecDims& shape :
             {kernels::RecDims{2, 0, 2, 32, 48}, kernels::RecDims{1, 0, 1, 60, 33},
              kernels::RecDims{1, 0, 2, 64, 64}, kernels::RecDims{1, 0, 1, 256, 256},
              kernels::RecDims{1, 0, 1, 512, 512}}) {
          // the wide heads once per regime; at K = V = 512 the walks' buffers exceed shared
          // memory, so their global instances run
          if (shape.K >= 256 && T != 200) continue;
          const bool with_state = (T + shape.K) % 2 == 0 || T == 200;
          kernels::RecDims d = shape;
          d.T = T;
          INFO("decay " << decay_name(decay) << " l2norm " << l2norm << " T " << T << " B,H,K,V "
                        << d.B << "," << d.H << "," << d.K << "," << d.V << " h0/dhT "
                        << with_state);
          const Problem p = make_problem(d, DType::f32, decay, l2norm, with_state, ++seed);
          const std::vector<Tensor> cpu = run(p, Tier::CpuRecurrent);
          const std::vector<Tensor> cpu_rounded = run(rounded_to_tf32(p), Tier::CpuRecurrent);
          const std::vector<Tensor> tc = run(p, Tier::CudaChunkTF32);
          for (size_t i = 0; i < cpu.size(); ++i) {
            REQUIRE(cpu[i].defined() == tc[i].defined());
            if (!cpu[i].defined()) continue;
            const double sensitivity =
                hla::test::close_report(vals(cpu[i]), vals(cpu_rounded[i])).rel_rms;
            INFO("sensitivity to TF32 inputs " << sensitivity);
            REQUIRE_CLOSE(std::string("tf32 chunk vs cpu: ") + kNames[i], vals(cpu[i]),
                          vals(tc[i]), std::max(i < 2 ? 4e-3 : 1e-2, 4 * sensitivity));
          }
          if (T > 1) {
            const std::vector<Tensor> fma = run(p, Tier::CudaChunk);
            REQUIRE(hla::test::close_report(vals(fma[0]), vals(tc[0])).rel_rms > 1e-6);
          }
        }
}

// The chunk tier's bf16 kernels (bf16 reads and writes; the walks' states and the gradients'
// sums in f32; every per-chunk matrix (Ti, P, U / Vn, W, diag(lam) K, diag(gam) Q, the
// chunks' states, dY and dS) stored in bf16; products on bf16 tensor cores, every operand
// rounded to an 8-bit significand, 2^-9 relative, as fla's bf16 w, u, states, v_new and dh)
// against the CPU recurrent tier in f64 on the same bf16 inputs. Tolerances (relative RMS):
// outputs 1e-2, gradients 2e-2 (the GLA family's bf16 tolerances; the largest errors measured
// on an H200 are 5.2e-3 for o and 1.2e-2 for dg), each at least 4x the
// problem's own sensitivity (the CPU tier's change when only its inputs are rounded to bf16, as
// for TF32 above). A wrong fragment pairing or a dropped tail of R gives O(1). The output must
// also differ from the TF32 kernels' (on the same inputs, rounded to bf16) by more than a bf16
// rounding of a few elements, so that TF32 products in its place fail. Heads of up to 128 keys
// and values (multiples of 8: 32/48, 64/64, 128/64, 40/120, 56/24) run the one-round-trip bf16
// prep (delta_rule_prep_bf16.cu), the others (60/33, 256, 160/96, 512) the tiled prep; those
// of up to 64 (32/48, 64/64, 56/24: whole and partial steps of 16 along every product) the bf16
// grad (delta_rule_grad_bf16.cu), the others delta_grad_kernel or the tiled grad kernels.
TEST_CASE("cuda delta rule chunk tier in bf16 on bf16 tensor cores against the CPU tier",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  uint64_t seed = 500;
  for (Decay decay : {Decay::None, Decay::Strong, Decay::Weak})
    for (bool l2norm : {false, true})
      for (const kernels::RecDims& d :
           {kernels::RecDims{2, 130, 2, 32, 48}, kernels::RecDims{1, 65, 1, 60, 33},
            kernels::RecDims{1, 200, 2, 64, 64}, kernels::RecDims{1, 130, 2, 128, 64},
            kernels::RecDims{1, 65, 1, 40, 120}, kernels::RecDims{1, 70, 1, 256, 256},
            kernels::RecDims{1, 130, 1, 160, 96}, kernels::RecDims{1, 70, 1, 512, 512},
            kernels::RecDims{1, 77, 1, 56, 24}}) {
        if (d.K == 512 && decay == Decay::Weak) continue;  // the global instances once a regime
        INFO("decay " << decay_name(decay) << " l2norm " << l2norm << " B,T,H,K,V " << d.B << ","
                      << d.T << "," << d.H << "," << d.K << "," << d.V);
        const Problem p = make_problem(d, DType::f64, decay, l2norm, true, ++seed);
        const Problem half = through_bf16(p, DType::bf16), rounded = through_bf16(p, DType::f64);
        const std::vector<Tensor> cpu = run(p, Tier::CpuRecurrent);
        const std::vector<Tensor> cpu_rounded = run(rounded, Tier::CpuRecurrent);
        const std::vector<Tensor> out = run_tier<bf16>(half, Tier::CudaChunk);
        for (size_t i = 0; i < cpu.size(); ++i) {
          REQUIRE(cpu[i].defined() == out[i].defined());
          if (!cpu[i].defined()) continue;
          REQUIRE(out[i].dtype() == DType::bf16);
          const double sensitivity =
              hla::test::close_report(vals(cpu[i]), vals(cpu_rounded[i])).rel_rms;
          INFO("sensitivity to bf16 inputs " << sensitivity);
          REQUIRE_CLOSE(std::string("bf16 chunk vs cpu: ") + kNames[i], vals(cpu_rounded[i]),
                        vals(out[i]), std::max(i < 2 ? 1e-2 : 2e-2, 4 * sensitivity));
        }
        const std::vector<Tensor> tf32 =
            run_tier<float>(through_bf16(p, DType::f32), Tier::CudaChunkTF32);
        REQUIRE(hla::test::close_report(vals(tf32[0].to(DType::bf16)), vals(out[0])).rel_rms >
                1e-4);
      }
}

namespace {

// Steps [t0, t0 + n) of p as a problem of their own (h0 and dhT kept for the caller to replace).
Problem steps_of(const Problem& p, int64_t t0, int64_t n) {
  Problem part = p;
  part.d.T = n;
  for (auto [dst, src] : {std::pair{&part.q, &p.q}, std::pair{&part.k, &p.k},
                          std::pair{&part.v, &p.v}, std::pair{&part.beta, &p.beta},
                          std::pair{&part.g, &p.g}, std::pair{&part.dout, &p.dout}})
    if (src->defined()) *dst = src->narrow(1, t0, n).contiguous();
  return part;
}

// Forward and backward of p's steps [0, T1) and [T1, T) in turn: the first part's hT is the
// second part's h0, and the second part's dh0 the first part's dhT. Returns the two parts'
// results (o, hT, dq, dk, dv, dbeta, dg, dh0 each).
template <class Run>
std::pair<std::vector<Tensor>, std::vector<Tensor>> run_split(const Problem& p, int64_t T1,
                                                              Run run_part) {
  Problem first = steps_of(p, 0, T1), second = steps_of(p, T1, p.d.T - T1);
  second.h0 = run_part(first)[1];
  std::vector<Tensor> r2 = run_part(second);
  first.dhT = r2[7];
  return {run_part(first), std::move(r2)};
}

// Each result of the split run joined over time (o and the token gradients) or taken from the
// part that owns it (hT from the second, dh0 from the first), checked against the whole run
// with tolerance tol(i) for result i.
template <class Tol>
void require_split_close(const std::vector<Tensor>& whole, const std::vector<Tensor>& first,
                         const std::vector<Tensor>& second, int64_t B, Tol tol) {
  for (size_t i = 0; i < whole.size(); ++i) {
    REQUIRE(whole[i].defined() == first[i].defined());
    if (!whole[i].defined()) continue;
    const std::vector<double> split =
        i == 1   ? vals(second[i])
        : i == 7 ? vals(first[i])
                 : hla::test::time_concat(vals(first[i]), vals(second[i]), B);
    REQUIRE_CLOSE(std::string("split vs whole: ") + kNames[i], vals(whole[i]), split, tol(i));
  }
}

}  // namespace

TEST_CASE("cuda delta rule: T tokens equal T1 then T2 from the carried state", "[cuda]") {
  HLA_REQUIRE_GPU();
  const int64_t T1 = 70, T2 = 60;
  for (DType dt : {DType::f32, DType::f64})
    for (Tier tier : {Tier::CudaRecurrent, Tier::CudaChunk}) {
      INFO(dtype_name(dt) << (tier == Tier::CudaChunk ? " chunk" : " recurrent"));
      const Problem all = make_problem({2, T1 + T2, 2, 32, 48}, dt, Decay::Strong, true, true, 7);
      const auto [first, second] =
          run_split(all, T1, [&](const Problem& part) { return run(part, tier); });
      require_split_close(run(all, tier), first, second, all.d.B,
                          [&](size_t i) { return i < 2 ? out_tol(dt) : grad_tol(dt); });
    }
}

// The bf16 chunk kernels with the state carried in bf16 (hT and dh0 are bf16 outputs): the two
// parts against the CPU recurrent tier in f64 over all T steps on the same bf16 inputs, at the
// bf16 tolerances of the test above (and at least 4x the problem's sensitivity to its inputs'
// bf16 rounding). The split at 70 moves the chunk boundaries, and the carried
// state adds one bf16 rounding; a state dropped at the split gives errors of order one in the
// second part's o and the first part's gradients (no decay, and weak decay, keep h0 alive).
TEST_CASE("cuda delta rule bf16 chunk tier: T1 then T2 steps from the carried bf16 state",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  const int64_t T1 = 70;
  uint64_t seed = 900;
  for (Decay decay : {Decay::None, Decay::Weak, Decay::Strong})
    for (const kernels::RecDims& d :
         {kernels::RecDims{2, 130, 2, 32, 48}, kernels::RecDims{1, 200, 2, 64, 64},
          kernels::RecDims{1, 140, 1, 256, 256}}) {
      INFO("decay " << decay_name(decay) << " B,T,H,K,V " << d.B << "," << d.T << "," << d.H
                    << "," << d.K << "," << d.V);
      const Problem p = make_problem(d, DType::f64, decay, false, true, ++seed);
      const Problem half = through_bf16(p, DType::bf16), rounded = through_bf16(p, DType::f64);
      const std::vector<Tensor> cpu = run(p, Tier::CpuRecurrent);
      const std::vector<Tensor> cpu_rounded = run(rounded, Tier::CpuRecurrent);
      const auto [first, second] = run_split(half, T1, [](const Problem& part) {
        return run_tier<bf16>(part, Tier::CudaChunk);
      });
      REQUIRE(second[1].dtype() == DType::bf16);
      REQUIRE(first[7].dtype() == DType::bf16);
      require_split_close(cpu_rounded, first, second, d.B, [&](size_t i) {
        const double sensitivity =
            hla::test::close_report(vals(cpu[i]), vals(cpu_rounded[i])).rel_rms;
        return std::max(i < 2 ? 1e-2 : 2e-2, 4 * sensitivity);
      });
    }
}

TEST_CASE("cuda delta_rule / gated_delta_rule autograd ops match the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  // CUDA runs each head as value_split slices: 0 (the op's choice: 2 slices of 20 values for
  // the recurrent tier here, whole heads for the chunk tier), 1 (whole heads) and 4; the CPU
  // runs whole heads.
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t T : {40, 130})
      for (Impl impl : {Impl::Auto, Impl::Recurrent, Impl::Chunk})
        for (bool gated : {false, true}) {
          const bool l2norm = gated;
          const Problem p = make_problem({2, T, 2, 24, 40}, dt, gated ? Decay::Weak : Decay::None,
                                         l2norm, true, 300 + T);
          auto run_on = [&](Device dev, int64_t split) {
            Var q(p.q.to(dev), true), k(p.k.to(dev), true), v(p.v.to(dev), true);
            Var beta(p.beta.to(dev), true), h0(p.h0.to(dev), true);
            Var g = gated ? Var(p.g.to(dev), true) : Var();
            const RecurrenceOptions opt{impl, 0.0, l2norm, split};
            const RecurrenceResult r = gated ? gated_delta_rule(q, k, v, g, beta, h0, opt)
                                             : delta_rule(q, k, v, beta, h0, opt);
            REQUIRE(r.o.device() == dev);
            REQUIRE(r.hT.device() == dev);
            const Var loss = sum(r.o * Var(p.dout.to(dev))) + sum(r.hT * Var(p.dhT.to(dev)));
            loss.backward();
            std::vector<Tensor> row{r.o.data(), r.hT.data(), q.grad(), k.grad(),
                                    v.grad(),   beta.grad(), h0.grad()};
            if (gated) row.push_back(g.grad());
            for (Tensor& t : row) t = t.to(Device::CPU);
            return row;
          };
          const std::vector<Tensor> cpu = run_on(Device::CPU, 1);
          for (int64_t split : {0, 1, 4}) {
            INFO(dtype_name(dt) << " T " << T << " impl " << impl_name(impl) << " gated " << gated
                                << " value_split " << split);
            const std::vector<Tensor> gpu = run_on(Device::CUDA, split);
            const char* names[] = {"o", "hT", "dq", "dk", "dv", "dbeta", "dh0", "dg"};
            for (size_t i = 0; i < cpu.size(); ++i)
              REQUIRE_CLOSE(names[i], vals(cpu[i]), vals(gpu[i]),
                            i < 2 ? out_tol(dt) : grad_tol(dt));
          }
        }
}

TEST_CASE("cuda delta_rule: the reference tier is CPU-only and says so", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(9);
  const Var q(gpu(Tensor::randn({1, 4, 1, 8}, gen)), true),
      v(gpu(Tensor::randn({1, 4, 1, 8}, gen)));
  const Var beta(gpu(Tensor::rand({1, 4, 1}, gen)));
  RecurrenceOptions ref;
  ref.impl = Impl::Reference;
  REQUIRE_THROWS_WITH(delta_rule(q, q, v, beta, Var(), ref), Catch::Contains("CPU"));
  // mixing devices is an error, not a silent copy
  REQUIRE_THROWS_AS(delta_rule(q, Var(Tensor::randn({1, 4, 1, 8}, gen)), v, beta), Error);
}
#endif
