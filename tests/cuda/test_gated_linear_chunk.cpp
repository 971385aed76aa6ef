// The chunked gated linear kernel on CUDA (GLA, simple GLA, RetNet, plain linear attention)
// against the CPU chunk tier and against the CUDA recurrent tier: o, hT, dq, dk, dv, dg, dh0
// compared separately by name (relative RMS), with fla's one-scalar trick (random do and dhT).
// Covers ragged T (1, 63, 64, 65, 130, 200: partial last chunks and chunk boundaries), H = 1,
// K != V, head sizes 64/64, 128/128, 32/48 and 60/33 (whole tiles of 32 and remainders), strong
// per-key decay logsigmoid(N(0,1)) (cumulative log decays of about -50 per chunk) and weak decay
// logsigmoid(N(4,1)) / 16, with and without h0 / hT / dhT / dh0. Then a state carried across a
// split (T1 steps, then T2 from the carried hT, the backward chained through dh0 -> dhT) against
// the whole sequence, and the autograd ops gla(), simple_gla() and retention() on CUDA against
// the CPU over a chunked segment (T = 130) continued by a recurrent one (T = 40).
#include "tests/cuda/cuda_test_helpers.h"
#include "tests/cuda/gated_linear_cases.h"
#ifdef HLA_WITH_CUDA
#include <cmath>

#include "autograd/recurrences.h"
#include "autograd/var.h"
#include "kernels/cuda/recurrence_cuda.h"
#include "kernels/recurrence.h"
#include "tests/helpers/sequences.h"

using namespace hla;
using namespace hla::cuda_test;
using kernels::GateKind;

namespace {

// f32: the GPU sums products over tiles of 32 keys / columns in another order than Eigen, and
// the dg scans and state passes add up to 200 steps: 1e-5 for outputs, 5e-5 for gradients.
double out_tol(DType dt) {
  return dt == DType::f64 ? 1e-10 : kF32;
}
double grad_tol(DType dt) {
  return dt == DType::f64 ? 1e-10 : 5e-5;
}

enum class Tier { Chunk, Recurrent };

Case make_case(const kernels::RecDims& d, GateKind gate, Decay decay, bool with_states, DType dt,
               Generator& gen) {
  Case c;
  c.q = Tensor::randn({d.B, d.T, d.H, d.K}, gen, dt);
  c.k = Tensor::randn({d.B, d.T, d.H, d.K}, gen, dt);
  c.v = Tensor::randn({d.B, d.T, d.H, d.V}, gen, dt);
  if (gate == GateKind::PerKey) c.g = log_gates({d.B, d.T, d.H, d.K}, gen, dt, decay);
  if (gate == GateKind::ScalarPerHead) c.g = log_gates({d.B, d.T, d.H}, gen, dt, decay);
  if (with_states) {
    c.h0 = Tensor::randn({d.B, d.H, d.K, d.V}, gen, dt);
    c.dhT = Tensor::randn({d.B, d.H, d.K, d.V}, gen, dt);
  }
  c.dout = Tensor::randn({d.B, d.T, d.H, d.V}, gen, dt);
  return c;
}

// Forward and backward of one tier on `dev`; returns o, hT, dq, dk, dv, dg, dh0 on the CPU
// (hT, dg, dh0 undefined where not wanted: hT and dh0 exactly when the case has states).
template <class S>
std::vector<Tensor> run_tier(const Case& c_in, GateKind gate, Device dev, Tier tier) {
  auto on = [&](const Tensor& t) { return t.defined() ? t.to(dev) : Tensor(); };
  const Case c{on(c_in.q),  on(c_in.k),    on(c_in.v),  on(c_in.g),
               on(c_in.h0), on(c_in.dout), on(c_in.dhT)};
  const DType dt = c.q.dtype();
  const int64_t B = c.q.size(0), T = c.q.size(1), H = c.q.size(2), K = c.q.size(3), V = c.v.size(3);
  const bool states = c.h0.defined();
  const kernels::GatedLinearArgs<S> a = args_of<S>(c, gate, 1.0 / std::sqrt(double(K)));
  Tensor o = Tensor::empty({B, T, H, V}, dt, dev);
  Tensor hT = states ? Tensor::empty({B, H, K, V}, dt, dev) : Tensor();
  Tensor dq = Tensor::empty(c.q.shape(), dt, dev), dk = Tensor::empty(c.k.shape(), dt, dev);
  Tensor dv = Tensor::empty(c.v.shape(), dt, dev);
  Tensor dg = c.g.defined() ? Tensor::empty(c.g.shape(), dt, dev) : Tensor();
  Tensor dh0 = states ? Tensor::empty(c.h0.shape(), dt, dev) : Tensor();
  kernels::GatedLinearGrad<S> gr;
  gr.dout = c.dout.data<S>();
  gr.dhT = ptr_or_null<S>(c.dhT);
  gr.dq = dq.data<S>();
  gr.dk = dk.data<S>();
  gr.dv = dv.data<S>();
  gr.dg = mut_or_null<S>(dg);
  gr.dh0 = mut_or_null<S>(dh0);
  const kernels::GatedLinearOut<S> out{o.data<S>(), mut_or_null<S>(hT)};
  if (dev == Device::CUDA && tier == Tier::Chunk) {
    cuda::gated_linear_chunk_forward<S>(a, out);
    cuda::gated_linear_chunk_backward<S>(a, gr);
  } else if (dev == Device::CUDA) {
    cuda::gated_linear_recurrent_forward<S>(a, out);
    cuda::gated_linear_recurrent_backward<S>(a, gr);
  } else if (tier == Tier::Chunk) {
    kernels::gated_linear_chunk_forward<S>(a, out);
    kernels::gated_linear_chunk_backward<S>(a, gr);
  } else {
    kernels::gated_linear_recurrent_forward<S>(a, out);
    kernels::gated_linear_recurrent_backward<S>(a, gr);
  }
  std::vector<Tensor> res{o, hT, dq, dk, dv, dg, dh0};
  for (Tensor& t : res)
    if (t.defined()) t = t.to(Device::CPU);
  return res;
}

std::vector<Tensor> run_tier(const Case& c, GateKind gate, Device dev, Tier tier) {
  return c.q.dtype() == DType::f64 ? run_tier<double>(c, gate, dev, tier)
                                   : run_tier<float>(c, gate, dev, tier);
}

const char* const kNames[] = {"o", "hT", "dq", "dk", "dv", "dg", "dh0"};

void require_close_all(const std::vector<Tensor>& ref, const std::vector<Tensor>& out, DType dt) {
  for (size_t i = 0; i < ref.size(); ++i) {
    REQUIRE(ref[i].defined() == out[i].defined());
    if (!ref[i].defined()) continue;
    REQUIRE_CLOSE(kNames[i], vals(ref[i]), vals(out[i]), i < 2 ? out_tol(dt) : grad_tol(dt));
  }
}

}  // namespace

TEST_CASE("cuda gated linear chunk kernel matches the CPU chunk tier and the cuda recurrent tier",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(61);
  struct Heads {
    int64_t B, H, K, V;
  };
  const Heads heads[] = {{2, 2, 64, 64}, {1, 1, 128, 128}, {2, 3, 32, 48}, {2, 1, 60, 33}};
  for (DType dt : {DType::f32, DType::f64})
    for (const GateCase& gc : kGateCases)
      for (const Heads& hd : heads)
        for (int64_t T : {1, 63, 64, 65, 130, 200})
          for (bool with_states : {true, false}) {
            INFO(dtype_name(dt) << " " << gate_name(gc.gate) << " " << gc.decay_name
                                << " B,T,H,K,V " << hd.B << "," << T << "," << hd.H << "," << hd.K
                                << "," << hd.V << " h0/dhT " << with_states);
            const Case c =
                make_case({hd.B, T, hd.H, hd.K, hd.V}, gc.gate, gc.decay, with_states, dt, gen);
            const std::vector<Tensor> out = run_tier(c, gc.gate, Device::CUDA, Tier::Chunk);
            {
              INFO("against the CPU chunk tier");
              require_close_all(run_tier(c, gc.gate, Device::CPU, Tier::Chunk), out, dt);
            }
            {
              INFO("against the cuda recurrent tier");
              require_close_all(run_tier(c, gc.gate, Device::CUDA, Tier::Recurrent), out, dt);
            }
          }
}

TEST_CASE("cuda gated linear chunk kernel: T1 steps then T2 from the carried state == T steps",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(62);
  for (DType dt : {DType::f32, DType::f64})
    for (GateKind gate :
         {GateKind::PerKey, GateKind::ScalarPerHead, GateKind::FixedPerHead, GateKind::None}) {
      INFO(dtype_name(dt) << " " << gate_name(gate));
      const int64_t B = 2, T1 = 100, T2 = 93, T = T1 + T2, H = 2, K = 40, V = 24;
      const Case full = make_case({B, T, H, K, V}, gate, Decay::Strong, true, dt, gen);
      auto part = [&](int64_t t0, int64_t t1) {
        auto steps = [&](const Tensor& x) { return x.narrow(1, t0, t1 - t0).contiguous(); };
        Case p = full;
        p.q = steps(full.q);
        p.k = steps(full.k);
        p.v = steps(full.v);
        p.dout = steps(full.dout);
        if (has_gate(gate)) p.g = steps(full.g);
        return p;
      };
      Case first = part(0, T1), second = part(T1, T);
      const std::vector<Tensor> whole = run_tier(full, gate, Device::CUDA, Tier::Chunk);
      second.h0 = run_tier(first, gate, Device::CUDA, Tier::Chunk)[1];  // the carried state
      const std::vector<Tensor> r2 = run_tier(second, gate, Device::CUDA, Tier::Chunk);
      first.dhT = r2[6];  // the carried state gradient
      const std::vector<Tensor> r1 = run_tier(first, gate, Device::CUDA, Tier::Chunk);

      // the split moves the chunk boundaries: only the summation order differs
      const double tol = dt == DType::f64 ? 1e-12 : grad_tol(dt);
      auto joined = [&](size_t i) { return hla::test::time_concat(vals(r1[i]), vals(r2[i]), B); };
      REQUIRE_CLOSE("o", vals(whole[0]), joined(0), tol);
      REQUIRE_CLOSE("hT", vals(whole[1]), vals(r2[1]), tol);
      REQUIRE_CLOSE("dq", vals(whole[2]), joined(2), tol);
      REQUIRE_CLOSE("dk", vals(whole[3]), joined(3), tol);
      REQUIRE_CLOSE("dv", vals(whole[4]), joined(4), tol);
      if (has_gate(gate)) REQUIRE_CLOSE("dg", vals(whole[5]), joined(5), tol);
      REQUIRE_CLOSE("dh0", vals(whole[6]), vals(r1[6]), tol);
    }
}

TEST_CASE("cuda gla / simple_gla / retention autograd ops run the chunk tier like the CPU",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(63);
  // a chunked segment (Auto: T1 > 64) continued from its hT by a recurrent one (Auto: T2 <= 64),
  // so the loss reaches the first segment through hT -> h0 as well
  const int64_t B = 2, T1 = 130, T2 = 40, H = 2, K = 32, V = 48;
  for (DType dt : {DType::f32, DType::f64})
    for (int which = 0; which < 3; ++which) {
      INFO(dtype_name(dt) << " op " << which);
      auto inputs = [&](int64_t T) {
        std::vector<Tensor> x{Tensor::randn({B, T, H, K}, gen, dt),
                              Tensor::randn({B, T, H, K}, gen, dt),
                              Tensor::randn({B, T, H, V}, gen, dt)};
        x.push_back(which == 0 ? log_gates({B, T, H, K}, gen, dt, Decay::Strong)
                               : log_gates({B, T, H}, gen, dt, Decay::Strong));
        return x;
      };
      const std::vector<Tensor> seg1 = inputs(T1), seg2 = inputs(T2);
      const Tensor h0 = Tensor::randn({B, H, K, V}, gen, dt);
      const Tensor dout1 = Tensor::randn({B, T1, H, V}, gen, dt),
                   dout2 = Tensor::randn({B, T2, H, V}, gen, dt);
      auto op = [&](const std::vector<Var>& x, const Var& state, Impl impl) {
        RecurrenceOptions opt;
        opt.impl = impl;
        return which == 0   ? gla(x[0], x[1], x[2], x[3], state, opt)
               : which == 1 ? simple_gla(x[0], x[1], x[2], x[3], state, opt)
                            : retention(x[0], x[1], x[2], state, opt);
      };
      std::vector<std::vector<Tensor>> res;
      for (Device dev : {Device::CPU, Device::CUDA}) {
        std::vector<Var> x1, x2;
        for (const Tensor& t : seg1) x1.emplace_back(t.to(dev), true);
        for (const Tensor& t : seg2) x2.emplace_back(t.to(dev), true);
        Var vh0(h0.to(dev), true);
        const RecurrenceResult r1 = op(x1, vh0, Impl::Auto);
        const RecurrenceResult r2 = op(x2, r1.hT, Impl::Auto);
        REQUIRE(r2.o.device() == dev);
        r1.o.backward(dout1.to(dev),
                      /*retain_graph=*/true);  // r2's backward passes r1's node again
        r2.o.backward(dout2.to(dev));
        std::vector<Tensor> row{r1.o.data(), r2.o.data(), r2.hT.data(), vh0.grad()};
        for (const std::vector<Var>* x : {&x1, &x2})
          for (size_t i = 0; i < (which < 2 ? 4u : 3u); ++i) row.push_back((*x)[i].grad());
        res.push_back(row);
      }
      const char* names[] = {"o1",  "o2",  "hT",  "dh0", "dq1", "dk1",
                             "dv1", "dg1", "dq2", "dk2", "dv2", "dg2"};
      const char* names_retention[] = {"o1",  "o2",  "hT",  "dh0", "dq1",
                                       "dk1", "dv1", "dq2", "dk2", "dv2"};
      for (size_t i = 0; i < res[0].size(); ++i)
        REQUIRE_CLOSE(which < 2 ? names[i] : names_retention[i], vals(res[0][i]), vals(res[1][i]),
                      i < 3 ? out_tol(dt) : grad_tol(dt));

      // Auto is the chunk tier at T = 130: the same numbers as asking for it
      std::vector<Var> x1;
      for (const Tensor& t : seg1) x1.emplace_back(gpu(t));
      const Tensor auto_o = op(x1, Var(gpu(h0)), Impl::Auto).o.data();
      const Tensor chunk_o = op(x1, Var(gpu(h0)), Impl::Chunk).o.data();
      REQUIRE_CLOSE("o auto vs chunk", vals(chunk_o), vals(auto_o), 0.0);
    }
  // The reference tier is the CPU's: a clear error, no silent fallback.
  Var q(gpu(Tensor::randn({1, 4, 1, 8}, gen)), true), v(gpu(Tensor::randn({1, 4, 1, 8}, gen)));
  RecurrenceOptions reference;
  reference.impl = Impl::Reference;
  REQUIRE_THROWS_WITH(retention(q, q, v, Var(), reference),
                      Catch::Contains("the reference tier runs on the CPU only"));
}
#endif
