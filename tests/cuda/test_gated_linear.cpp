// The recurrent gated linear kernel on CUDA (GLA, simple GLA, RetNet, plain linear attention)
// against the CPU recurrent kernel: o, hT, dq, dk, dv, dg, dh0 compared separately by name, with
// fla's one-scalar trick (random do and dhT), ragged T (1, 63, 130: across the checkpoint
// interval of 64), K = 60, V = 33. And the autograd op gla() on CUDA Vars against the CPU.
#include "tests/cuda/cuda_test_helpers.h"
#include "tests/cuda/gated_linear_cases.h"
#ifdef HLA_WITH_CUDA
#include "autograd/recurrences.h"
#include "autograd/var.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/recurrence_cuda.h"
#include "kernels/recurrence.h"

using namespace hla;
using namespace hla::cuda_test;
using kernels::GateKind;

namespace {

// f32 gradients sum K*V products per step over T steps in another order than Eigen: 5e-5.
double grad_tol(DType dt) { return dt == DType::f64 ? 1e-10 : 5e-5; }
double out_tol(DType dt) { return dt == DType::f64 ? 1e-10 : kF32; }

// Runs forward and backward of the recurrent tier on `dev`; returns o, hT, dq, dk, dv, dg, dh0.
template <class S>
std::vector<Tensor> run_tier(const Case& c_in, GateKind gate, double scale, Device dev) {
  auto on = [&](const Tensor& t) { return t.defined() ? t.to(dev) : Tensor(); };
  const Case c{on(c_in.q), on(c_in.k), on(c_in.v), on(c_in.g), on(c_in.h0), on(c_in.dout), on(c_in.dhT)};
  const DType dt = c.q.dtype();
  const int64_t B = c.q.size(0), T = c.q.size(1), H = c.q.size(2), K = c.q.size(3), V = c.v.size(3);
  const kernels::GatedLinearArgs<S> a = args_of<S>(c, gate, scale);
  Tensor o = Tensor::empty({B, T, H, V}, dt, dev), hT = Tensor::empty({B, H, K, V}, dt, dev);
  Tensor dq = Tensor::empty(c.q.shape(), dt, dev), dk = Tensor::empty(c.k.shape(), dt, dev);
  Tensor dv = Tensor::empty(c.v.shape(), dt, dev);
  Tensor dg = c.g.defined() ? Tensor::empty(c.g.shape(), dt, dev) : Tensor();
  Tensor dh0 = c.h0.defined() ? Tensor::empty(c.h0.shape(), dt, dev) : Tensor();
  kernels::GatedLinearGrad<S> gr;
  gr.dout = c.dout.data<S>();
  gr.dhT = ptr_or_null<S>(c.dhT);
  gr.dq = dq.data<S>();
  gr.dk = dk.data<S>();
  gr.dv = dv.data<S>();
  gr.dg = mut_or_null<S>(dg);
  gr.dh0 = mut_or_null<S>(dh0);
  if (dev == Device::CUDA) {
    cuda::gated_linear_recurrent_forward<S>(a, {o.data<S>(), hT.data<S>()});
    cuda::gated_linear_recurrent_backward<S>(a, gr);
  } else {
    kernels::gated_linear_recurrent_forward<S>(a, {o.data<S>(), hT.data<S>()});
    kernels::gated_linear_recurrent_backward<S>(a, gr);
  }
  return {o, hT, dq, dk, dv, dg, dh0};
}

}  // namespace

TEST_CASE("cuda gated linear recurrent kernel matches the CPU recurrent tier", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(51);
  const char* names[] = {"o", "hT", "dq", "dk", "dv", "dg", "dh0"};
  for (DType dt : {DType::f32, DType::f64})
    for (GateKind gate : {GateKind::PerKey, GateKind::ScalarPerHead, GateKind::FixedPerHead, GateKind::None})
      for (int64_t T : {1, 63, 130})
        for (bool with_state : {true, false}) {
          INFO(dtype_name(dt) << " gate " << int(gate) << " T " << T << " h0/dhT " << with_state);
          const int64_t B = 2, H = 3, K = 60, V = 33;
          Case c;
          c.q = Tensor::randn({B, T, H, K}, gen, dt);
          c.k = Tensor::randn({B, T, H, K}, gen, dt);
          c.v = Tensor::randn({B, T, H, V}, gen, dt);
          // log decays in [-0.5, -0.01): three orders of decay strength across keys and steps
          if (gate == GateKind::PerKey) c.g = Tensor::rand({B, T, H, K}, gen, dt, -0.5, -0.01);
          if (gate == GateKind::ScalarPerHead) c.g = Tensor::rand({B, T, H}, gen, dt, -0.5, -0.01);
          if (with_state) {
            c.h0 = Tensor::randn({B, H, K, V}, gen, dt);
            c.dhT = Tensor::randn({B, H, K, V}, gen, dt);
          }
          c.dout = Tensor::randn({B, T, H, V}, gen, dt);
          const double scale = 1.0 / std::sqrt(double(K));
          std::vector<Tensor> ref, out;
          if (dt == DType::f32) {
            ref = run_tier<float>(c, gate, scale, Device::CPU);
            out = run_tier<float>(c, gate, scale, Device::CUDA);
          } else {
            ref = run_tier<double>(c, gate, scale, Device::CPU);
            out = run_tier<double>(c, gate, scale, Device::CUDA);
          }
          for (size_t i = 0; i < ref.size(); ++i) {
            if (!ref[i].defined()) continue;
            REQUIRE_CLOSE(names[i], vals(ref[i]), vals(out[i]), i < 2 ? out_tol(dt) : grad_tol(dt));
          }
        }
}

TEST_CASE("cuda gla / simple_gla / retention autograd ops match the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(52);
  const int64_t B = 2, T = 70, H = 2, K = 16, V = 24;
  for (DType dt : {DType::f32, DType::f64}) {
    const Tensor q = Tensor::randn({B, T, H, K}, gen, dt), k = Tensor::randn({B, T, H, K}, gen, dt);
    const Tensor v = Tensor::randn({B, T, H, V}, gen, dt), h0 = Tensor::randn({B, H, K, V}, gen, dt);
    const Tensor gk = Tensor::rand({B, T, H, K}, gen, dt, -0.3, -0.01);
    const Tensor gs = Tensor::rand({B, T, H}, gen, dt, -0.3, -0.01);
    const Tensor dout = Tensor::randn({B, T, H, V}, gen, dt);
    for (int which = 0; which < 3; ++which) {
      INFO(dtype_name(dt) << " op " << which);
      std::vector<std::vector<Tensor>> res;
      for (Device dev : {Device::CPU, Device::CUDA}) {
        Var vq(q.to(dev), true), vk(k.to(dev), true), vv(v.to(dev), true), vh0(h0.to(dev), true);
        Var vg(which == 0 ? gk.to(dev) : gs.to(dev), true);
        RecurrenceOptions opt;
        opt.impl = Impl::Recurrent;
        RecurrenceResult r = which == 0   ? gla(vq, vk, vv, vg, vh0, opt)
                             : which == 1 ? simple_gla(vq, vk, vv, vg, vh0, opt)
                                          : retention(vq, vk, vv, vh0, opt);
        REQUIRE(r.o.device() == dev);
        r.o.backward(dout.to(dev));
        std::vector<Tensor> row{r.o.data(), r.hT.data(), vq.grad(), vk.grad(), vv.grad(), vh0.grad()};
        if (which < 2) row.push_back(vg.grad());
        res.push_back(row);
      }
      const char* names[] = {"o", "hT", "dq", "dk", "dv", "dh0", "dg"};
      for (size_t i = 0; i < res[0].size(); ++i)
        REQUIRE_CLOSE(names[i], vals(res[0][i]), vals(res[1][i]), i < 2 ? out_tol(dt) : grad_tol(dt));
    }
  }
  // Inputs on two devices: a clear error.
  Var q(gpu(Tensor::randn({1, 4, 1, 8}, gen)), true), v(gpu(Tensor::randn({1, 4, 1, 8}, gen)));
  REQUIRE_THROWS_AS(retention(q, Var(Tensor::randn({1, 4, 1, 8}, gen)), v), Error);
}
#endif
