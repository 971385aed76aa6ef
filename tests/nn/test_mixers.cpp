// Mixers: parameter names and counts at hidden 1024 (spec tables), output shapes, gradients by
// finite differences, decoding (state carry) against the full forward, and the block's path
// forward_normed (the pre-mixer norm fused into the input projections) against forward(norm(x)).
#include <catch2/catch.hpp>
#include <map>

#include "autograd/gradcheck.h"
#include "nn_helpers.h"
#include "tests/helpers/close.h"

using namespace hla;
using namespace hla::nn;
using hla::test::values;

namespace {

std::map<std::string, Shape> shapes_of(const Module& m) {
  std::map<std::string, Shape> out;
  for (auto& [n, v] : m.named_parameters()) out[n] = v.shape();
  return out;
}

}  // namespace

// ---- spec tables at d_model = 1024 (one build each; shapes only)

TEST_CASE("GLA at 1024: fla names, shapes and 4,219,648 parameters", "[nn]") {
  Generator gen(0);
  GatedLinearAttention m(GLAOptions{.hidden_size = 1024, .num_heads = 4}, gen);
  const std::map<std::string, Shape> expected = {
      {"q_proj.weight", {512, 1024}},   {"k_proj.weight", {512, 1024}},
      {"v_proj.weight", {1024, 1024}},  {"g_proj.weight", {1024, 1024}},
      {"gk_proj.0.weight", {16, 1024}}, {"gk_proj.1.weight", {512, 16}},
      {"gk_proj.1.bias", {512}},        {"o_proj.weight", {1024, 1024}},
      {"g_norm_swish_gate.weight", {256}}};
  CHECK(shapes_of(m) == expected);
  CHECK(m.num_parameters() == 4219648);
}

TEST_CASE("HGRN2 at 1024: 8 heads, 4,195,328 parameters", "[nn]") {
  Generator gen(0);
  HGRN2Attention m(HGRN2Options{.hidden_size = 1024}, gen);
  CHECK(m.num_heads == 8);
  const std::map<std::string, Shape> expected = {
      {"q_proj.weight", {1024, 1024}}, {"f_proj.weight", {1024, 1024}},
      {"i_proj.weight", {1024, 1024}}, {"o_proj.weight", {1024, 1024}},
      {"g_norm.weight", {1024}}};
  CHECK(shapes_of(m) == expected);
  CHECK(m.num_parameters() == 4195328);
}

TEST_CASE("HGRN at 1024: 4,195,328 parameters", "[nn]") {
  Generator gen(0);
  HGRNAttention m(HGRNOptions{.hidden_size = 1024}, gen);
  const std::map<std::string, Shape> expected = {
      {"i_proj.weight", {1024, 1024}}, {"f_proj.weight", {1024, 1024}},
      {"g_proj.weight", {1024, 1024}}, {"o_proj.weight", {1024, 1024}},
      {"g_norm.weight", {1024}}};
  CHECK(shapes_of(m) == expected);
  CHECK(m.num_parameters() == 4195328);
}

TEST_CASE("RetNet at 1024: 8 heads, 8,388,864 parameters", "[nn]") {
  Generator gen(0);
  MultiScaleRetention m(RetNetOptions{.hidden_size = 1024}, gen);
  const std::map<std::string, Shape> expected = {
      {"q_proj.weight", {1024, 1024}}, {"k_proj.weight", {1024, 1024}},
      {"v_proj.weight", {2048, 1024}}, {"g_proj.weight", {2048, 1024}},
      {"o_proj.weight", {1024, 2048}}, {"g_norm_swish_gate.weight", {256}}};
  CHECK(shapes_of(m) == expected);
  CHECK(m.num_parameters() == 8388864);
}

TEST_CASE("DeltaNet at 1024: 4 heads 4,210,944 and 16 heads 4,223,040 parameters", "[nn]") {
  Generator gen(0);
  DeltaNet m4(DeltaNetOptions{.hidden_size = 1024, .num_heads = 4}, gen);
  const std::map<std::string, Shape> expected = {
      {"q_proj.weight", {1024, 1024}},  {"k_proj.weight", {1024, 1024}},
      {"v_proj.weight", {1024, 1024}},  {"b_proj.weight", {4, 1024}},
      {"q_conv1d.weight", {1024, 1, 4}}, {"k_conv1d.weight", {1024, 1, 4}},
      {"v_conv1d.weight", {1024, 1, 4}}, {"o_norm.weight", {256}},
      {"o_proj.weight", {1024, 1024}}};
  CHECK(shapes_of(m4) == expected);
  CHECK(m4.num_parameters() == 4210944);
  DeltaNet m16(DeltaNetOptions{.hidden_size = 1024, .num_heads = 16}, gen);
  CHECK(m16.num_parameters() == 4223040);
}

TEST_CASE("GatedDeltaNet at 1024, literal defaults: 12,620,300 parameters and special inits", "[nn]") {
  Generator gen(0);
  GatedDeltaNet m(GatedDeltaNetOptions{.hidden_size = 1024}, gen);
  const std::map<std::string, Shape> expected = {
      {"q_proj.weight", {1536, 1024}},  {"k_proj.weight", {1536, 1024}},
      {"v_proj.weight", {3072, 1024}},  {"a_proj.weight", {6, 1024}},
      {"b_proj.weight", {6, 1024}},     {"A_log", {6}},
      {"dt_bias", {6}},                 {"q_conv1d.weight", {1536, 1, 4}},
      {"k_conv1d.weight", {1536, 1, 4}}, {"v_conv1d.weight", {3072, 1, 4}},
      {"g_proj.weight", {3072, 1024}},  {"o_norm.weight", {512}},
      {"o_proj.weight", {1024, 3072}}};
  CHECK(shapes_of(m) == expected);
  CHECK(m.num_parameters() == 12620300);
  for (double a : values(m.A_log)) CHECK(a <= std::log(16.0));
  for (double b : values(m.dt_bias)) {
    const double dt = std::log1p(std::exp(b));  // softplus(dt_bias) = dt at init
    CHECK(dt >= 1e-3 * (1 - 1e-9));
    CHECK(dt <= 1e-1 * (1 + 1e-9));
  }
}

TEST_CASE("Attention at 1024: 16 heads 4,194,304; 4 kv heads 2,621,440 parameters", "[nn]") {
  Generator gen(0);
  Attention mha(AttentionLayerOptions{.hidden_size = 1024, .num_heads = 16}, gen);
  CHECK(mha.num_parameters() == 4194304);
  Attention gqa(AttentionLayerOptions{.hidden_size = 1024, .num_heads = 16, .num_kv_heads = 4}, gen);
  const std::map<std::string, Shape> expected = {
      {"q_proj.weight", {1024, 1024}}, {"k_proj.weight", {256, 1024}},
      {"v_proj.weight", {256, 1024}},  {"o_proj.weight", {1024, 1024}}};
  CHECK(shapes_of(gqa) == expected);
  CHECK(gqa.num_parameters() == 2621440);
}

// ---- tiny instances in f64

TEST_CASE("every mixer maps [B,T,d] to [B,T,d]", "[nn]") {
  for (const auto& kind : test::mixer_kinds()) {
    INFO(kind);
    Generator gen(1);
    auto m = test::tiny_mixer(kind, gen, DType::f32);
    Var x(Tensor::randn({2, 5, test::kTinyHidden}, gen));
    const Var y = m->forward(x);
    CHECK(y.shape() == Shape{2, 5, test::kTinyHidden});
    for (double v : values(y)) REQUIRE(std::isfinite(v));
  }
}

TEST_CASE("every mixer: gradients of the input and the lower bound match finite differences", "[nn][gradcheck]") {
  for (const auto& kind : test::mixer_kinds()) {
    INFO(kind);
    Generator gen(2);
    auto m = test::tiny_mixer(kind, gen);
    const bool has_lb = kind == "hgrn" || kind == "hgrn2";
    std::vector<Tensor> inputs = {Tensor::randn({1, 4, test::kTinyHidden}, gen, DType::f64)};
    if (has_lb) inputs.push_back(Tensor::rand({test::kTinyHidden}, gen, DType::f64, 0.2, 0.6));
    auto r = gradcheck([&](const std::vector<Var>& in) {
      return m->forward(in[0], nullptr, has_lb ? in[1] : Var());
    }, inputs);
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("every mixer: parameter gradients match finite differences", "[nn][gradcheck]") {
  for (const auto& kind : test::mixer_kinds()) {
    INFO(kind);
    Generator gen(3);
    auto m = test::tiny_mixer(kind, gen);
    const Var lb = test::tiny_lower_bound(kind, gen);
    const Var x(Tensor::randn({1, 4, test::kTinyHidden}, gen, DType::f64));
    const Tensor w = Tensor::randn({1, 4, test::kTinyHidden}, gen, DType::f64);
    auto objective = [&] { return sum(m->forward(x, nullptr, lb) * Var(w)); };
    objective().backward();
    for (auto& [name, p] : m->named_parameters()) {
      INFO(name);
      const std::vector<double> analytic = values(p.grad());
      // Three elements per parameter (first, middle, last), central differences.
      for (int64_t i : {int64_t(0), p.numel() / 2, p.numel() - 1}) {
        double* e = p.mutable_data().data<double>() + i;
        const double saved = *e, h = 1e-6;
        NoGradGuard ng;
        *e = saved + h;
        const double up = objective().item();
        *e = saved - h;
        const double down = objective().item();
        *e = saved;
        const double numeric = (up - down) / (2 * h);
        CHECK(analytic[i] == Approx(numeric).margin(1e-7).epsilon(1e-5));
      }
    }
  }
}

namespace {
// y of the whole sequence vs. the same sequence fed in pieces of the given lengths, carrying the state.
void check_decoding(const std::string& kind, int64_t T, const std::vector<int64_t>& pieces) {
  Generator gen(4);
  auto m = test::tiny_mixer(kind, gen);
  const Var lb = test::tiny_lower_bound(kind, gen);
  const Var x(Tensor::randn({2, T, test::kTinyHidden}, gen, DType::f64));
  const Var full = m->forward(x, nullptr, lb);
  MixerState st;
  std::vector<Var> outs;
  int64_t t = 0;
  for (int64_t n : pieces) {
    outs.push_back(m->forward(slice(x, 1, t, t + n), &st, lb));
    t += n;
  }
  REQUIRE(t == T);
  REQUIRE_CLOSE(kind, values(full), values(concat(outs, 1)), 1e-10);
}
}  // namespace

TEST_CASE("every mixer: token-by-token decoding equals the full forward", "[nn]") {
  for (const auto& kind : test::mixer_kinds()) {
    INFO(kind);
    check_decoding(kind, 7, std::vector<int64_t>(7, 1));
  }
}

TEST_CASE("every mixer: a prompt then single tokens equals the full forward", "[nn]") {
  for (const auto& kind : test::mixer_kinds()) {
    INFO(kind);
    check_decoding(kind, 8, {5, 1, 2});
  }
}

TEST_CASE("chunked full forward (T > 64) equals recurrent decoding", "[nn]") {
  for (const std::string kind :
       {"gla", "delta_net", "gated_deltanet", "hgrn", "gla_options", "gated_deltanet_gva"}) {
    INFO(kind);
    check_decoding(kind, 70, {66, 1, 3});
  }
}

// The block's path: the norm fused into the input projections (one node keeping x) must give
// forward(norm.forward(x)) exactly up to f64 rounding: the output and the gradients of x, the
// norm's weight and every mixer parameter; and with a state, a prompt then tokens.
TEST_CASE("every mixer: forward_normed(x, norm) equals forward(norm(x)), values and gradients", "[nn]") {
  for (const auto& kind : test::mixer_kinds()) {
    INFO(kind);
    Generator gen(5);
    auto m = test::tiny_mixer(kind, gen);
    const Var lb = test::tiny_lower_bound(kind, gen);
    RMSNorm norm(test::kTinyHidden, 1e-5);
    norm.weight.mutable_data() = Tensor::rand({test::kTinyHidden}, gen, DType::f64, 0.5, 1.5);
    const int64_t T = 9;
    const Tensor x_val = Tensor::randn({2, T, test::kTinyHidden}, gen, DType::f64);
    const Tensor w = Tensor::randn({2, T, test::kTinyHidden}, gen, DType::f64);

    // {y, dx, d norm.weight, d params...} of one path
    auto run = [&](bool fused) {
      for (auto& [name, p] : m->named_parameters()) p.zero_grad();
      norm.weight.zero_grad();
      const Var x(x_val, /*requires_grad=*/true);
      const Var y = fused ? m->forward_normed(x, norm, nullptr, lb)
                          : m->forward(norm.forward(x), nullptr, lb);
      sum(y * Var(w)).backward();
      std::vector<std::vector<double>> out{values(y), values(x.grad()), values(norm.weight.grad())};
      for (auto& [name, p] : m->named_parameters()) out.push_back(values(p.grad()));
      return out;
    };
    const auto ref = run(false), fused = run(true);
    std::vector<std::string> names{"y", "dx", "d norm.weight"};
    for (auto& [name, p] : m->named_parameters()) names.push_back("d " + name);
    REQUIRE(ref.size() == names.size());
    for (size_t i = 0; i < names.size(); ++i) REQUIRE_CLOSE(names[i], ref[i], fused[i], 1e-12);

    MixerState st;
    const Var x(x_val);
    std::vector<Var> pieces;
    for (auto [t0, t1] : {std::pair<int64_t, int64_t>{0, 6}, {6, 7}, {7, 9}})
      pieces.push_back(m->forward_normed(slice(x, 1, t0, t1), norm, &st, lb));
    REQUIRE_CLOSE(kind + " decoding", ref[0], values(concat(pieces, 1)), 1e-10);
  }
}
