// The non-default fla options of the linear mixers (spec/recurrences.md 3-6), each checked against
// an independent computation: GQA / GVA against the plain layer whose shared weights are repeated
// per group; feature maps, q/k activations and the sum norm against the map applied by hand (on
// the host) before the recurrence op; clamp_min against a host clamp, with zero gradient where
// it binds; use_beta = false against beta = 2 sigmoid(0) = 1. Plus fla's parameter names and
// counts at d_model = 1024, and the config errors that name the key. All in f64; "rel" is the
// relative RMS error of tests/helpers/close.h.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <limits>
#include <functional>
#include <map>

#include "autograd/composites.h"
#include "autograd/recurrences.h"
#include "nn/model.h"
#include "nn/rotary.h"
#include "nn_helpers.h"
#include "tests/helpers/close.h"

using namespace hla;
using namespace hla::nn;
using hla::test::values;

namespace {

constexpr int64_t kHidden = 16;

std::map<std::string, Shape> shapes_of(const Module& m) {
  std::map<std::string, Shape> out;
  for (auto& [n, v] : m.named_parameters()) out[n] = v.shape();
  return out;
}

std::map<std::string, Var> params_of(const Module& m) {
  std::map<std::string, Var> out;
  for (auto& [n, v] : m.named_parameters()) out[n] = v;
  return out;
}

// src [heads * b, ...] -> [heads * groups * b, ...]: each block of b rows (one head) repeated
// `groups` times in place, so that head h of the result is head floor(h / groups) of src.
Tensor repeat_head_rows(const Tensor& src, int64_t heads, int64_t groups) {
  const std::vector<double> v = values(src);
  const int64_t rows = src.size(0), inner = src.numel() / rows, block = rows / heads * inner;
  std::vector<double> out;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t g = 0; g < groups; ++g)
      out.insert(out.end(), v.begin() + h * block, v.begin() + (h + 1) * block);
  Shape shape = src.shape();
  shape[0] = rows * groups;
  return Tensor::from_values(out, shape, DType::f64);
}

// Gives `dst` the parameters of `src`; a parameter that is `groups` times taller in dst (a
// grouped projection) gets src's rows repeated per head.
void copy_with_repeats(Module& dst, const Module& src, int64_t src_heads, int64_t groups) {
  const auto from = params_of(src);
  for (auto& [name, p] : dst.named_parameters()) {
    INFO(name);
    REQUIRE(from.count(name));
    const Tensor& s = from.at(name).data();
    p.mutable_data().copy_(s.shape() == p.shape() ? s : repeat_head_rows(s, src_heads, groups));
  }
}

struct Outputs {
  std::vector<double> y, dx;
};
// y = m(x) and the gradient of sum(y * w) with respect to x.
Outputs run(Mixer& m, const Tensor& x, const Tensor& w) {
  Var xv(x, true);
  const Var y = m.forward(xv);
  sum(y * Var(w)).backward();
  return {values(y), values(xv.grad())};
}

void require_same(const Outputs& ref, const Outputs& out, double tol) {
  REQUIRE_CLOSE("y", ref.y, out.y, tol);
  REQUIRE_CLOSE("dx", ref.dx, out.dx, tol);
}

// f applied elementwise on the host: a by-hand map, independent of the autograd ops.
Var host_map(const Var& x, const std::function<double(double)>& f) {
  std::vector<double> v = values(x);
  for (double& e : v) e = f(e);
  return Var(Tensor::from_values(v, x.shape(), DType::f64));
}

double host_silu(double x) { return x / (1.0 + std::exp(-x)); }
double host_relu(double x) { return x > 0 ? x : 0.0; }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// ---- fla's names and counts at d_model = 1024 (spec tables with the options' widths)

TEST_CASE("GLA with 2 kv heads of 4 at 1024: k, v, gk 1/2 as wide, 3,428,864 parameters", "[nn]") {
  Generator gen(0);
  GatedLinearAttention m(GLAOptions{.hidden_size = 1024, .num_heads = 4, .num_kv_heads = 2,
                                    .feature_map = "relu", .clamp_min = -0.5},
                         gen);
  const std::map<std::string, Shape> expected = {
      {"q_proj.weight", {512, 1024}},   {"k_proj.weight", {256, 1024}},
      {"v_proj.weight", {512, 1024}},   {"g_proj.weight", {1024, 1024}},
      {"gk_proj.0.weight", {16, 1024}}, {"gk_proj.1.weight", {256, 16}},
      {"gk_proj.1.bias", {256}},        {"o_proj.weight", {1024, 1024}},
      {"g_norm_swish_gate.weight", {256}}};
  CHECK(shapes_of(m) == expected);
  CHECK(m.num_parameters() == 3428864);  // 4,219,648 less the halved k, v, gk
}

TEST_CASE("RetNet with 2 kv heads of 8 at 1024: 6,029,568 parameters", "[nn]") {
  Generator gen(0);
  MultiScaleRetention m(RetNetOptions{.hidden_size = 1024, .num_kv_heads = 2, .feature_map = "silu"}, gen);
  const std::map<std::string, Shape> expected = {
      {"q_proj.weight", {1024, 1024}}, {"k_proj.weight", {256, 1024}},
      {"v_proj.weight", {512, 1024}},  {"g_proj.weight", {2048, 1024}},
      {"o_proj.weight", {1024, 2048}}, {"g_norm_swish_gate.weight", {256}}};
  CHECK(shapes_of(m) == expected);
  CHECK(m.num_parameters() == 6029568);
}

TEST_CASE("DeltaNet without beta at 1024: no b_proj, 4,206,848 parameters; convs per qk_activation",
          "[nn]") {
  Generator gen(0);
  DeltaNet m(DeltaNetOptions{.hidden_size = 1024, .use_beta = false, .qk_activation = "relu",
                             .qk_norm = "sum"},
             gen);
  CHECK(shapes_of(m).count("b_proj.weight") == 0);
  CHECK(m.num_parameters() == 4206848);  // 4,210,944 less b_proj [4,1024]
  // silu lives in the q/k convs only for qk_activation = silu; the v conv always has it.
  CHECK_FALSE(m.q_conv1d->silu);
  CHECK_FALSE(m.k_conv1d->silu);
  CHECK(m.v_conv1d->silu);
  DeltaNet s(DeltaNetOptions{.hidden_size = 64, .num_heads = 2}, gen);
  CHECK(s.q_conv1d->silu);
}

TEST_CASE("GatedDeltaNet with 12 value heads of 6 at 1024: per-value-head shapes, 22,082,072", "[nn]") {
  Generator gen(0);
  GatedDeltaNet m(GatedDeltaNetOptions{.hidden_size = 1024, .num_v_heads = 12}, gen);
  const std::map<std::string, Shape> expected = {
      {"q_proj.weight", {1536, 1024}},   {"k_proj.weight", {1536, 1024}},
      {"v_proj.weight", {6144, 1024}},   {"a_proj.weight", {12, 1024}},
      {"b_proj.weight", {12, 1024}},     {"A_log", {12}},
      {"dt_bias", {12}},                 {"q_conv1d.weight", {1536, 1, 4}},
      {"k_conv1d.weight", {1536, 1, 4}}, {"v_conv1d.weight", {6144, 1, 4}},
      {"g_proj.weight", {6144, 1024}},   {"o_norm.weight", {512}},
      {"o_proj.weight", {1024, 6144}}};
  CHECK(shapes_of(m) == expected);
  CHECK(m.num_parameters() == 22082072);
}

// ---- grouped heads against the plain layer with repeated weights

TEST_CASE("GLA GQA equals the plain layer with k, v, gk (and their convs) repeated per group",
          "[nn]") {
  for (const int64_t kv_heads : {int64_t(1), int64_t(2)}) {
    INFO("kv heads " << kv_heads << " of 4");
    Generator gen(11);
    const GLAOptions base{.hidden_size = kHidden, .num_heads = 4, .feature_map = "relu",
                          .use_short_conv = true, .clamp_min = -0.05, .initializer_range = 0.3};
    GLAOptions grouped = base;
    grouped.num_kv_heads = kv_heads;
    GatedLinearAttention gqa(grouped, gen), plain(base, gen);
    gqa.to(DType::f64), plain.to(DType::f64);
    copy_with_repeats(plain, gqa, kv_heads, 4 / kv_heads);
    const Tensor x = Tensor::randn({2, 6, kHidden}, gen, DType::f64);
    const Tensor w = Tensor::randn({2, 6, kHidden}, gen, DType::f64);
    require_same(run(plain, x, w), run(gqa, x, w), 1e-12);
  }
}

TEST_CASE("RetNet GQA equals the plain layer with k and v repeated per group", "[nn]") {
  Generator gen(12);
  const RetNetOptions base{.hidden_size = kHidden, .num_heads = 4, .feature_map = "silu",
                           .initializer_range = 0.3};
  RetNetOptions grouped = base;
  grouped.num_kv_heads = 2;
  MultiScaleRetention gqa(grouped, gen), plain(base, gen);
  gqa.to(DType::f64), plain.to(DType::f64);
  copy_with_repeats(plain, gqa, 2, 2);
  const Tensor x = Tensor::randn({2, 6, kHidden}, gen, DType::f64);
  const Tensor w = Tensor::randn({2, 6, kHidden}, gen, DType::f64);
  require_same(run(plain, x, w), run(gqa, x, w), 1e-12);
}

TEST_CASE("GatedDeltaNet GVA equals one q/k head per value head with q, k repeated", "[nn]") {
  Generator gen(13);
  // 2 q/k heads serving 4 value heads vs 4 q/k heads whose weights repeat the 2 pairwise.
  GatedDeltaNet gva(GatedDeltaNetOptions{.hidden_size = kHidden, .head_dim = 4, .num_heads = 2,
                                         .num_v_heads = 4, .initializer_range = 0.3},
                    gen);
  GatedDeltaNet plain(GatedDeltaNetOptions{.hidden_size = kHidden, .head_dim = 4, .num_heads = 4,
                                           .initializer_range = 0.3},
                      gen);
  gva.to(DType::f64), plain.to(DType::f64);
  copy_with_repeats(plain, gva, 2, 2);
  const Tensor x = Tensor::randn({2, 6, kHidden}, gen, DType::f64);
  const Tensor w = Tensor::randn({2, 6, kHidden}, gen, DType::f64);
  require_same(run(plain, x, w), run(gva, x, w), 1e-12);
}

// ---- maps applied by hand before the recurrence op

TEST_CASE("GLA feature_map relu equals relu applied by hand to q and k before the gla op", "[nn]") {
  Generator gen(14);
  GatedLinearAttention m(GLAOptions{.hidden_size = kHidden, .num_heads = 2, .feature_map = "relu",
                                    .initializer_range = 0.3},
                         gen);
  m.to(DType::f64);
  const Var x(Tensor::randn({2, 6, kHidden}, gen, DType::f64));
  NoGradGuard no_grad;
  const Var q = host_map(split_heads(m.q_proj->forward(x), 2), host_relu);
  const Var k = host_map(split_heads(m.k_proj->forward(x), 2), host_relu);
  const Var g = logsigmoid(m.gk_proj->forward(x)) / 16.0;
  const Var o = gla(q, k, split_heads(m.v_proj->forward(x), 2), split_heads(g, 2)).o;
  const Var ref = m.o_proj->forward(
      merge_heads(m.g_norm_swish_gate->forward(o, split_heads(m.g_proj->forward(x), 2))));
  REQUIRE_CLOSE("y", values(ref), values(m.forward(x)), 1e-12);
}

TEST_CASE("RetNet feature_map relu equals relu applied by hand before the rotary and retention",
          "[nn]") {
  Generator gen(15);
  MultiScaleRetention m(RetNetOptions{.hidden_size = kHidden, .num_heads = 2,
                                      .feature_map = "relu", .initializer_range = 0.3},
                        gen);
  m.to(DType::f64);
  const Var x(Tensor::randn({2, 6, kHidden}, gen, DType::f64));
  NoGradGuard no_grad;
  const Var q = apply_rotary(host_map(split_heads(m.q_proj->forward(x), 2), host_relu), 0);
  const Var k = apply_rotary(host_map(split_heads(m.k_proj->forward(x), 2), host_relu), 0);
  const Var o = retention(q, k, split_heads(m.v_proj->forward(x), 2)).o;
  const Var ref = m.o_proj->forward(
      merge_heads(m.g_norm_swish_gate->forward(o, split_heads(m.g_proj->forward(x), 2))));
  REQUIRE_CLOSE("y", values(ref), values(m.forward(x)), 1e-12);
}

TEST_CASE("DeltaNet: every qk_activation with each qk_norm equals the direct computation", "[nn]") {
  const std::map<std::string, std::function<double(double)>> acts = {
      {"silu", host_silu},
      {"relu", host_relu},
      {"elu", [](double x) { return x >= 0 ? x + 1.0 : std::exp(x); }},  // fla's elu_p1
      {"identity", [](double x) { return x; }}};
  for (const auto& [act, f] : acts) {
    for (const std::string norm : {"l2", "sum"}) {
      INFO(act << ", " << norm);
      Generator gen(16);
      DeltaNet m(DeltaNetOptions{.hidden_size = kHidden, .num_heads = 2, .use_short_conv = false,
                                 .qk_activation = act, .qk_norm = norm, .initializer_range = 0.3},
                 gen);
      m.to(DType::f64);
      const Var x(Tensor::randn({2, 5, kHidden}, gen, DType::f64));
      NoGradGuard no_grad;
      // act, then (sum norm) q / sum_i q_i per head of d_k = 8 contiguous values.
      const auto qk = [&](const Linear& proj) {
        std::vector<double> v = values(proj.forward(x));
        for (double& e : v) e = f(e);
        if (norm == "sum")
          for (size_t h = 0; h < v.size(); h += 8) {
            double s = 0;
            for (size_t i = 0; i < 8; ++i) s += v[h + i];
            for (size_t i = 0; i < 8; ++i) v[h + i] /= s;
          }
        return Var(Tensor::from_values(v, {2, 5, 2, 8}, DType::f64));
      };
      const Var v = host_map(split_heads(m.v_proj->forward(x), 2), host_silu);
      const Var beta = sigmoid(m.b_proj->forward(x));
      const Var o = delta_rule(qk(*m.q_proj), qk(*m.k_proj), v, beta, {},
                               {.l2norm_qk = norm == "l2"}).o;
      const Var ref = m.o_proj->forward(merge_heads(m.o_norm->forward(o)));
      REQUIRE_CLOSE("y", values(ref), values(m.forward(x)), 1e-10);
    }
  }
}

TEST_CASE("DeltaNet use_beta = false equals beta = 2 sigmoid(0) = 1", "[nn]") {
  Generator gen(17);
  // The reference learns beta, but with b_proj = 0 and allow_neg_eigval its beta is exactly 1.
  DeltaNet no_beta(DeltaNetOptions{.hidden_size = kHidden, .num_heads = 2, .use_beta = false,
                                   .initializer_range = 0.3},
                   gen);
  DeltaNet unit_beta(DeltaNetOptions{.hidden_size = kHidden, .num_heads = 2,
                                     .allow_neg_eigval = true, .initializer_range = 0.3},
                     gen);
  no_beta.to(DType::f64), unit_beta.to(DType::f64);
  const auto from = params_of(no_beta);
  for (auto& [name, p] : unit_beta.named_parameters())
    p.mutable_data().copy_(name == "b_proj.weight" ? Tensor::zeros(p.shape(), DType::f64)
                                                   : from.at(name).data());
  const Tensor x = Tensor::randn({2, 6, kHidden}, gen, DType::f64);
  const Tensor w = Tensor::randn({2, 6, kHidden}, gen, DType::f64);
  require_same(run(unit_beta, x, w), run(no_beta, x, w), 1e-12);
}

// ---- clamp_min

TEST_CASE("GLA clamp_min: equals a host clamp of the log decay, and passes no gradient where it binds",
          "[nn]") {
  Generator gen(18);
  const double floor = -0.5;
  GatedLinearAttention m(GLAOptions{.hidden_size = kHidden, .num_heads = 2, .clamp_min = floor,
                                    .initializer_range = 0.3},
                         gen);
  m.to(DType::f64);
  // Gate channel 0 far below the floor at every token (logsigmoid(-40) / 16 = -2.5): clamped.
  m.gk_proj->up->bias.mutable_data().copy_(
      Tensor::from_values({-40, 0, 0, 0, 0, 0, 0, 0}, {8}, DType::f64));
  const Var x(Tensor::randn({2, 6, kHidden}, gen, DType::f64));
  const Tensor w = Tensor::randn({2, 6, kHidden}, gen, DType::f64);
  sum(m.forward(x) * Var(w)).backward();
  const std::vector<double> db = values(m.gk_proj->up->bias.grad());
  const std::vector<double> dW = values(m.gk_proj->up->weight.grad());  // [8, 16]
  CHECK(db[0] == 0.0);
  for (int64_t j = 0; j < 16; ++j) CHECK(dW[j] == 0.0);
  for (int64_t c = 1; c < 8; ++c) CHECK(db[c] != 0.0);  // unclamped channels still learn

  NoGradGuard no_grad;
  const Var g = host_map(m.gk_proj->forward(x), [&](double z) {
    const double log_sigmoid = z < 0 ? z - std::log1p(std::exp(z)) : -std::log1p(std::exp(-z));
    return std::max(log_sigmoid / 16.0, floor);
  });
  const Var o = gla(split_heads(m.q_proj->forward(x), 2), split_heads(m.k_proj->forward(x), 2),
                    split_heads(m.v_proj->forward(x), 2), split_heads(g, 2)).o;
  const Var ref = m.o_proj->forward(
      merge_heads(m.g_norm_swish_gate->forward(o, split_heads(m.g_proj->forward(x), 2))));
  const std::vector<double> y = values(m.forward(x));
  REQUIRE_CLOSE("y", values(ref), y, 1e-12);
  // The clamp changes the function: without it channel 0 forgets at once.
  m.opt.clamp_min = -std::numeric_limits<double>::infinity();
  CHECK(test::close_report(y, values(m.forward(x))).rel_rms > 1e-3);
}

// ---- config validation

TEST_CASE("ModelConfig: bad option values throw hla::Error naming the key", "[nn]") {
  const auto fails = [](const std::function<void(ModelConfig&)>& edit, const std::string& variant) {
    ModelConfig c;
    c.variant = variant;
    c = with_variant_defaults(c);
    c.vocab_size = 32, c.hidden_size = 64, c.num_layers = 2;
    if (variant == "gated_deltanet") c.head_dim = 16;
    edit(c);
    return error_of([&] { validate(c); });
  };
  CHECK_THAT(fails([](ModelConfig& c) { c.num_kv_heads = 3; }, "gla"),
             Catch::Contains("model.num_kv_heads") && Catch::Contains("got 3"));
  CHECK_THAT(fails([](ModelConfig& c) { c.feature_map = "hedgehog"; }, "retnet"),
             Catch::Contains("model.feature_map") && Catch::Contains("\"hedgehog\""));
  CHECK_THAT(fails([](ModelConfig& c) { c.clamp_min = std::nan(""); }, "gla"),
             Catch::Contains("model.clamp_min"));
  CHECK_THAT(fails([](ModelConfig& c) { c.qk_activation = "tanh"; }, "delta_net"),
             Catch::Contains("model.qk_activation") && Catch::Contains("\"tanh\""));
  CHECK_THAT(fails([](ModelConfig& c) { c.qk_norm = "max"; }, "delta_net"),
             Catch::Contains("model.qk_norm") && Catch::Contains("\"max\""));
  CHECK_THAT(fails([](ModelConfig& c) { c.num_v_heads = 9; }, "gated_deltanet"),
             Catch::Contains("model.num_v_heads") && Catch::Contains("multiple of model.num_heads = 6"));
  CHECK(fails([](ModelConfig& c) { c.num_kv_heads = 2, c.feature_map = "sigmoid"; }, "gla").empty());
  CHECK(fails([](ModelConfig& c) { c.num_v_heads = 12; }, "gated_deltanet").empty());
  // The mixers check their own options too.
  Generator gen(0);
  CHECK_THAT(error_of([&] {
               GatedLinearAttention m(GLAOptions{.hidden_size = 16, .num_heads = 4, .num_kv_heads = 3}, gen);
             }),
             Catch::Contains("num_kv_heads"));
  CHECK_THAT(error_of([&] { DeltaNet m(DeltaNetOptions{.hidden_size = 16, .qk_norm = "l1"}, gen); }),
             Catch::Contains("qk_norm"));
}
