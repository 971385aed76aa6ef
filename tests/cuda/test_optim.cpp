// The optimizers and gradient clipping on CUDA parameters against the CPU implementation, by
// name: the multi-tensor AdamW kernel (decay and no-decay parameters, several steps, tensors of
// odd sizes around and beyond one 4096-element chunk, f32 and f64, gradients read times a
// clipping coefficient every other step, a parameter without a gradient, one stored 4 bytes
// into its buffer: AdamW's element path, the others its packs), SGD with momentum / Nesterov /
// weight decay, grad_norm (more chunks than blocks, so the grid-stride loop wraps; mixed f32/f64
// gradients; bitwise reproducible) and clip_grad_norm.
//
// bf16 parameters (pure bf16 training): one launch over bf16 tensors of ragged sizes (1, 7, 8,
// 4097, 12165; one 2 bytes into its buffer, one 16), several steps, against the CPU loop; the
// double result rounded once to bf16 on the GPU too (a value just above a bf16 midpoint); and
// the gradient norm of bf16 gradients against a double sum on the host.
//
// Tolerances (relative RMS):
//   AdamW: the kernel evaluates optim/adamw.cpp's double expressions in the same order, each
//     operation rounded on its own on both sides (adamw.cpp is compiled without contracting
//     multiply-adds), so the results agree bit for bit: bf16 is checked so; f32 and f64 at
//     1e-6 and 1e-12. (With GCC's default contraction on the host, a fused rounding moved ~0.4%
//     of bf16 first moments a step by one bf16 step, and where a moment cancels, by more.)
//   SGD on CUDA composes tensor ops in the parameter's dtype (the CPU loop works in double):
//     kF32 / kF64 from cuda_test_helpers.h.
//   grad_norm: both sides accumulate squares in double, in different orders: 1e-12.
#ifdef HLA_WITH_CUDA

#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/sgd.h"
#include "tests/cuda/cuda_test_helpers.h"

using namespace hla;
using namespace hla::cuda_test;

namespace {

struct ParamSpec {
  std::string name;  // ".weight" decays, "norm.weight" does not
  Shape shape;
  DType dtype;
  int64_t offset = 0;  // stored from element `offset` of a larger buffer
};

const std::vector<ParamSpec>& param_specs() {
  static const std::vector<ParamSpec> specs = {
      {"a.weight", {1}, DType::f32},
      {"b.norm.weight", {7}, DType::f32},
      {"c.weight", {64, 64}, DType::f32},            // exactly one chunk
      {"d.bias", {4097}, DType::f32},                // one chunk and one element
      {"e.weight", {3, 5, 811}, DType::f32},         // 12165: three chunks, ragged tail
      {"f.weight", {33, 129}, DType::f64},           // a second dtype: its own launch
      {"g.attn_norm.weight", {4095}, DType::f64},
      {"i.weight", {2, 50}, DType::f32, 1},          // 4 bytes in: not 16-byte aligned
      {"h.no_grad.weight", {5}, DType::f32},         // never gets a gradient
  };
  return specs;
}

std::vector<optim::OptimParam> make_params(Generator& gen, Device device) {
  std::vector<optim::OptimParam> out;
  for (const ParamSpec& s : param_specs()) {
    const int64_t n = numel(s.shape);
    const Tensor buffer = Tensor::randn({s.offset + n}, gen, s.dtype).to(device);
    out.push_back({s.name, Var(buffer.slice(0, s.offset, s.offset + n).reshape(s.shape), true),
                   optim::takes_weight_decay(s.name)});
  }
  return out;
}

// Gives every parameter but the last a fresh gradient, equal on both sides.
void set_grads(std::vector<optim::OptimParam>& cpu, std::vector<optim::OptimParam>& gpu_params,
               Generator& gen) {
  for (size_t i = 0; i + 1 < cpu.size(); ++i) {
    const Tensor g = Tensor::randn(cpu[i].var.shape(), gen, cpu[i].var.dtype(), 0.0, 0.5);
    cpu[i].var.set_grad(g);
    gpu_params[i].var.set_grad(gpu(g));
  }
}

double tol_exact(DType dt) { return dt == DType::f64 ? 1e-12 : 1e-6; }

void require_same_state(const optim::Optimizer& cpu, const optim::Optimizer& gpu_opt,
                        double (*tol)(DType)) {
  for (size_t i = 0; i < cpu.params().size(); ++i) {
    const Tensor& w = cpu.params()[i].var.data();
    REQUIRE(gpu_opt.params()[i].var.data().device() == Device::CUDA);
    REQUIRE_CLOSE(cpu.params()[i].name, vals(w), vals(gpu_opt.params()[i].var.data()),
                  tol(w.dtype()));
  }
  const auto cpu_state = cpu.state(), gpu_state = gpu_opt.state();
  REQUIRE(cpu_state.size() == gpu_state.size());
  for (size_t i = 0; i < cpu_state.size(); ++i) {
    REQUIRE(cpu_state[i].first == gpu_state[i].first);
    REQUIRE(gpu_state[i].second.device() == Device::CUDA);
    REQUIRE_CLOSE(cpu_state[i].first, vals(cpu_state[i].second), vals(gpu_state[i].second),
                  tol(cpu_state[i].second.dtype()));
  }
}

double tol_ops(DType dt) { return tol(dt); }

// a and b (bf16, any device) bit for bit; a failing element is reported with `inputs` (CPU
// tensors shaped like a: the parameter, moments and gradient before the step).
void require_bf16_equal(const std::string& name, const Tensor& a, const Tensor& b,
                        const std::vector<Tensor>& inputs) {
  INFO(name);
  REQUIRE(a.dtype() == DType::bf16);
  REQUIRE(b.dtype() == DType::bf16);
  const std::vector<bf16> x = a.to_vector<bf16>(), y = b.to_vector<bf16>();
  REQUIRE(x.size() == y.size());
  for (size_t j = 0; j < x.size(); ++j) {
    if (x[j].bits == y[j].bits) continue;
    std::ostringstream from;
    for (const Tensor& t : inputs) from << ' ' << vals(t)[j];
    FAIL("element " << j << ": " << float(x[j]) << " vs " << float(y[j]) << " from (p m v g)"
                    << from.str());
  }
}

}  // namespace

TEST_CASE("cuda AdamW (multi-tensor kernel) matches the CPU step for step", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator init_cpu(5), init_gpu(5), grads(6);
  auto cpu_params = make_params(init_cpu, Device::CPU);
  auto gpu_params = make_params(init_gpu, Device::CUDA);
  const optim::AdamWOptions o{.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  optim::AdamW cpu(cpu_params, o), gpu_opt(gpu_params, o);
  for (int step = 0; step < 5; ++step) {
    INFO("step " << step + 1);
    set_grads(cpu_params, gpu_params, grads);
    const double lr = 1e-2 * (step + 1);
    const double clip = step % 2 ? 0.37 : 1.0;  // every other step a clipping coefficient
    cpu.step(lr, clip);
    gpu_opt.step(lr, clip);
    require_same_state(cpu, gpu_opt, tol_exact);
  }
  // The parameter without a gradient neither moved nor advanced its moments.
  const Tensor untouched = gpu_params.back().var.data();
  REQUIRE(vals(untouched) == vals(cpu_params.back().var.data()));
  for (const auto& [name, t] : gpu_opt.state())
    if (name.find("no_grad") != std::string::npos) CHECK(vals(t) == std::vector<double>(5, 0.0));
}

TEST_CASE("cuda AdamW: state round-trips through the CPU (checkpoints)", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator init_a(8), init_b(8), grads_a(9), grads_b(9);
  auto a_params = make_params(init_a, Device::CUDA);
  auto b_params = make_params(init_b, Device::CPU);
  optim::AdamW a(a_params), b(b_params);
  set_grads(b_params, a_params, grads_a);
  a.step(1e-3);
  b.step(1e-3);
  // Load the GPU optimizer's state into a fresh GPU optimizer through host copies.
  Generator init_c(8);
  auto c_params = make_params(init_c, Device::CUDA);
  for (size_t i = 0; i < c_params.size(); ++i)
    c_params[i].var.mutable_data().copy_(a_params[i].var.data());
  optim::AdamW c(c_params);
  std::map<std::string, Tensor> saved;
  for (const auto& [name, t] : a.state()) saved[name] = t.to(Device::CPU);
  c.load_state(saved, a.steps());
  set_grads(b_params, a_params, grads_b);
  for (size_t i = 0; i < c_params.size(); ++i) c_params[i].var.set_grad(a_params[i].var.grad());
  a.step(1e-3);
  c.step(1e-3);
  for (size_t i = 0; i < a_params.size(); ++i)
    REQUIRE(vals(a_params[i].var.data()) == vals(c_params[i].var.data()));
}

TEST_CASE("cuda AdamW on bf16 parameters matches the CPU's bf16 loop", "[cuda]") {
  HLA_REQUIRE_GPU();
  const std::vector<ParamSpec> specs = {
      {"a.weight", {1}, DType::bf16},
      {"b.norm.weight", {7}, DType::bf16},            // no decay; under one pack
      {"c.weight", {8}, DType::bf16},                 // one pack
      {"d.bias", {4097}, DType::bf16},                // one chunk and one element
      {"e.weight", {3, 5, 811}, DType::bf16},         // 12165: three chunks, ragged tail
      {"f.weight", {2, 50}, DType::bf16, 1},          // 2 bytes in: the element path
      {"g.weight", {61}, DType::bf16, 8},             // 16 bytes in: packs, then a tail of 5
  };
  const auto make = [&](Generator& gen, Device device) {
    std::vector<optim::OptimParam> out;
    for (const ParamSpec& s : specs) {
      const int64_t n = numel(s.shape);
      const Tensor buffer = Tensor::randn({s.offset + n}, gen).to(DType::bf16).to(device);
      out.push_back({s.name, Var(buffer.slice(0, s.offset, s.offset + n).reshape(s.shape), true),
                     optim::takes_weight_decay(s.name)});
    }
    return out;
  };
  Generator init_cpu(31), init_gpu(31), grads(32);
  auto cpu_params = make(init_cpu, Device::CPU);
  auto gpu_params = make(init_gpu, Device::CUDA);
  const optim::AdamWOptions o{.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  optim::AdamW cpu(cpu_params, o), gpu_opt(gpu_params, o);
  const size_t P = cpu_params.size();
  for (int step = 0; step < 5; ++step) {
    INFO("step " << step + 1);
    const auto before = cpu.state();  // exp_avg/*, then exp_avg_sq/*
    std::vector<std::vector<Tensor>> inputs(P);  // p, m, v, g before the step
    for (size_t i = 0; i < P; ++i) {
      const Tensor g =
          Tensor::randn(cpu_params[i].var.shape(), grads, DType::f32, 0.0, 0.5).to(DType::bf16);
      cpu_params[i].var.set_grad(g);
      gpu_params[i].var.set_grad(gpu(g));
      inputs[i] = {cpu_params[i].var.data().clone(), before[i].second.clone(),
                   before[P + i].second.clone(), g};
    }
    const double lr = 1e-2 * (step + 1);
    const double clip = step % 2 ? 0.37 : 1.0;  // every other step a clipping coefficient
    cpu.step(lr, clip);
    gpu_opt.step(lr, clip);
    for (size_t i = 0; i < P; ++i) {
      REQUIRE(gpu_params[i].var.data().device() == Device::CUDA);
      require_bf16_equal(cpu_params[i].name, cpu_params[i].var.data(), gpu_params[i].var.data(),
                         inputs[i]);
    }
    const auto cpu_state = cpu.state(), gpu_state = gpu_opt.state();
    REQUIRE(cpu_state.size() == 2 * P);
    for (size_t i = 0; i < cpu_state.size(); ++i) {
      REQUIRE(gpu_state[i].first == cpu_state[i].first);
      REQUIRE(gpu_state[i].second.device() == Device::CUDA);
      require_bf16_equal(cpu_state[i].first, cpu_state[i].second, gpu_state[i].second,
                         inputs[i % P]);
    }
  }
}

// One step from p = 1 with g = -1 and no decay gives p = 1 + 2^-8 + 1.96e-9 in double (see
// tests/optim/test_optim.cpp): rounded once, 1 + 2^-7; through float, the midpoint 1 + 2^-8,
// which ties to the even 1. 4096 copies: the kernel's packs, as well as a 3-element tail.
TEST_CASE("cuda AdamW on bf16 parameters rounds the double once, not through float", "[cuda]") {
  HLA_REQUIRE_GPU();
  for (const int64_t n : {int64_t{4096}, int64_t{3}}) {
    INFO(n << " elements");
    Var w(gpu(Tensor::ones({n}, DType::bf16)), true);
    optim::AdamW opt({{"w", w, true}},
                     {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.0});
    w.set_grad(gpu(Tensor::full({n}, -1.0, DType::bf16)));
    opt.step(std::ldexp(1.0, -8) + 2e-9);
    REQUIRE(w.dtype() == DType::bf16);
    CHECK(vals(w.data()) == std::vector<double>(size_t(n), 1.0078125));
  }
}

TEST_CASE("cuda SGD (momentum, Nesterov, weight decay) matches the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  for (const optim::SgdOptions o : {optim::SgdOptions{.momentum = 0.0, .weight_decay = 0.0},
                                    optim::SgdOptions{.momentum = 0.9, .weight_decay = 0.05},
                                    optim::SgdOptions{.momentum = 0.8, .weight_decay = 0.01,
                                                      .nesterov = true}}) {
    INFO("momentum " << o.momentum << " nesterov " << o.nesterov);
    Generator init_cpu(11), init_gpu(11), grads(12);
    auto cpu_params = make_params(init_cpu, Device::CPU);
    auto gpu_params = make_params(init_gpu, Device::CUDA);
    optim::Sgd cpu(cpu_params, o), gpu_opt(gpu_params, o);
    for (int step = 0; step < 4; ++step) {
      INFO("step " << step + 1);
      set_grads(cpu_params, gpu_params, grads);
      cpu.step(0.05);
      gpu_opt.step(0.05);
      require_same_state(cpu, gpu_opt, tol_ops);
    }
  }
}

TEST_CASE("cuda optimizers and clipping reject parameters on two devices", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(13);
  std::vector<optim::OptimParam> mixed = {
      {"a.weight", Var(Tensor::randn({3}, gen), true), true},
      {"b.weight", Var(gpu(Tensor::randn({3}, gen)), true), true}};
  for (auto& p : mixed) p.var.set_grad(Tensor::ones({3}).to(p.var.device()));
  optim::AdamW adamw(mixed);
  REQUIRE_THROWS_WITH(adamw.step(1e-3), Catch::Contains("one device"));
  optim::Sgd sgd(mixed);
  REQUIRE_THROWS_WITH(sgd.step(1e-3), Catch::Contains("one device"));
  const std::vector<Var> vars = {mixed[0].var, mixed[1].var};
  REQUIRE_THROWS_WITH(optim::grad_norm(vars), Catch::Contains("one device"));
  REQUIRE_THROWS_WITH(optim::clip_grad_norm(vars, 1.0), Catch::Contains("one device"));
}

TEST_CASE("cuda grad_norm / clip_grad_norm match the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(14);
  // 5,000,001 elements: 1221 chunks > 1024 blocks, so blocks take several chunks each.
  const std::vector<std::pair<Shape, DType>> shapes = {
      {{1}, DType::f32}, {{5000001}, DType::f32}, {{17, 3}, DType::f64}, {{4096}, DType::f32},
      {{0}, DType::f32}};
  std::vector<Var> cpu, gpu_vars;
  for (const auto& [shape, dt] : shapes) {
    const Tensor w = Tensor::randn(shape, gen, dt), g = Tensor::randn(shape, gen, dt, 0.0, 0.01);
    cpu.emplace_back(w, true);
    gpu_vars.emplace_back(gpu(w), true);
    cpu.back().set_grad(g);
    gpu_vars.back().set_grad(gpu(g));
  }
  cpu.emplace_back(Tensor::randn({9}, gen), true);  // no gradient: counts as zero
  gpu_vars.emplace_back(gpu(cpu.back().data()), true);

  const double n_cpu = optim::grad_norm(cpu), n_gpu = optim::grad_norm(gpu_vars);
  REQUIRE(n_gpu > 0);
  REQUIRE(std::abs(n_gpu - n_cpu) <= 1e-12 * n_cpu);
  REQUIRE(optim::grad_norm(gpu_vars) == n_gpu);  // deterministic: bitwise the same again

  // Below the threshold: nothing changes.
  REQUIRE(optim::clip_grad_norm(gpu_vars, 10 * n_gpu) == n_gpu);
  REQUIRE_CLOSE("grad 1 (not clipped)", vals(cpu[1].grad()), vals(gpu_vars[1].grad()), 0.0);

  // Above it: every gradient scaled by max_norm / (norm + 1e-6), on the device.
  const double max_norm = 0.25 * n_cpu;
  REQUIRE(std::abs(optim::clip_grad_norm(cpu, max_norm) - n_cpu) <= 1e-12 * n_cpu);
  REQUIRE(std::abs(optim::clip_grad_norm(gpu_vars, max_norm) - n_gpu) <= 1e-12 * n_cpu);
  for (size_t i = 0; i + 1 < cpu.size(); ++i) {
    REQUIRE(gpu_vars[i].grad().device() == Device::CUDA);
    REQUIRE_CLOSE("clipped grad " + std::to_string(i), vals(cpu[i].grad()),
                  vals(gpu_vars[i].grad()), tol(cpu[i].dtype()));
  }
  REQUIRE(std::abs(optim::grad_norm(gpu_vars) - max_norm) <= 1e-5 * max_norm);
  REQUIRE_FALSE(gpu_vars.back().grad().defined());
}

// Squares of bf16 gradients formed and summed in double: against a double sum over the same
// bf16 values on the host, 1e-12 (far below a float accumulator's 2^-24 per addition); 4097
// ones among them, whose squares summed in bf16 would stall at 256. With f32 gradients in the
// same call. Then clipping keeps each gradient's dtype and brings the norm to max_norm up to
// bf16 rounding (2^-9 relative per element).
TEST_CASE("cuda grad_norm / clip_grad_norm on bf16 gradients", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(15);
  std::vector<Var> vars;
  double sum_sq = 0.0;
  for (const auto& [shape, dt] : std::vector<std::pair<Shape, DType>>{
           {{4097}, DType::bf16}, {{7}, DType::bf16}, {{3, 811}, DType::bf16},
           {{100003}, DType::bf16}, {{5}, DType::f32}}) {
    const Tensor g = numel(shape) == 4097 ? Tensor::ones(shape, DType::bf16)
                                          : Tensor::randn(shape, gen, DType::f32, 0.0, 0.01).to(dt);
    for (const double x : vals(g)) sum_sq += x * x;
    vars.emplace_back(gpu(Tensor::zeros(shape, dt)), true);
    vars.back().set_grad(gpu(g));
  }
  const double want = std::sqrt(sum_sq), n = optim::grad_norm(vars);
  INFO("grad_norm " << n << ", double sum on the host " << want);
  REQUIRE(std::abs(n - want) <= 1e-12 * want);
  REQUIRE(optim::grad_norm(vars) == n);  // deterministic

  const double max_norm = 0.5 * want;
  REQUIRE(std::abs(optim::clip_grad_norm(vars, max_norm) - want) <= 1e-12 * want);
  for (const Var& v : vars) {
    REQUIRE(v.grad().device() == Device::CUDA);
    REQUIRE(v.grad().dtype() == v.dtype());
  }
  CHECK(std::abs(optim::grad_norm(vars) - max_norm) <= 4e-3 * max_norm);
}

#endif  // HLA_WITH_CUDA
