// The bf16 tensor-core chunked gated linear kernels (cuda::gated_linear_mma_*: GLA, simple GLA,
// RetNet, plain linear attention) against the CPU f32 chunk tier on the same bf16-rounded q, k, v
// and do (f32 gates, h0, dhT: the kernels' own dtypes): o, hT, dq, dk, dv, dg, dh0 compared
// separately by name (relative RMS). Covers every gate kind, strong per-key decay
// logsigmoid(N(0,1)) and weak decay logsigmoid(N(4,1)) / 16, T in {65, 130, 1000, 2048} (partial
// last chunks and long sequences: the error must not grow with T, since the state and every sum
// are fp32), H = 1 and 2, head sizes K/V = 64/64, 128/128, 64/128 and 128/256, with and without
// h0 / hT / dhT / dh0; then a state carried across a split, the unsupported head sizes and
// misaligned rows, and the autograd ops on bf16 CUDA Vars.
//
// Tolerances: bf16 operands (inputs exact, exp-scaled inputs, scores and the chunk-entering
// states rounded to 8 significant bits) and bf16 outputs, fp32 accumulation:
//   kOutTol  = 1e-2  o, hT
//   kGradTol = 2e-2  dq, dk, dv, dh0
//   kGateTol = 3e-2  dg (a reverse cumulative sum of differences q dq - k dk: some cancellation)
// and the errors at T = 130, 1000, 2048 stay within kGrowth times those at T = 65 plus
// kGrowthFloor (every result but dg, whose error moves with the draw: the scalar gate's key sums
// cancel; its tolerance bounds it at every T).
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

constexpr double kOutTol = 1e-2;
constexpr double kGradTol = 2e-2;
constexpr double kGateTol = 3e-2;
constexpr double kGrowth = 3.0;
constexpr double kGrowthFloor = 2e-3;

// N(0,1) rounded to bf16, held in f32 on the CPU: the values both tiers see.
Tensor bf16_randn(const Shape& shape, Generator& gen) {
  return Tensor::randn(shape, gen).to(DType::bf16).to(DType::f32);
}

Case make_case(const kernels::RecDims& d, GateKind gate, Decay decay, bool with_states,
               Generator& gen) {
  Case c;
  c.q = bf16_randn({d.B, d.T, d.H, d.K}, gen);
  c.k = bf16_randn({d.B, d.T, d.H, d.K}, gen);
  c.v = bf16_randn({d.B, d.T, d.H, d.V}, gen);
  if (gate == GateKind::PerKey) c.g = log_gates({d.B, d.T, d.H, d.K}, gen, DType::f32, decay);
  if (gate == GateKind::ScalarPerHead) c.g = log_gates({d.B, d.T, d.H}, gen, DType::f32, decay);
  if (with_states) {
    c.h0 = Tensor::randn({d.B, d.H, d.K, d.V}, gen);
    c.dhT = Tensor::randn({d.B, d.H, d.K, d.V}, gen);
  }
  c.dout = bf16_randn({d.B, d.T, d.H, d.V}, gen);
  return c;
}

// o, hT, dq, dk, dv, dg, dh0 as f32 CPU tensors (hT, dg, dh0 undefined where not wanted).
using Results = std::vector<Tensor>;

Results run_cpu_chunk(const Case& c, GateKind gate) {
  const int64_t B = c.q.size(0), T = c.q.size(1), H = c.q.size(2), K = c.q.size(3), V = c.v.size(3);
  const bool states = c.h0.defined();
  const kernels::GatedLinearArgs<float> a = args_of<float>(c, gate, 1.0 / std::sqrt(double(K)));
  Tensor o = Tensor::empty({B, T, H, V}), hT = states ? Tensor::empty({B, H, K, V}) : Tensor();
  Tensor dq = Tensor::empty(c.q.shape()), dk = Tensor::empty(c.k.shape());
  Tensor dv = Tensor::empty(c.v.shape());
  Tensor dg = c.g.defined() ? Tensor::empty(c.g.shape()) : Tensor();
  Tensor dh0 = states ? Tensor::empty(c.h0.shape()) : Tensor();
  kernels::GatedLinearGrad<float> gr;
  gr.dout = c.dout.data<float>();
  gr.dhT = ptr_or_null<float>(c.dhT);
  gr.dq = dq.data<float>();
  gr.dk = dk.data<float>();
  gr.dv = dv.data<float>();
  gr.dg = mut_or_null<float>(dg);
  gr.dh0 = mut_or_null<float>(dh0);
  kernels::gated_linear_chunk_forward<float>(a, {o.data<float>(), mut_or_null<float>(hT)});
  kernels::gated_linear_chunk_backward<float>(a, gr);
  return {o, hT, dq, dk, dv, dg, dh0};
}

// keep_scores: the forward keeps the chunks' scores for the backward (PerKey), as autograd does;
// otherwise the backward computes them.
Results run_mma(const Case& c_cpu, GateKind gate, bool keep_scores = false) {
  auto bf = [](const Tensor& t) { return t.to(DType::bf16).to(Device::CUDA); };
  auto f32 = [](const Tensor& t) { return t.defined() ? t.to(Device::CUDA) : Tensor(); };
  const Tensor q = bf(c_cpu.q), k = bf(c_cpu.k), v = bf(c_cpu.v), dout = bf(c_cpu.dout);
  const Tensor g = f32(c_cpu.g), h0 = f32(c_cpu.h0), dhT = f32(c_cpu.dhT);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3);
  const bool states = h0.defined();
  const Device dev = Device::CUDA;
  cuda::GatedLinearBf16Args a;
  a.d = {B, T, H, K, V};
  a.gate = gate;
  a.q = q.data<bf16>();
  a.k = k.data<bf16>();
  a.v = v.data<bf16>();
  a.g = ptr_or_null<float>(g);
  a.h0 = ptr_or_null<float>(h0);
  a.scale = 1.0 / std::sqrt(double(K));
  Tensor o = Tensor::empty({B, T, H, V}, DType::bf16, dev);
  Tensor hT = states ? Tensor::empty({B, H, K, V}, DType::f32, dev) : Tensor();
  Tensor dq = Tensor::empty(q.shape(), DType::bf16, dev);
  Tensor dk = Tensor::empty(k.shape(), DType::bf16, dev);
  Tensor dv = Tensor::empty(v.shape(), DType::bf16, dev);
  Tensor dg = g.defined() ? Tensor::empty(g.shape(), DType::f32, dev) : Tensor();
  Tensor dh0 = states ? Tensor::empty(h0.shape(), DType::f32, dev) : Tensor();
  cuda::GatedLinearBf16Grad gr;
  gr.dout = dout.data<bf16>();
  gr.dhT = ptr_or_null<float>(dhT);
  gr.dq = dq.data<bf16>();
  gr.dk = dk.data<bf16>();
  gr.dv = dv.data<bf16>();
  gr.dg = mut_or_null<float>(dg);
  gr.dh0 = mut_or_null<float>(dh0);
  Tensor scores = keep_scores ? Tensor::full({cuda::gated_linear_mma_scores_numel(a.d)}, 7.0,
                                             DType::bf16, dev)  // stale values must be overwritten
                              : Tensor();
  cuda::gated_linear_mma_forward(a, {o.data<bf16>(), mut_or_null<float>(hT),
                                     mut_or_null<bf16>(scores)});
  gr.scores = ptr_or_null<bf16>(scores);
  cuda::gated_linear_mma_backward(a, gr);
  Results res{o, hT, dq, dk, dv, dg, dh0};
  for (Tensor& t : res)
    if (t.defined()) t = t.to(Device::CPU).to(DType::f32);
  return res;
}

const char* const kNames[] = {"o", "hT", "dq", "dk", "dv", "dg", "dh0"};
constexpr size_t kDg = 5;  // the index of dg in kNames and in Results
double tol_of(size_t i) {
  return i < 2 ? kOutTol : i == kDg ? kGateTol : kGradTol;
}

// Compares every defined result by name; returns the relative RMS errors (0 where undefined).
std::vector<double> require_close_all(const Results& ref, const Results& out) {
  std::vector<double> errors(ref.size(), 0.0);
  for (size_t i = 0; i < ref.size(); ++i) {
    REQUIRE(ref[i].defined() == out[i].defined());
    if (!ref[i].defined()) continue;
    const std::vector<double> r = vals(ref[i]), o = vals(out[i]);
    REQUIRE_CLOSE(kNames[i], r, o, tol_of(i));
    errors[i] = hla::test::close_report(r, o).rel_rms;
  }
  return errors;
}

}  // namespace

TEST_CASE("cuda gated linear mma kernels match the CPU f32 chunk tier on bf16 inputs", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(71);
  struct Heads {
    int64_t B, H, K, V;
  };
  const Heads heads[] = {{2, 1, 64, 64}, {1, 1, 128, 128}, {1, 2, 64, 128}, {1, 1, 128, 256}};
  for (const GateCase& gc : kGateCases)
    for (const Heads& hd : heads)
      for (bool with_states : {true, false}) {
        std::vector<double> first;  // the errors at the shortest T
        for (int64_t T : {65, 130, 1000, 2048}) {
          const bool keep_scores = T >= 1000;  // both ways of the backward's scores
          INFO(gate_name(gc.gate) << " " << gc.decay_name << " B,T,H,K,V " << hd.B << "," << T
                                  << "," << hd.H << "," << hd.K << "," << hd.V << " h0/dhT "
                                  << with_states << " scores kept " << keep_scores);
          const Case c =
              make_case({hd.B, T, hd.H, hd.K, hd.V}, gc.gate, gc.decay, with_states, gen);
          const std::vector<double> errors = require_close_all(
              run_cpu_chunk(c, gc.gate), run_mma(c, gc.gate, keep_scores));
          if (first.empty()) {
            first = errors;
            continue;
          }
          for (size_t i = 0; i < errors.size(); ++i) {
            if (i == kDg) continue;
            INFO(kNames[i] << " rel_rms " << errors[i] << " at T=" << T << ", " << first[i]
                           << " at T=65");
            REQUIRE(errors[i] <= kGrowth * first[i] + kGrowthFloor);
          }
        }
      }
}

TEST_CASE("cuda gated linear mma kernels: T1 steps then T2 from the carried state == T steps",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(72);
  for (GateKind gate :
       {GateKind::PerKey, GateKind::ScalarPerHead, GateKind::FixedPerHead, GateKind::None}) {
    INFO(gate_name(gate));
    const int64_t B = 2, T1 = 300, T2 = 193, T = T1 + T2, H = 1, K = 64, V = 128;
    const Case full = make_case({B, T, H, K, V}, gate, Decay::Strong, true, gen);
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
    const Results whole = run_mma(full, gate);
    second.h0 = run_mma(first, gate)[1];  // the carried state (f32)
    const Results r2 = run_mma(second, gate);
    first.dhT = r2[6];  // the carried state gradient (f32)
    const Results r1 = run_mma(first, gate);

    // the split moves the chunk boundaries, so the states rounded to bf16 for the products
    // differ: the bf16 tolerances apply
    auto joined = [&](size_t i) { return hla::test::time_concat(vals(r1[i]), vals(r2[i]), B); };
    REQUIRE_CLOSE("o", vals(whole[0]), joined(0), kOutTol);
    REQUIRE_CLOSE("hT", vals(whole[1]), vals(r2[1]), kOutTol);
    REQUIRE_CLOSE("dq", vals(whole[2]), joined(2), kGradTol);
    REQUIRE_CLOSE("dk", vals(whole[3]), joined(3), kGradTol);
    REQUIRE_CLOSE("dv", vals(whole[4]), joined(4), kGradTol);
    if (has_gate(gate)) REQUIRE_CLOSE("dg", vals(whole[5]), joined(5), kGateTol);
    REQUIRE_CLOSE("dh0", vals(whole[6]), vals(r1[6]), kGradTol);
  }
}

TEST_CASE("cuda gated linear mma kernels reject unsupported head sizes", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(73);
  const Case c = make_case({1, 130, 1, 32, 64}, GateKind::None, Decay::Weak, false, gen);
  REQUIRE_THROWS_WITH(run_mma(c, GateKind::None), Catch::Contains("K in {64, 128}"));
  const Case wide = make_case({1, 130, 1, 64, 512}, GateKind::None, Decay::Weak, false, gen);
  REQUIRE_THROWS_WITH(run_mma(wide, GateKind::None), Catch::Contains("V in {64, 128, 256}"));
  // rows are moved 16 bytes at a time: a q two bytes into its buffer is refused
  const Tensor buf = Tensor::zeros({1 * 130 * 64 + 8}, DType::bf16, Device::CUDA);
  cuda::GatedLinearBf16Args a;
  a.d = {1, 130, 1, 64, 64};
  a.gate = GateKind::None;
  a.q = buf.data<bf16>() + 1;
  a.k = a.v = buf.data<bf16>();
  Tensor o = Tensor::empty({1, 130, 1, 64}, DType::bf16, Device::CUDA);
  REQUIRE_THROWS_WITH(cuda::gated_linear_mma_forward(a, {o.data<bf16>(), nullptr}),
                      Catch::Contains("q 16-byte aligned"));
}

TEST_CASE("cuda gla / simple_gla / retention on bf16 Vars take the mma kernels", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(74);
  const int64_t B = 2, T = 130, H = 2, K = 64, V = 64;
  for (int which = 0; which < 3; ++which) {
    INFO("op " << which);
    const GateKind gate = which == 0   ? GateKind::PerKey
                          : which == 1 ? GateKind::ScalarPerHead
                                       : GateKind::FixedPerHead;
    // bf16-valued inputs: the gate and h0 too, since the op takes one dtype for all
    std::vector<Tensor> x{bf16_randn({B, T, H, K}, gen), bf16_randn({B, T, H, K}, gen),
                          bf16_randn({B, T, H, V}, gen)};
    if (which == 0) x.push_back(log_gates({B, T, H, K}, gen, DType::f32, Decay::Strong));
    if (which == 1) x.push_back(log_gates({B, T, H}, gen, DType::f32, Decay::Strong));
    for (Tensor& t : x) t = t.to(DType::bf16).to(DType::f32);
    const Tensor h0 = bf16_randn({B, H, K, V}, gen), dout = bf16_randn({B, T, H, V}, gen);
    const Tensor dhT = bf16_randn({B, H, K, V}, gen);
    auto op = [&](const std::vector<Var>& in, const Var& state, Impl impl) {
      RecurrenceOptions opt;
      opt.impl = impl;
      return which == 0   ? gla(in[0], in[1], in[2], in[3], state, opt)
             : which == 1 ? simple_gla(in[0], in[1], in[2], in[3], state, opt)
                          : retention(in[0], in[1], in[2], state, opt);
    };
    // f32 on the CPU, bf16 on CUDA: o, hT, then the gradients of the inputs and of h0
    std::vector<std::vector<Tensor>> res;
    for (bool on_gpu : {false, true}) {
      auto put = [&](const Tensor& t) { return on_gpu ? t.to(DType::bf16).to(Device::CUDA) : t; };
      std::vector<Var> in;
      for (const Tensor& t : x) in.emplace_back(put(t), true);
      Var vh0(put(h0), true);
      const RecurrenceResult r = op(in, vh0, Impl::Auto);
      REQUIRE(r.o.dtype() == (on_gpu ? DType::bf16 : DType::f32));
      r.o.backward(put(dout), /*retain_graph=*/true);
      r.hT.backward(put(dhT));
      std::vector<Tensor> row{r.o.data(), r.hT.data()};
      for (const Var& v : in) row.push_back(v.grad());
      row.push_back(vh0.grad());
      for (Tensor& t : row) t = t.to(Device::CPU).to(DType::f32);
      res.push_back(row);
    }
    const char* names[] = {"o", "hT", "dq", "dk", "dv", "dg", "dh0"};
    const char* names_retention[] = {"o", "hT", "dq", "dk", "dv", "dh0"};
    for (size_t i = 0; i < res[0].size(); ++i) {
      const bool gate_grad = which < 2 && i == kDg;
      REQUIRE_CLOSE(which < 2 ? names[i] : names_retention[i], vals(res[0][i]), vals(res[1][i]),
                    i < 2       ? kOutTol
                    : gate_grad ? kGateTol
                                : kGradTol);
    }

    // the op's o is the mma kernel's, bit for bit (Auto and Chunk alike)
    Case c;
    c.q = x[0];
    c.k = x[1];
    c.v = x[2];
    if (which < 2) c.g = x[3];
    c.h0 = h0;
    c.dhT = dhT;
    c.dout = dout;
    const Tensor kernel_o = run_mma(c, gate)[0];
    std::vector<Var> in;
    for (const Tensor& t : x) in.emplace_back(t.to(DType::bf16).to(Device::CUDA));
    const Var gpu_h0(h0.to(DType::bf16).to(Device::CUDA));
    for (Impl impl : {Impl::Auto, Impl::Chunk}) {
      const Tensor op_o = op(in, gpu_h0, impl).o.data().to(Device::CPU).to(DType::f32);
      REQUIRE_CLOSE("o op vs kernel", vals(kernel_o), vals(op_o), 0.0);
    }
  }
  // head sizes the mma kernels do not take run the f32 kernels on f32 copies
  Var q(Tensor::randn({1, 130, 1, 32}, gen).to(DType::bf16).to(Device::CUDA));
  Var v(Tensor::randn({1, 130, 1, 48}, gen).to(DType::bf16).to(Device::CUDA));
  const RecurrenceResult r = retention(q, q, v, Var(), RecurrenceOptions{});
  REQUIRE(r.o.dtype() == DType::bf16);
}

// The mixed-precision models' gates: gla and simple_gla take an f32 gate beside bf16 q, k, v
// (the mma kernels at T = 130, K = V = 64; the f32 kernels on copies at T = 64 and at K = 32),
// read it unrounded and return its gradient in f32; against the CPU f32 op on the same values.
TEST_CASE("cuda gla / simple_gla on bf16 Vars with an f32 gate keep the gate in f32", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(75);
  struct Dims { int64_t T, K; };
  for (const Dims& dims : {Dims{130, 64}, Dims{64, 64}, Dims{130, 32}})
    for (int which = 0; which < 2; ++which) {
      INFO("T " << dims.T << " K " << dims.K << (which == 0 ? " gla" : " simple_gla"));
      const int64_t B = 2, T = dims.T, H = 2, K = dims.K, V = 64;
      const std::vector<Tensor> x{
          bf16_randn({B, T, H, K}, gen), bf16_randn({B, T, H, K}, gen),
          bf16_randn({B, T, H, V}, gen),
          which == 0 ? log_gates({B, T, H, K}, gen, DType::f32, Decay::Weak)
                     : log_gates({B, T, H}, gen, DType::f32, Decay::Weak)};
      const Tensor dout = bf16_randn({B, T, H, V}, gen);
      std::vector<std::vector<Tensor>> res;
      for (bool on_gpu : {false, true}) {
        std::vector<Var> in;
        for (size_t i = 0; i < x.size(); ++i)  // the gate stays f32 on both sides
          in.emplace_back(on_gpu ? (i < 3 ? x[i].to(DType::bf16) : x[i]).to(Device::CUDA) : x[i],
                          true);
        const RecurrenceResult r = which == 0 ? gla(in[0], in[1], in[2], in[3])
                                              : simple_gla(in[0], in[1], in[2], in[3]);
        REQUIRE(r.o.dtype() == (on_gpu ? DType::bf16 : DType::f32));
        r.o.backward(on_gpu ? dout.to(DType::bf16).to(Device::CUDA) : dout);
        REQUIRE(in[3].grad().dtype() == DType::f32);
        REQUIRE(in[0].grad().dtype() == in[0].dtype());
        std::vector<Tensor> row{r.o.data()};
        for (const Var& v : in) row.push_back(v.grad());
        for (Tensor& t : row) t = t.to(Device::CPU).to(DType::f32);
        res.push_back(row);
      }
      const char* names[] = {"o", "dq", "dk", "dv", "dg"};
      for (size_t i = 0; i < res[0].size(); ++i)
        REQUIRE_CLOSE(names[i], vals(res[0][i]), vals(res[1][i]),
                      i == 0 ? kOutTol : i == 4 ? kGateTol : kGradTol);
    }
  // other gate dtypes beside bf16 q are refused
  const Var q(Tensor::randn({1, 130, 1, 64}, gen).to(DType::bf16).to(Device::CUDA));
  const Var g64(Tensor::zeros({1, 130, 1, 64}, DType::f64, Device::CUDA));
  REQUIRE_THROWS_WITH(gla(q, q, q, g64), Catch::Contains("gk of dtype bf16 like q"));
}
#endif
