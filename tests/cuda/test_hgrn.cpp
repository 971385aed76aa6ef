// HGRN's recurrence on CUDA (kernels/cuda/hgrn_scan.cu) against the CPU tiers: the recurrent and
// chunked GPU kernels each against the CPU kernel of the same tier, o, hT, dx, dg, dh0 compared
// separately by name, with random do and dhT. Ragged T (1, 63, 64, 65, 130, 200, 1000, 2049: a
// single step, partial last chunks, and the chunk lengths 16 and 64 of the chunk-length rule),
// D = 100, 37 and 1000 (not multiples of 32), strong and weak decay, h0 / dhT given and not; few
// channel tiles (the three-pass forward and backward) and many (the one-pass forward, and the
// one-pass backward when the forward's o is given, the three-pass one when not); a state
// carried across a split (forward and backward chained through hT -> h0 and dh0 -> dhT); and the
// autograd op hgrn() on CUDA Vars against the CPU for every tier.
//
// Tolerances (relative RMS): f64 1e-10; f32 2e-5 for o and hT, 5e-5 for the gradients (GPU and CPU
// exp differ in the last ulp; over 2049 weakly decaying steps a sum of ~1000 terms, and dg
// multiplies two such sums).
#include "tests/cuda/cuda_test_helpers.h"
#ifdef HLA_WITH_CUDA
#include "autograd/primitives.h"
#include "autograd/recurrences.h"
#include "autograd/var.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/recurrence_cuda.h"
#include "kernels/recurrence.h"

using namespace hla;
using namespace hla::cuda_test;

namespace {

double out_tol(DType dt) {
  return dt == DType::f64 ? 1e-10 : 2e-5;
}
double grad_tol(DType dt) {
  return dt == DType::f64 ? 1e-10 : 5e-5;
}

enum class Tier { Recurrent, Chunk };

struct Case {
  Tensor x, g, h0, dout, dhT;  // h0, dhT may be undefined
};

// Forward and backward of one tier on `dev`; returns o, hT, dx, dg, dh0 (on the CPU). give_o: the
// backward gets the forward's o (the CUDA chunk tier's one-pass backward reads h_{t-1} from it).
template <class S>
std::vector<Tensor> run_tier(const Case& c_in, Tier tier, Device dev, bool give_o = true) {
  auto on = [&](const Tensor& t) { return t.defined() ? t.to(dev) : Tensor(); };
  const Case c{on(c_in.x), on(c_in.g), on(c_in.h0), on(c_in.dout), on(c_in.dhT)};
  const DType dt = c.x.dtype();
  const int64_t B = c.x.size(0), T = c.x.size(1), D = c.x.size(2);
  kernels::HgrnArgs<S> a;
  a.d = {B, T, D};
  a.x = c.x.data<S>();
  a.g = c.g.data<S>();
  a.h0 = ptr_or_null<S>(c.h0);
  Tensor o = Tensor::empty({B, T, D}, dt, dev), hT = Tensor::empty({B, D}, dt, dev);
  Tensor dx = Tensor::empty({B, T, D}, dt, dev), dg = Tensor::empty({B, T, D}, dt, dev);
  Tensor dh0 = c.h0.defined() ? Tensor::empty({B, D}, dt, dev) : Tensor();
  kernels::HgrnGrad<S> gr;
  if (give_o) gr.o = o.data<S>();
  gr.dout = c.dout.data<S>();
  gr.dhT = ptr_or_null<S>(c.dhT);
  gr.dx = dx.data<S>();
  gr.dg = dg.data<S>();
  gr.dh0 = mut_or_null<S>(dh0);
  const kernels::HgrnOut<S> out{o.data<S>(), hT.data<S>()};
  if (dev == Device::CUDA) {
    if (tier == Tier::Chunk) {
      cuda::hgrn_chunk_forward<S>(a, out);
      cuda::hgrn_chunk_backward<S>(a, gr);
    } else {
      cuda::hgrn_recurrent_forward<S>(a, out);
      cuda::hgrn_recurrent_backward<S>(a, gr);
    }
  } else {
    if (tier == Tier::Chunk) {
      kernels::hgrn_chunk_forward<S>(a, out);
      kernels::hgrn_chunk_backward<S>(a, gr);
    } else {
      kernels::hgrn_recurrent_forward<S>(a, out);
      kernels::hgrn_recurrent_backward<S>(a, gr);
    }
  }
  std::vector<Tensor> res{o, hT, dx, dg, dh0};
  for (Tensor& t : res)
    if (t.defined()) t = t.to(Device::CPU);
  return res;
}

std::vector<Tensor> run_any(const Case& c, Tier tier, Device dev, bool give_o = true) {
  return c.x.dtype() == DType::f64 ? run_tier<double>(c, tier, dev, give_o)
                                   : run_tier<float>(c, tier, dev, give_o);
}

// Log gates: strong decay exp(g) in [0.007, 0.37], weak decay in [0.95, 0.999].
Tensor gates(const Shape& shape, bool strong, Generator& gen, DType dt) {
  return strong ? Tensor::rand(shape, gen, dt, -5.0, -1.0)
                : Tensor::rand(shape, gen, dt, -0.05, -0.001);
}

Case make_case(int64_t B, int64_t T, int64_t D, bool strong, bool with_state, Generator& gen,
               DType dt) {
  Case c;
  c.x = Tensor::randn({B, T, D}, gen, dt);
  c.g = gates({B, T, D}, strong, gen, dt);
  c.dout = Tensor::randn({B, T, D}, gen, dt);
  if (with_state) {
    c.h0 = Tensor::randn({B, D}, gen, dt);
    c.dhT = Tensor::randn({B, D}, gen, dt);
  }
  return c;
}

const char* kNames[] = {"o", "hT", "dx", "dg", "dh0"};

void require_all_close(const std::vector<Tensor>& ref, const std::vector<Tensor>& out, DType dt) {
  for (size_t i = 0; i < ref.size(); ++i) {
    REQUIRE(ref[i].defined() == out[i].defined());
    if (!ref[i].defined()) continue;
    REQUIRE_CLOSE(kNames[i], vals(ref[i]), vals(out[i]), i < 2 ? out_tol(dt) : grad_tol(dt));
  }
}

}  // namespace

TEST_CASE("cuda hgrn recurrent and chunk kernels match the CPU tiers", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(61);
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t T : {1, 63, 64, 65, 130, 200, 1000, 2049})
      for (bool strong : {true, false})
        for (bool with_state : {true, false}) {
          const int64_t B = 2, D = T > 200 ? 37 : 100;
          const Case c = make_case(B, T, D, strong, with_state, gen, dt);
          for (Tier tier : {Tier::Recurrent, Tier::Chunk}) {
            INFO(dtype_name(dt) << (tier == Tier::Chunk ? " chunk" : " recurrent") << " T " << T
                                << " D " << D << (strong ? " strong" : " weak") << " decay, h0/dhT "
                                << with_state);
            require_all_close(run_any(c, tier, Device::CPU), run_any(c, tier, Device::CUDA), dt);
          }
        }
}

TEST_CASE("cuda hgrn chunk kernel: one B=1, D=1 channel and a wide row", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(62);
  for (DType dt : {DType::f32, DType::f64}) {
    INFO(dtype_name(dt));
    const Case narrow = make_case(1, 300, 1, false, true, gen, dt);
    require_all_close(run_any(narrow, Tier::Recurrent, Device::CPU),
                      run_any(narrow, Tier::Chunk, Device::CUDA), dt);
    const Case wide = make_case(3, 77, 1030, true, true, gen, dt);
    require_all_close(run_any(wide, Tier::Chunk, Device::CPU),
                      run_any(wide, Tier::Chunk, Device::CUDA), dt);
  }
}

// B * ceil(D / 32) = 5 * 32 = 160 channel tiles: at least one per multiprocessor, so the chunk
// forward takes its one-pass form (windows of 256 steps), and so does the backward given o (the
// three-pass backward without it): T = 1, a partial window, exactly one, one plus a step, and
// several.
TEST_CASE("cuda hgrn chunk kernel, one-pass forward and backward: many channel tiles", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(65);
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t T : {1, 100, 256, 257, 700})
      for (bool strong : {true, false})
        for (bool with_state : {true, false}) {
          INFO(dtype_name(dt) << " T " << T << (strong ? " strong" : " weak") << " decay, h0/dhT "
                              << with_state);
          const Case c = make_case(5, T, 1000, strong, with_state, gen, dt);
          const std::vector<Tensor> ref = run_any(c, Tier::Chunk, Device::CPU);
          for (bool give_o : {true, false}) {
            INFO((give_o ? "one-pass" : "three-pass") << " backward");
            require_all_close(ref, run_any(c, Tier::Chunk, Device::CUDA, give_o), dt);
          }
        }
}

TEST_CASE("cuda hgrn state carry: T steps == T1 then T2, forward and backward", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(63);
  for (DType dt : {DType::f32, DType::f64})
    for (Tier tier : {Tier::Recurrent, Tier::Chunk})
      for (int64_t T1 : {1, 64, 97}) {
        INFO(dtype_name(dt) << (tier == Tier::Chunk ? " chunk" : " recurrent") << " T1 " << T1);
        const int64_t B = 2, T = 230, D = 45;
        const Case whole = make_case(B, T, D, false, true, gen, dt);
        const std::vector<Tensor> w = run_any(whole, tier, Device::CUDA);
        auto part = [&](const Tensor& t, int64_t a, int64_t b) {
          return t.slice(1, a, b).contiguous();
        };
        // Forward of the second half from the first half's hT; its dh0 is the first half's dhT.
        Case first{
            part(whole.x, 0, T1), part(whole.g, 0, T1), whole.h0, part(whole.dout, 0, T1), {}};
        const Tensor h_mid = run_any(first, tier, Device::CUDA)[1];
        const Case second{part(whole.x, T1, T), part(whole.g, T1, T), h_mid,
                          part(whole.dout, T1, T), whole.dhT};
        const std::vector<Tensor> s = run_any(second, tier, Device::CUDA);
        first.dhT = s[4];
        const std::vector<Tensor> f = run_any(first, tier, Device::CUDA);
        REQUIRE_CLOSE("o", vals(w[0]), vals(ops::concat({f[0], s[0]}, 1)), out_tol(dt));
        REQUIRE_CLOSE("hT", vals(w[1]), vals(s[1]), out_tol(dt));
        REQUIRE_CLOSE("dx", vals(w[2]), vals(ops::concat({f[2], s[2]}, 1)), grad_tol(dt));
        REQUIRE_CLOSE("dg", vals(w[3]), vals(ops::concat({f[3], s[3]}, 1)), grad_tol(dt));
        REQUIRE_CLOSE("dh0", vals(w[4]), vals(f[4]), grad_tol(dt));
      }
}

TEST_CASE("cuda hgrn autograd op matches the CPU for every tier", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(64);
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t T : {40, 150})  // Impl::Auto: recurrent for T <= 64, chunked above
      for (Impl impl : {Impl::Auto, Impl::Recurrent, Impl::Chunk})
        for (bool with_h0 : {true, false}) {
          INFO(dtype_name(dt) << " T " << T << " impl " << impl_name(impl) << " h0 " << with_h0);
          const int64_t B = 2, D = 70;
          const Tensor x = Tensor::randn({B, T, D}, gen, dt), h0 = Tensor::randn({B, D}, gen, dt);
          const Tensor g = gates({B, T, D}, false, gen, dt);
          const Tensor wo = Tensor::randn({B, T, D}, gen, dt), wh = Tensor::randn({B, D}, gen, dt);
          std::vector<std::vector<Tensor>> res;
          for (Device dev : {Device::CPU, Device::CUDA}) {
            Var vx(x.to(dev), true), vg(g.to(dev), true);
            Var vh0 = with_h0 ? Var(h0.to(dev), true) : Var();
            const RecurrenceResult r = hgrn(vx, vg, vh0, impl);
            REQUIRE(r.o.device() == dev);
            REQUIRE(r.hT.device() == dev);
            // The loss reads o and hT, so the backward gets both dout and dhT.
            const Var loss = add(sum(mul(r.o, Var(wo.to(dev)))), sum(mul(r.hT, Var(wh.to(dev)))));
            loss.backward();
            std::vector<Tensor> row{r.o.data(), r.hT.data(), vx.grad(), vg.grad()};
            if (with_h0) row.push_back(vh0.grad());
            res.push_back(row);
          }
          for (size_t i = 0; i < res[0].size(); ++i)
            REQUIRE_CLOSE(kNames[i], vals(res[0][i]), vals(res[1][i]),
                          i < 2 ? out_tol(dt) : grad_tol(dt));
        }
  // The reference tier is CPU-only; mixed devices are refused.
  Var x(gpu(Tensor::randn({1, 4, 8}, gen)), true),
      g(gpu(Tensor::rand({1, 4, 8}, gen, DType::f32, -1, -0.1)));
  REQUIRE_THROWS_WITH(hgrn(x, g, Var(), Impl::Reference), Catch::Contains("Device::CPU"));
  REQUIRE_THROWS_AS(hgrn(x, Var(Tensor::rand({1, 4, 8}, gen, DType::f32, -1, -0.1))), Error);
  REQUIRE_THROWS_AS(hgrn(x, g, Var(Tensor::randn({1, 8}, gen))), Error);
}
#endif
