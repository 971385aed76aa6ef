// HGRN's bf16 kernels (cuda::hgrn_*_bf16 in kernels/cuda/hgrn_scan.cu: bf16 x, g, o, dout, dx, dg;
// f32 h0, hT, dhT, dh0 and fp32 state) against the CPU f32 kernels of the same tier on the same
// bf16-rounded x, g and do (h0 and dhT f32, the kernels' own dtype): o, hT, dx, dg, dh0 compared
// separately by name (relative RMS). D = 1000 with B = 2 (both tiers; few channel tiles: the
// three-pass chunk forward) and B = 5 (the chunk tier's one-pass forward), T in {1, 65, 2049},
// strong decay exp(g) in [0.007, 0.37] and weak decay in [0.95, 0.999], h0 / dhT given and not;
// then the bf16 kernels against the f32 GPU kernels on the same values, and the autograd op hgrn()
// on bf16 CUDA Vars. Both ways the kernels read bf16 are covered: channel pairs (even D, aligned
// pointers: D = 1000, 100, 70) and one channel a thread (odd D = 999, and inputs one element
// past a 4-byte boundary).
//
// Tolerances. The kernels do the f32 kernels' arithmetic on the values the CPU reads; what differs
// is one rounding of each bf16 output (8 significant bits: relative error at most 2^-8 = 3.9e-3,
// about 1.7e-3 relative RMS), and for dg a second one (the three-pass backward computes it from
// the rounded dx; the one-pass backward, given o, from the rounded h_{t-1} = o_{t-1}):
//   kBf16Tol  = 1e-2  o, dx, dg (4x above dg's ~2.4e-3; a wrong step or index is O(1))
//   kStateTol = 1e-4  hT, dh0: f32 outputs of f32 arithmetic, never rounded (test_hgrn.cpp holds
//                     the f32 kernels to 2e-5 / 5e-5; 2049 weakly decaying steps)
// and the error is flat in T: at T = 2049 within kGrowth times that at T = 65 plus kGrowthFloor
// for o, dx and dg (a state rounded to bf16 at every step would add an error growing with the
// ~1 / (1 - exp(g)) steps it remembers).
#include "tests/cuda/cuda_test_helpers.h"
#ifdef HLA_WITH_CUDA
#include "autograd/primitives.h"
#include "autograd/recurrences.h"
#include "autograd/var.h"
#include "kernels/cuda/recurrence_cuda.h"
#include "kernels/recurrence.h"

using namespace hla;
using namespace hla::cuda_test;

namespace {

constexpr double kBf16Tol = 1e-2;
constexpr double kStateTol = 1e-4;
constexpr double kGrowth = 2.0;
constexpr double kGrowthFloor = 5e-4;

enum class Tier { Recurrent, Chunk };

// The value of t after rounding to bf16, as f32.
Tensor bf16_rounded(const Tensor& t) {
  return t.to(DType::bf16).to(DType::f32);
}

// One problem on the CPU in f32: x, g, do bf16-valued; h0, dhT f32 or undefined.
struct Case {
  Tensor x, g, h0, dout, dhT;
};

// Log gates: strong decay exp(g) in [0.007, 0.37], weak decay in [0.95, 0.999] (test_hgrn.cpp's).
Tensor gates(const Shape& shape, bool strong, Generator& gen) {
  return strong ? Tensor::rand(shape, gen, DType::f32, -5.0, -1.0)
                : Tensor::rand(shape, gen, DType::f32, -0.05, -0.001);
}

Case make_case(int64_t B, int64_t T, int64_t D, bool strong, bool with_states, Generator& gen) {
  Case c;
  c.x = bf16_rounded(Tensor::randn({B, T, D}, gen));
  c.g = bf16_rounded(gates({B, T, D}, strong, gen));
  c.dout = bf16_rounded(Tensor::randn({B, T, D}, gen));
  if (with_states) {
    c.h0 = Tensor::randn({B, D}, gen);
    c.dhT = Tensor::randn({B, D}, gen);
  }
  return c;
}

// o, hT, dx, dg, dh0 as f32 CPU tensors (dh0 undefined without states).
using Results = std::vector<Tensor>;
const char* const kNames[] = {"o", "hT", "dx", "dg", "dh0"};
bool is_state(size_t i) {
  return i == 1 || i == 4;
}

// Forward and backward of one f32 tier: on the CPU, or on CUDA (the f32 GPU kernels).
Results run_f32(const Case& c_in, Tier tier, Device dev) {
  auto on = [&](const Tensor& t) { return t.defined() ? t.to(dev) : Tensor(); };
  const Case c{on(c_in.x), on(c_in.g), on(c_in.h0), on(c_in.dout), on(c_in.dhT)};
  const int64_t B = c.x.size(0), T = c.x.size(1), D = c.x.size(2);
  kernels::HgrnArgs<float> a;
  a.d = {B, T, D};
  a.x = c.x.data<float>();
  a.g = c.g.data<float>();
  a.h0 = ptr_or_null<float>(c.h0);
  Tensor o = Tensor::empty({B, T, D}, DType::f32, dev), hT = Tensor::empty({B, D}, DType::f32, dev);
  Tensor dx = Tensor::empty({B, T, D}, DType::f32, dev);
  Tensor dg = Tensor::empty({B, T, D}, DType::f32, dev);
  Tensor dh0 = c.h0.defined() ? Tensor::empty({B, D}, DType::f32, dev) : Tensor();
  kernels::HgrnGrad<float> gr;
  gr.dout = c.dout.data<float>();
  gr.dhT = ptr_or_null<float>(c.dhT);
  gr.dx = dx.data<float>();
  gr.dg = dg.data<float>();
  gr.dh0 = mut_or_null<float>(dh0);
  const kernels::HgrnOut<float> out{o.data<float>(), hT.data<float>()};
  const bool chunk = tier == Tier::Chunk;
  if (dev == Device::CUDA) {
    chunk ? cuda::hgrn_chunk_forward<float>(a, out) : cuda::hgrn_recurrent_forward<float>(a, out);
    chunk ? cuda::hgrn_chunk_backward<float>(a, gr) : cuda::hgrn_recurrent_backward<float>(a, gr);
  } else {
    chunk ? kernels::hgrn_chunk_forward<float>(a, out)
          : kernels::hgrn_recurrent_forward<float>(a, out);
    chunk ? kernels::hgrn_chunk_backward<float>(a, gr)
          : kernels::hgrn_recurrent_backward<float>(a, gr);
  }
  Results res{o, hT, dx, dg, dh0};
  for (Tensor& t : res)
    if (t.defined()) t = t.to(Device::CPU);
  return res;
}

// t's values as bf16 on the device, starting one element past a 4-byte boundary (the element
// before is padding): a pointer the kernels cannot read as channel pairs.
Tensor bf16_after_padding(const Tensor& t) {
  std::vector<double> v = vals(t);
  v.insert(v.begin(), 0.0);
  return Tensor::from_values(v, {t.numel() + 1}, DType::bf16).to(Device::CUDA);
}

// The same through the bf16 kernels: x, g, do converted to bf16 on the device (exact: they are
// bf16 values), h0 and dhT as f32. misaligned: x, g and do start one element past a 4-byte
// boundary (the kernels then run one channel a thread whatever D).
Results run_bf16(const Case& c_cpu, Tier tier, bool misaligned = false, bool give_o = true) {
  const Device dev = Device::CUDA;
  auto bf = [&](const Tensor& t) {
    return misaligned ? bf16_after_padding(t) : t.to(dev).to(DType::bf16);
  };
  auto at = [&](const Tensor& t) { return t.data<bf16>() + (misaligned ? 1 : 0); };
  auto f32 = [&](const Tensor& t) { return t.defined() ? t.to(dev) : Tensor(); };
  const Tensor x = bf(c_cpu.x), g = bf(c_cpu.g), dout = bf(c_cpu.dout);
  const Tensor h0 = f32(c_cpu.h0), dhT = f32(c_cpu.dhT);
  const int64_t B = c_cpu.x.size(0), T = c_cpu.x.size(1), D = c_cpu.x.size(2);
  cuda::HgrnBf16Args a;
  a.d = {B, T, D};
  a.x = at(x);
  a.g = at(g);
  a.h0 = ptr_or_null<float>(h0);
  Tensor o = Tensor::empty({B, T, D}, DType::bf16, dev);
  Tensor hT = Tensor::empty({B, D}, DType::f32, dev);
  Tensor dx = Tensor::empty({B, T, D}, DType::bf16, dev);
  Tensor dg = Tensor::empty({B, T, D}, DType::bf16, dev);
  Tensor dh0 = h0.defined() ? Tensor::empty({B, D}, DType::f32, dev) : Tensor();
  cuda::HgrnBf16Grad gr;
  if (give_o) gr.o = o.data<bf16>();
  gr.dout = at(dout);
  gr.dhT = ptr_or_null<float>(dhT);
  gr.dx = dx.data<bf16>();
  gr.dg = dg.data<bf16>();
  gr.dh0 = mut_or_null<float>(dh0);
  const cuda::HgrnBf16Out out{o.data<bf16>(), hT.data<float>()};
  if (tier == Tier::Chunk) {
    cuda::hgrn_chunk_forward_bf16(a, out);
    cuda::hgrn_chunk_backward_bf16(a, gr);
  } else {
    cuda::hgrn_recurrent_forward_bf16(a, out);
    cuda::hgrn_recurrent_backward_bf16(a, gr);
  }
  Results res{o, hT, dx, dg, dh0};
  for (Tensor& t : res)
    if (t.defined()) t = t.to(Device::CPU).to(DType::f32);
  return res;
}

// Compares every defined result by name; returns the relative RMS errors (0 where undefined).
std::vector<double> require_close_all(const Results& ref, const Results& out) {
  std::vector<double> errors(ref.size(), 0.0);
  for (size_t i = 0; i < ref.size(); ++i) {
    REQUIRE(ref[i].defined() == out[i].defined());
    if (!ref[i].defined()) continue;
    const std::vector<double> r = vals(ref[i]), o = vals(out[i]);
    REQUIRE_CLOSE(kNames[i], r, o, is_state(i) ? kStateTol : kBf16Tol);
    errors[i] = hla::test::close_report(r, o).rel_rms;
  }
  return errors;
}

}  // namespace

TEST_CASE("cuda hgrn bf16 kernels match the CPU f32 tiers on bf16 inputs", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(81);
  for (int64_t D : {1000, 999})  // channel pairs; one channel a thread (odd D: strong decay only)
    for (int64_t B : {2, 5})     // 64 channel tiles (three-pass forward), 160 (one-pass)
      for (bool strong : {true, false})
        for (bool with_states : {true, false})
          for (Tier tier : {Tier::Recurrent, Tier::Chunk})
            for (bool give_o : {true, false}) {  // B = 5: the one-pass backward or the three-pass
              if (B == 5 && tier == Tier::Recurrent)
                continue;  // the width matters to the chunk tier
              if (D % 2 == 1 && !strong) continue;
              if (!give_o && !(B == 5 && tier == Tier::Chunk)) continue;  // o unread there
              std::vector<double> at_65;                                  // the errors at T = 65
              for (int64_t T : {1, 65, 2049}) {
                INFO((tier == Tier::Chunk ? "chunk" : "recurrent")
                     << " B,T,D " << B << "," << T << "," << D << (strong ? " strong" : " weak")
                     << " decay, h0/dhT " << with_states << ", o given " << give_o);
                const Case c = make_case(B, T, D, strong, with_states, gen);
                const std::vector<double> errors = require_close_all(
                    run_f32(c, tier, Device::CPU), run_bf16(c, tier, false, give_o));
                if (T == 65) at_65 = errors;
                if (T != 2049) continue;
                for (size_t i = 0; i < errors.size(); ++i) {
                  if (is_state(i)) continue;
                  INFO(kNames[i] << " rel_rms " << errors[i] << " at T=2049, " << at_65[i]
                                 << " at T=65");
                  REQUIRE(errors[i] <= kGrowth * at_65[i] + kGrowthFloor);
                }
              }
            }
}

// The bf16 kernels are the f32 kernels with bf16 loads and stores: on the same values hT and dh0
// agree with the f32 GPU kernels' to f32 rounding, and o and dx with their results rounded to bf16
// (a last-ulp difference of f32 would flip a rounding in about 1 element of 2^16: far below 1e-4).
// dg is computed from the rounded dx or o, so it is held to the bf16 tolerance.
TEST_CASE("cuda hgrn bf16 kernels compute what the f32 kernels compute", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(82);
  struct Shape3 {
    int64_t B, T, D;
    bool misaligned;
  };
  // pairs (one-pass and three-pass forward), then one channel a thread: odd D, misaligned inputs
  for (const Shape3& s : {Shape3{5, 300, 1000, false}, Shape3{1, 300, 100, false},
                          Shape3{5, 300, 999, false}, Shape3{5, 300, 1000, true}})
    for (Tier tier : {Tier::Recurrent, Tier::Chunk}) {
      INFO((tier == Tier::Chunk ? "chunk" : "recurrent")
           << " B,T,D " << s.B << "," << s.T << "," << s.D << " misaligned " << s.misaligned);
      const Case c = make_case(s.B, s.T, s.D, false, true, gen);
      const Results f32 = run_f32(c, tier, Device::CUDA), bf = run_bf16(c, tier, s.misaligned);
      REQUIRE_CLOSE("o", vals(bf16_rounded(f32[0])), vals(bf[0]), 1e-4);
      REQUIRE_CLOSE("hT", vals(f32[1]), vals(bf[1]), 1e-6);
      REQUIRE_CLOSE("dx", vals(bf16_rounded(f32[2])), vals(bf[2]), 1e-4);
      REQUIRE_CLOSE("dg", vals(f32[3]), vals(bf[3]), kBf16Tol);
      REQUIRE_CLOSE("dh0", vals(f32[4]), vals(bf[4]), 1e-6);
    }
}

TEST_CASE("cuda hgrn autograd op on bf16 Vars takes the bf16 kernels", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(83);
  for (int64_t T : {40, 150})  // Impl::Auto: recurrent for T <= 64, chunked above
    for (Impl impl : {Impl::Auto, Impl::Recurrent, Impl::Chunk})
      for (bool with_h0 : {true, false}) {
        INFO("T " << T << " impl " << impl_name(impl) << " h0 " << with_h0);
        const int64_t B = 2, D = 70;
        // bf16-valued, h0 too: the op takes one dtype for all its inputs
        const Tensor x = bf16_rounded(Tensor::randn({B, T, D}, gen));
        const Tensor g = bf16_rounded(gates({B, T, D}, false, gen));
        const Tensor h0 = bf16_rounded(Tensor::randn({B, D}, gen));
        const Tensor wo = bf16_rounded(Tensor::randn({B, T, D}, gen));
        const Tensor wh = bf16_rounded(Tensor::randn({B, D}, gen));
        // f32 on the CPU, bf16 on CUDA: o, hT, dx, dg, [dh0]
        std::vector<std::vector<Tensor>> res;
        for (bool on_gpu : {false, true}) {
          auto put = [&](const Tensor& t) {
            return on_gpu ? t.to(Device::CUDA).to(DType::bf16) : t;
          };
          Var vx(put(x), true), vg(put(g), true);
          Var vh0 = with_h0 ? Var(put(h0), true) : Var();
          const RecurrenceResult r = hgrn(vx, vg, vh0, impl);
          REQUIRE(r.o.dtype() == (on_gpu ? DType::bf16 : DType::f32));
          REQUIRE(r.hT.dtype() == r.o.dtype());
          // The loss reads o and hT, so the backward gets both dout and dhT.
          const Var loss = add(sum(mul(r.o, Var(put(wo)))), sum(mul(r.hT, Var(put(wh)))));
          loss.backward();
          std::vector<Tensor> row{r.o.data(), r.hT.data(), vx.grad(), vg.grad()};
          if (with_h0) row.push_back(vh0.grad());
          for (Tensor& t : row) {
            REQUIRE(t.dtype() == (on_gpu ? DType::bf16 : DType::f32));
            t = t.to(Device::CPU).to(DType::f32);
          }
          res.push_back(row);
        }
        // hT and dh0 leave the op in bf16 (the inputs' dtype): one rounding, as o
        for (size_t i = 0; i < res[0].size(); ++i)
          REQUIRE_CLOSE(kNames[i], vals(res[0][i]), vals(res[1][i]), kBf16Tol);
      }

  // the op's o is the bf16 kernel's, bit for bit (Auto and Chunk alike at T = 150)
  const int64_t B = 2, T = 150, D = 70;
  Case c = make_case(B, T, D, true, true, gen);
  c.h0 = bf16_rounded(c.h0);
  const Tensor kernel_o = run_bf16(c, Tier::Chunk)[0];
  auto gpu_bf16 = [](const Tensor& t) { return Var(t.to(Device::CUDA).to(DType::bf16)); };
  for (Impl impl : {Impl::Auto, Impl::Chunk}) {
    const Tensor op_o = hgrn(gpu_bf16(c.x), gpu_bf16(c.g), gpu_bf16(c.h0), impl).o.data();
    REQUIRE_CLOSE("o op vs kernel", vals(kernel_o), vals(op_o.to(Device::CPU).to(DType::f32)), 0.0);
  }
}
#endif
