// Tests: AdamW and SGD against hand-computed steps, the weight-decay split by name, the
// warmup + cosine schedule, global-norm clipping, gradient accumulation, and optimizer state
// round trips (what checkpoints rely on).
#include <catch2/catch.hpp>
#include <cmath>
#include <numbers>

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
