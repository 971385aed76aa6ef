// Tests: AdamW and SGD against hand-computed steps, AdamW on bf16 parameters (pure bf16
// training) against a double loop over the same bf16 inputs, the weight-decay split by name, the
// warmup + cosine schedule, global-norm clipping (bf16 gradients too), gradient accumulation,
// and optimizer state round trips (what checkpoints rely on).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <utility>

#include "autograd/primitives.h"
#include "optim/accumulate.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "optim/sgd.h"

using namespace hla;
using namespace hla::optim;

namespace {

Var param(std::vector<double> values) {
  const int64_t n = static_cast<int64_t>(values.size());
  return Var(Tensor::from_values(values, {n}, DType::f64), true);
}
void set_grad(Var& p, std::vector<double> values) {
  const int64_t n = static_cast<int64_t>(values.size());
  p.set_grad(Tensor::from_values(values, {n}, DType::f64));
}

bf16 with_bits(uint16_t bits) {
  bf16 b;
  b.bits = bits;
  return b;
}
double value_of(bf16 b) { return static_cast<float>(b); }

// The bf16 nearest to r (a tie to the even pattern), chosen among bf16(float(r)) and the two
// patterns beside it: rounding through float ends at most one bf16 step from the nearest. A
// statement of single rounding independent of the library's (r finite, inside bf16's range).
bf16 nearest_bf16(double r) {
  const bf16 guess(static_cast<float>(r));
  bf16 best = guess;
  for (const int d : {-1, 1}) {
    const bf16 c = with_bits(static_cast<uint16_t>(guess.bits + d));
    const double dc = std::abs(value_of(c) - r), db = std::abs(value_of(best) - r);
    if (dc < db || (dc == db && c.bits % 2 == 0)) best = c;
  }
  return best;
}

}  // namespace

TEST_CASE("adamw: two steps equal the hand-computed update", "[optim]") {
  Var w = param({1.0, -2.0});
  Var bias = param({0.5});
  AdamW opt({{"layer.weight", w, true}, {"layer.bias", bias, false}},
            {.beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1});
  const double lr = 0.01;

  // Step 1, g = (0.5, -1): m = 0.1 g, v = 0.01 g^2, m^ = g, v^ = g^2, so the update is
  // lr * g / (|g| + eps) = lr * sign(g) (up to eps), after decay p *= 1 - lr * wd.
  set_grad(w, {0.5, -1.0});
  set_grad(bias, {2.0});
  opt.step(lr);
  const double decay = 1.0 - lr * 0.1;
  CHECK(w.data().at({0}) == Approx(1.0 * decay - lr * 0.5 / (0.5 + 1e-8)).epsilon(1e-14));
  CHECK(w.data().at({1}) == Approx(-2.0 * decay + lr * 1.0 / (1.0 + 1e-8)).epsilon(1e-14));
  CHECK(bias.data().at({0}) == Approx(0.5 - lr * 2.0 / (2.0 + 1e-8)).epsilon(1e-14));  // no decay

  // Step 2, g = (0.1, 0.3) for w[0..1]: carry m, v by hand.
  const double w0 = w.data().at({0}), w1 = w.data().at({1});
  set_grad(w, {0.1, 0.3});
  bias.zero_grad();  // a parameter without a gradient is left alone
  const double b0 = bias.data().at({0});
  opt.step(lr);
  const auto expect = [&](double p, double g1, double g2) {
    const double m = 0.9 * (0.1 * g1) + 0.1 * g2;
    const double v = 0.99 * (0.01 * g1 * g1) + 0.01 * g2 * g2;
    const double m_hat = m / (1 - 0.9 * 0.9), v_hat = v / (1 - 0.99 * 0.99);
    return p * decay - lr * m_hat / (std::sqrt(v_hat) + 1e-8);
  };
  CHECK(w.data().at({0}) == Approx(expect(w0, 0.5, 0.1)).epsilon(1e-13));
  CHECK(w.data().at({1}) == Approx(expect(w1, -1.0, 0.3)).epsilon(1e-13));
  CHECK(bias.data().at({0}) == b0);
  CHECK(opt.steps() == 2);
}

TEST_CASE("adamw: bad hyperparameters name the option", "[optim]") {
  Var w = param({1.0});
  CHECK_THROWS_WITH(AdamW({{"w", w, true}}, {.beta1 = 1.0}), Catch::Contains("beta1"));
  CHECK_THROWS_WITH(AdamW({{"w", w, true}}, {.eps = 0.0}), Catch::Contains("eps"));
  CHECK_THROWS_WITH(AdamW({{"w", w, true}}, {.weight_decay = -1}), Catch::Contains("weight_decay"));
  Var constant(Tensor::from_values({1.0}, {1}), false);
  CHECK_THROWS_WITH(AdamW({{"c", constant, true}}), Catch::Contains("'c'"));
}

// Pure bf16 training's AdamW (tests/cuda/test_optim.cpp compares the GPU kernel against this
// CPU loop). Per step, a double loop over the same bf16 state and gradients gives m, v and p;
// each stored bf16 value must be that double rounded to the nearest bf16, bit for bit (this file
// and optim/adamw.cpp are compiled without contracting multiply-adds, so both loops round each
// operation alike). The same steps on f32 parameters from the same bf16 values, their state
// kept in f32 and rounded only for the comparison, differ for over 2% of the values: the check
// tells bf16 state from f32 state. The next test pins the rounding itself.
TEST_CASE("adamw on bf16 parameters: double arithmetic, each stored value rounded to bf16",
          "[optim]") {
  Generator gen(21);
  // Sizes around the GPU's 8-element bf16 packs; norm weights do not decay.
  const std::vector<std::pair<std::string, int64_t>> specs = {
      {"a.weight", 1}, {"b.weight", 37}, {"c.norm.weight", 64}, {"d.weight", 1003}};
  std::vector<OptimParam> params, f32_params;
  for (const auto& [name, n] : specs) {
    const Tensor w = Tensor::randn({n}, gen).to(DType::bf16);
    params.push_back({name, Var(w, true), takes_weight_decay(name)});
    f32_params.push_back({name, Var(w.to(DType::f32), true), takes_weight_decay(name)});
  }
  const double b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, lr = 0.02;
  const AdamWOptions o{.beta1 = b1, .beta2 = b2, .eps = eps, .weight_decay = wd};
  AdamW opt(params, o), f32_opt(f32_params, o);
  const auto state = opt.state(), f32_state = f32_opt.state();  // exp_avg/*, then exp_avg_sq/*
  const size_t P = params.size();
  for (const auto& [name, t] : state) REQUIRE(t.dtype() == DType::bf16);

  int64_t checked = 0, f32_differ = 0;
  for (int step = 1; step <= 6; ++step) {
    INFO("step " << step);
    std::vector<std::vector<double>> p0(P), m0(P), v0(P), g0(P);
    for (size_t i = 0; i < P; ++i) {
      const Tensor g = Tensor::randn(params[i].var.shape(), gen, DType::f32, 0.0, 0.5);
      params[i].var.set_grad(g.to(DType::bf16));
      f32_params[i].var.set_grad(g.to(DType::bf16).to(DType::f32));
      p0[i] = params[i].var.data().to_vector<double>();
      m0[i] = state[i].second.to_vector<double>();
      v0[i] = state[P + i].second.to_vector<double>();
      g0[i] = params[i].var.grad().to_vector<double>();
    }
    opt.step(lr);
    f32_opt.step(lr);
    const double bias1 = 1.0 - std::pow(b1, step), bias2 = 1.0 - std::pow(b2, step);
    for (size_t i = 0; i < P; ++i) {
      INFO(params[i].name);
      REQUIRE(params[i].var.dtype() == DType::bf16);
      const double decay = params[i].decay ? 1.0 - lr * wd : 1.0;
      const std::vector<bf16> p = params[i].var.data().to_vector<bf16>();
      const std::vector<bf16> m = state[i].second.to_vector<bf16>();
      const std::vector<bf16> v = state[P + i].second.to_vector<bf16>();
      const std::vector<bf16> f32_p = f32_params[i].var.data().to_vector<bf16>();
      const std::vector<bf16> f32_m = f32_state[i].second.to_vector<bf16>();
      const std::vector<bf16> f32_v = f32_state[P + i].second.to_vector<bf16>();
      for (size_t j = 0; j < p.size(); ++j) {
        const double g = g0[i][j];
        const double mr = b1 * m0[i][j] + (1.0 - b1) * g;
        const double vr = b2 * v0[i][j] + (1.0 - b2) * g * g;
        const double pr =
            decay * p0[i][j] - lr * (mr / bias1) / (std::sqrt(vr / bias2) + eps);
        const bf16 want[3] = {nearest_bf16(mr), nearest_bf16(vr), nearest_bf16(pr)};
        const bf16 got[3] = {m[j], v[j], p[j]}, f32_got[3] = {f32_m[j], f32_v[j], f32_p[j]};
        for (int k = 0; k < 3; ++k) {
          INFO("element " << j << (k == 0 ? " exp_avg " : k == 1 ? " exp_avg_sq " : " param ")
                          << value_of(got[k]) << ", double " << (k == 0 ? mr : k == 1 ? vr : pr));
          REQUIRE(got[k].bits == want[k].bits);
          ++checked;
          f32_differ += f32_got[k].bits != want[k].bits;
        }
      }
    }
  }
  INFO(checked << " values, " << f32_differ << " of the f32 path's differ");
  CHECK(f32_differ * 50 > checked);
}

// One step from p = 1 with g = -1 and no decay: m^ = g and v^ = g^2 exactly (1 - beta over
// 1 - beta^1), so p = 1 + lr / (1 + eps) = 1 + 2^-8 + 1.96e-9 for lr = 2^-8 + 2e-9: just above
// the midpoint 1 + 2^-8 of the bf16 neighbours 1 and 1 + 2^-7. Rounded once that is 1 + 2^-7;
// through float, whose 24 bits drop the 1.96e-9, it is the midpoint, which ties to the even 1.
TEST_CASE("adamw on bf16 parameters: the double is rounded once, not through float", "[optim]") {
  Var w(Tensor::from_values({1.0, -1.0}, {2}).to(DType::bf16), true);
  AdamW opt({{"w", w, true}}, {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.0});
  w.set_grad(Tensor::from_values({-1.0, 1.0}, {2}).to(DType::bf16));
  opt.step(std::ldexp(1.0, -8) + 2e-9);
  CHECK(w.data().to_vector<double>() == std::vector<double>{1.0078125, -1.0078125});
}

TEST_CASE("sgd: momentum, nesterov and coupled weight decay by hand", "[optim]") {
  Var w = param({1.0});
  Sgd opt({{"w", w, true}}, {.momentum = 0.9, .weight_decay = 0.5});
  set_grad(w, {2.0});
  opt.step(0.1);  // g = 2 + 0.5*1 = 2.5, b = 2.5, w = 1 - 0.25
  CHECK(w.data().at({0}) == Approx(0.75).epsilon(1e-15));
  set_grad(w, {1.0});
  opt.step(0.1);  // g = 1 + 0.375 = 1.375, b = 0.9*2.5 + 1.375 = 3.625, w = 0.75 - 0.3625
  CHECK(w.data().at({0}) == Approx(0.3875).epsilon(1e-14));

  Var v = param({1.0});
  Sgd nesterov({{"v", v, true}}, {.momentum = 0.5, .nesterov = true});
  set_grad(v, {1.0});
  nesterov.step(1.0);  // b = 1, d = 1 + 0.5
  CHECK(v.data().at({0}) == Approx(-0.5));
  set_grad(v, {1.0});
  nesterov.step(1.0);  // b = 1.5, d = 1 + 0.75
  CHECK(v.data().at({0}) == Approx(-2.25));

  Var plain = param({1.0});
  Sgd sgd({{"p", plain, true}}, {.momentum = 0.0});
  set_grad(plain, {4.0});
  sgd.step(0.25);
  CHECK(plain.data().at({0}) == Approx(0.0));
  CHECK(sgd.state().empty());
}

TEST_CASE("weight decay: no decay on norms, biases, A_log, dt_bias, lower_bounds", "[optim]") {
  for (const char* name :
       {"model.layers.0.attn_norm.weight", "model.layers.3.mlp_norm.weight", "model.norm.weight",
        "model.layers.1.attn.g_norm.weight", "model.layers.0.attn.q_proj.bias",
        "model.layers.2.attn.A_log", "model.layers.2.attn.dt_bias", "model.lower_bounds"})
    CHECK_FALSE(takes_weight_decay(name));
  for (const char* name :
       {"model.embeddings.weight", "lm_head.weight", "model.layers.0.attn.q_proj.weight",
        "model.layers.0.mlp.down_proj.weight", "model.layers.0.attn.q_conv1d.weight"})
    CHECK(takes_weight_decay(name));
}

TEST_CASE("schedule: linear warmup, cosine decay to lr_min, then flat", "[optim]") {
  const LrSchedule s{.kind = LrSchedule::Kind::Cosine,
                     .lr_max = 1.0,
                     .lr_min = 0.1,
                     .warmup_steps = 4,
                     .total_steps = 14};
  CHECK(s.lr(0) == Approx(0.25));
  CHECK(s.lr(3) == Approx(1.0));
  CHECK(s.lr(4) == Approx(1.0));   // q = 0
  CHECK(s.lr(9) == Approx(0.55));  // q = 1/2
  CHECK(s.lr(6) == Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi * 0.2))));
  CHECK(s.lr(14) == Approx(0.1));
  CHECK(s.lr(100) == Approx(0.1));
  const LrSchedule c{
      .kind = LrSchedule::Kind::Constant, .lr_max = 2.0, .warmup_steps = 2, .total_steps = 10};
  CHECK(c.lr(0) == Approx(1.0));
  CHECK(c.lr(7) == Approx(2.0));
  const LrSchedule no_warmup{.lr_max = 1.0, .lr_min = 0.0, .warmup_steps = 0, .total_steps = 2};
  CHECK(no_warmup.lr(0) == Approx(1.0));
  CHECK(no_warmup.lr(1) == Approx(0.5));
  CHECK_THROWS_WITH((LrSchedule{.lr_max = 1, .lr_min = 2}.validate()), Catch::Contains("min_lr"));
  CHECK_THROWS_WITH((LrSchedule{.warmup_steps = -1, .total_steps = 2}.validate()),
                    Catch::Contains("warmup_steps"));
  CHECK_NOTHROW(LrSchedule{.warmup_steps = 5, .total_steps = 2}.validate());
  CHECK_THROWS_WITH(parse_schedule_kind("linear"), Catch::Contains("cosine"));
}

TEST_CASE("clip_grad_norm: scales to max_norm, leaves small gradients and old tensors alone",
          "[optim]") {
  Var a = param({3.0, 0.0}), b = param({4.0});
  set_grad(a, {3.0, 0.0});
  set_grad(b, {4.0});
  const Tensor old_grad = a.grad();
  CHECK(clip_grad_norm({a, b}, 10.0) == Approx(5.0));
  CHECK(a.grad().at({0}) == 3.0);  // below the threshold: untouched
  CHECK(clip_grad_norm({a, b}, 1.0) == Approx(5.0));
  CHECK(a.grad().at({0}) == Approx(0.6).epsilon(1e-6));
  CHECK(b.grad().at({0}) == Approx(0.8).epsilon(1e-6));
  CHECK(grad_norm({a, b}) == Approx(1.0).epsilon(1e-6));
  CHECK(old_grad.at({0}) == 3.0);  // gradients are values: the old tensor is unchanged
  set_grad(b, {std::nan("")});
  CHECK(std::isnan(clip_grad_norm({a, b}, 1.0)));
  CHECK_THROWS_WITH(clip_grad_norm({a}, 0.0), Catch::Contains("max_norm"));
}

TEST_CASE("clip_coefficient: max_norm / (n + 1e-6) above max_norm, else 1", "[optim]") {
  CHECK(clip_coefficient(5.0, 1.0) == 1.0 / (5.0 + 1e-6));
  CHECK(clip_coefficient(5.0, 10.0) == 1.0);
  CHECK(clip_coefficient(1.0, 1.0) == 1.0);
  CHECK(clip_coefficient(std::nan(""), 1.0) == 1.0);  // a bad step is the caller's to refuse
  CHECK(clip_coefficient(INFINITY, 1.0) == 1.0);
  CHECK_THROWS_WITH(clip_coefficient(5.0, 0.0), Catch::Contains("max_norm"));
}

// step(lr, c) reads every gradient times c: the same update as step(lr) on gradients scaled
// beforehand (f64 gradients, so the scaled copies are the same doubles). AdamW's loop (compiled
// without fused multiply-adds, like this file) gives the same bits; SGD's the same values up to
// a fused rounding.
TEST_CASE("optimizer step with a gradient scale equals the step on scaled gradients", "[optim]") {
  const double c = 0.37;
  const std::vector<double> w0 = {1.0, -2.0, 0.5}, g0 = {0.3, -1.1, 2.0};
  std::vector<double> scaled;
  for (const double g : g0) scaled.push_back(g * c);
  const auto pair_run = [&](auto make) {
    Var a = param(w0), b = param(w0);
    auto folded = make(a), reference = make(b);
    for (int step = 0; step < 3; ++step) {
      set_grad(a, g0);
      set_grad(b, scaled);
      folded.step(0.1, c);
      reference.step(0.1);
    }
    return std::make_pair(a.data().to_vector<double>(), b.data().to_vector<double>());
  };
  const auto [adam_a, adam_b] = pair_run([](Var& w) {
    return AdamW({{"w", w, true}}, {.beta1 = 0.9, .beta2 = 0.95, .weight_decay = 0.1});
  });
  CHECK(adam_a == adam_b);
  CHECK(adam_a != w0);
  const auto [sgd_a, sgd_b] = pair_run([](Var& w) {
    return Sgd({{"w", w, true}}, {.momentum = 0.9, .weight_decay = 0.05});
  });
  for (size_t i = 0; i < w0.size(); ++i) CHECK(sgd_a[i] == Approx(sgd_b[i]).epsilon(1e-14));
  Var w = param(w0);
  AdamW opt({{"w", w, true}});
  set_grad(w, g0);
  CHECK_THROWS_WITH(opt.step(0.1, 0.0), Catch::Contains("grad_scale"));
  CHECK_THROWS_WITH(opt.step(0.1, std::nan("")), Catch::Contains("grad_scale"));
  CHECK(opt.steps() == 0);  // refused before any update
}

// 4097 gradients of 1 in bf16: the squares summed in double give 4097 exactly; summed in bf16
// (8 significant bits) the total would stop at 256 (256 + 1 rounds back to 256).
TEST_CASE("grad_norm of bf16 gradients sums their squares in double", "[optim]") {
  Var w(Tensor::zeros({4097}, DType::bf16), true);
  w.set_grad(Tensor::ones({4097}, DType::bf16));
  CHECK(grad_norm({w}) == std::sqrt(4097.0));
}

TEST_CASE("gradient accumulation: two half batches give the full-batch gradient", "[optim]") {
  Generator gen(3);
  Var w(Tensor::randn({3}, gen, DType::f64), true);
  const Tensor x = Tensor::randn({4, 3}, gen, DType::f64);
  const auto loss_of = [&](int64_t first, int64_t rows) {
    const Var xs(x.narrow(0, first, rows));
    return mean(matmul(xs, unsqueeze(w, 1)) * matmul(xs, unsqueeze(w, 1)));
  };
  loss_of(0, 4).backward();
  const std::vector<double> full = w.grad().to_vector<double>();
  w.zero_grad();
  backward_micro_batch(loss_of(0, 2), 2);
  backward_micro_batch(loss_of(2, 2), 2);
  const std::vector<double> accumulated = w.grad().to_vector<double>();
  for (size_t i = 0; i < full.size(); ++i) CHECK(accumulated[i] == Approx(full[i]).epsilon(1e-12));
}

TEST_CASE("optimizer state: load_state continues exactly where state() was taken", "[optim]") {
  const auto run = [](AdamW& opt, Var& w, int from, int to) {
    for (int s = from; s < to; ++s) {
      set_grad(w, {std::sin(s + 1.0), std::cos(s + 1.0)});
      opt.step(0.1);
    }
  };
  Var w1 = param({1.0, 2.0});
  AdamW straight({{"w", w1, true}});
  run(straight, w1, 0, 6);

  Var w2 = param({1.0, 2.0});
  AdamW first({{"w", w2, true}});
  run(first, w2, 0, 3);
  std::map<std::string, Tensor> saved;
  for (const auto& [name, t] : first.state()) saved[name] = t.clone();
  Var w3(w2.data().clone(), true);
  AdamW resumed({{"w", w3, true}});
  resumed.load_state(saved, first.steps());
  run(resumed, w3, 3, 6);
  CHECK(w3.data().to_vector<double>() == w1.data().to_vector<double>());

  saved.erase("exp_avg_sq/w");
  CHECK_THROWS_WITH(resumed.load_state(saved, 3), Catch::Contains("exp_avg_sq/w"));
}
