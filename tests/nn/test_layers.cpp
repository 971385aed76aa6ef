// Building blocks: Linear, RMSNorm, ShortConvolution (with its decoding cache), SwiGLU MLP sizes
// and its fused down projection,
// rotary embedding, the HGRN lower-bound schedule.
#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>

#include "autograd/fused.h"
#include "autograd/gradcheck.h"
#include "autograd/primitives.h"
#include "kernels/ops.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/mixers/hgrn.h"
#include "nn/mlp.h"
#include "nn/norm.h"
#include "nn/rotary.h"
#include "nn/short_conv.h"
#include "nn_helpers.h"
#include "tests/helpers/close.h"

using namespace hla;
using namespace hla::nn;
using hla::test::values;

namespace {
// A fused layer against the ops it replaces: run(false) builds the composed ops, run(true) the
// fused node; both take dy, and y and the gradient of every named leaf must be equal exactly (the
// same kernels and GEMMs) and present.
using NamedLeaves = std::vector<std::pair<std::string, Var>>;
void require_fused_equal(const NamedLeaves& leaves, const std::function<Var(bool)>& run,
                         const Tensor& dy) {
  std::vector<std::vector<double>> got[2];
  for (int fused = 0; fused < 2; ++fused) {
    const Var y = run(fused == 1);
    y.backward(dy);
    got[fused].push_back(values(y));
    for (const auto& [name, l] : leaves) {
      INFO(name);
      REQUIRE(l.grad().defined());
      got[fused].push_back(values(Var(l.grad())));
      l.zero_grad();
    }
  }
  REQUIRE_CLOSE("y", got[0][0], got[1][0], 0.0);
  for (size_t i = 0; i < leaves.size(); ++i)
    REQUIRE_CLOSE(leaves[i].first, got[0][i + 1], got[1][i + 1], 0.0);
}
}  // namespace

TEST_CASE("Linear computes x W^T + b with W [out, in]", "[nn]") {
  Generator gen(0);
  Linear lin(3, 2, true, gen);
  lin.to(DType::f64);
  lin.weight.mutable_data().copy_(Tensor::from_values({1, 2, 3, 4, 5, 6}, {2, 3}, DType::f64));
  lin.bias.mutable_data().copy_(Tensor::from_values({10, 20}, {2}, DType::f64));
  const Var x(Tensor::from_values({1, 0, -1, 2, 1, 0}, {1, 2, 3}, DType::f64));
  const Var y = lin.forward(x);
  CHECK(y.shape() == Shape{1, 2, 2});
  CHECK(values(y) == std::vector<double>{8, 18, 14, 33});
  CHECK(lin.named_parameters()[1].first == "bias");
}

TEST_CASE("RMSNorm weights start at 1; gated norm multiplies by silu(g)", "[nn]") {
  Generator gen(0);
  RMSNorm n(4, 1e-6);
  n.to(DType::f64);
  const Var x(Tensor::from_values({1, 2, 3, 4}, {1, 4}, DType::f64));
  const double rms = std::sqrt((1 + 4 + 9 + 16) / 4.0 + 1e-6);
  REQUIRE_CLOSE("rms", (std::vector<double>{1 / rms, 2 / rms, 3 / rms, 4 / rms}), values(n.forward(x)), 1e-12);
  GatedRMSNorm gn(4, 1e-6);
  gn.to(DType::f64);
  const Var g(Tensor::from_values({0, 1, -1, 2}, {1, 4}, DType::f64));
  std::vector<double> expect;
  for (int i = 0; i < 4; ++i) {
    const double gv = g.data().at({0, i});
    expect.push_back((i + 1) / rms * gv / (1 + std::exp(-gv)));
  }
  REQUIRE_CLOSE("gated", expect, values(gn.forward(x, g)), 1e-12);
}

TEST_CASE("ShortConvolution: fla weight layout, causal, cache carries across calls", "[nn]") {
  Generator gen(1);
  ShortConvolution conv(3, 4, true, gen);
  conv.to(DType::f64);
  CHECK(conv.weight.shape() == Shape{3, 1, 4});
  const Var x(Tensor::randn({2, 6, 3}, gen, DType::f64));
  const Var full = conv.forward(x);
  // Causal: output 0 depends only on input 0: w[c, W-1] x_0 then silu.
  const double w3 = conv.weight.data().at({0, 0, 3}), x0 = x.data().at({0, 0, 0});
  CHECK(full.data().at({0, 0, 0}) == Approx(w3 * x0 / (1 + std::exp(-w3 * x0))));
  Var cache, next;
  std::vector<Var> outs;
  for (auto [a, b] : {std::pair<int64_t, int64_t>{0, 2}, {2, 3}, {3, 6}}) {
    outs.push_back(conv.forward(slice(x, 1, a, b), cache, &next));
    cache = next;
    CHECK(cache.shape() == Shape{2, 3, 3});
  }
  REQUIRE_CLOSE("conv pieces", values(full), values(concat(outs, 1)), 1e-12);
}

TEST_CASE("SwiGLU MLP intermediate size follows fla's rounding", "[nn]") {
  CHECK(mlp_intermediate_size(1024, 4) == 2816);
  CHECK(mlp_intermediate_size(1024, 2) == 1536);
  CHECK(mlp_intermediate_size(2048, 4) == 5632);
  Generator gen(0);
  GatedMLP mlp(8, 256, gen);
  CHECK(mlp.named_parameters()[0].first == "gate_proj.weight");
  CHECK(mlp.up_proj->weight.shape() == Shape{256, 8});
  CHECK(mlp.down_proj->weight.shape() == Shape{8, 256});
}

// The MLP's down projection runs as swiglu_linear (the SwiGLU product recomputed in the
// backward): the same GEMMs as down_proj(swiglu(gate, up)), so values and gradients agree exactly.
TEST_CASE("swiglu_linear equals Linear(swiglu(a, b)), values and gradients", "[nn]") {
  Generator gen(6);
  GatedMLP mlp(6, 20, gen);
  for (Linear* l : {mlp.gate_proj.get(), mlp.up_proj.get(), mlp.down_proj.get()})
    l->weight.mutable_data() = l->weight.data().to(DType::f64);
  const Var x(Tensor::randn({2, 3, 6}, gen, DType::f64), true);
  const Tensor dy = Tensor::randn({2, 3, 6}, gen, DType::f64);
  NamedLeaves leaves{{"dx", x}};
  for (auto& [name, p] : mlp.named_parameters()) leaves.push_back({"d" + name, p});
  require_fused_equal(
      leaves,
      [&](bool fused) {
        if (fused) return mlp.forward(x);
        return mlp.down_proj->forward(swiglu(mlp.gate_proj->forward(x), mlp.up_proj->forward(x)));
      },
      dy);
  auto gc = gradcheck(
      [](const std::vector<Var>& in) { return swiglu_linear(in[0], in[1], in[2]); },
      {Tensor::randn({2, 3, 5}, gen, DType::f64, 0.0, 2.0),
       Tensor::randn({2, 3, 5}, gen, DType::f64), Tensor::randn({4, 5}, gen, DType::f64)});
  INFO(gc.report);
  CHECK(gc.ok);
  const Var w(Tensor::zeros({4, 5}, DType::f64));
  REQUIRE_THROWS_WITH(swiglu_linear(Var(Tensor::zeros({2, 6}, DType::f64)),
                                    Var(Tensor::zeros({2, 6}, DType::f64)), w),
                      Catch::Contains("swiglu_linear"));
}

// The mixers' output norm and o_proj run as forward_projected (the normed heads recomputed in the
// backward): the same kernels and GEMMs as proj.forward(merge_heads(norm.forward(...))), so
// values and gradients agree exactly; per-head [B,T,H,D] inputs and a projection with a bias.
TEST_CASE("forward_projected equals the norm then the projection, values and gradients", "[nn]") {
  Generator gen(7);
  const int64_t B = 2, T = 3, H = 2, D = 4;
  for (bool gated : {false, true})
    for (bool bias : {false, true}) {
      INFO("gated " << gated << " bias " << bias);
      RMSNorm plain(D, 1e-5);
      GatedRMSNorm gnorm(D, 1e-5);
      Linear proj(H * D, 5, bias, gen);
      for (Var* w : {&plain.weight, &gnorm.weight, &proj.weight})
        w->mutable_data() = Tensor::randn(w->shape(), gen, DType::f64, 1.0, 0.3);
      if (bias) proj.bias.mutable_data() = Tensor::randn({5}, gen, DType::f64);
      const Var x(Tensor::randn({B, T, H, D}, gen, DType::f64), true);
      const Var g(Tensor::randn({B, T, H, D}, gen, DType::f64), true);
      const Tensor dy = Tensor::randn({B, T, 5}, gen, DType::f64);
      // the leaves that get a gradient, by name
      NamedLeaves leaves{{"dx", x}, {"dproj.weight", proj.weight}};
      if (gated) {
        leaves.push_back({"dg", g});
        leaves.push_back({"dgated_norm.weight", gnorm.weight});
      } else {
        leaves.push_back({"dnorm.weight", plain.weight});
      }
      if (bias) leaves.push_back({"dproj.bias", proj.bias});
      require_fused_equal(
          leaves,
          [&](bool fused) {
            if (fused)
              return gated ? gnorm.forward_projected(x, g, proj) : plain.forward_projected(x, proj);
            return proj.forward(merge_heads(gated ? gnorm.forward(x, g) : plain.forward(x)));
          },
          dy);
    }
  for (bool gated : {false, true}) {
    auto gc = gradcheck(
        [gated](const std::vector<Var>& in) {
          return gated ? gated_rms_norm_linear(in[0], in[1], in[2], 1e-5, in[3])
                       : rms_norm_linear(in[0], in[2], 1e-5, in[3]);
        },
        {Tensor::randn({2, 2, 3}, gen, DType::f64), Tensor::randn({2, 2, 3}, gen, DType::f64),
         Tensor::randn({3}, gen, DType::f64, 1.0, 0.3), Tensor::randn({4, 6}, gen, DType::f64)});
    INFO(gc.report);
    CHECK(gc.ok);
  }
  REQUIRE_THROWS_WITH(rms_norm_linear(Var(Tensor::zeros({2, 3, 4}, DType::f64)),
                                      Var(Tensor::ones({4}, DType::f64)), 1e-5,
                                      Var(Tensor::zeros({5, 6}, DType::f64))),
                      Catch::Contains("rms_norm_linear"));
}

// The block's pre-MLP norm and the gate / up projections as one node (GatedMLP::forward_normed):
// values and gradients equal mlp.forward(norm.forward(x)) exactly.
TEST_CASE("GatedMLP::forward_normed equals the norm then the MLP, values and gradients", "[nn]") {
  Generator gen(8);
  RMSNorm norm(6, 1e-6);
  GatedMLP mlp(6, 16, gen);
  norm.weight.mutable_data() = Tensor::randn({6}, gen, DType::f64, 1.0, 0.3);
  for (Linear* l : {mlp.gate_proj.get(), mlp.up_proj.get(), mlp.down_proj.get()})
    l->weight.mutable_data() = l->weight.data().to(DType::f64);
  const Var x(Tensor::randn({2, 3, 6}, gen, DType::f64), true);
  const Tensor dy = Tensor::randn({2, 3, 6}, gen, DType::f64);
  NamedLeaves leaves{{"dx", x}, {"dnorm.weight", norm.weight}};
  for (auto& [name, p] : mlp.named_parameters()) leaves.push_back({"d" + name, p});
  require_fused_equal(
      leaves,
      [&](bool fused) {
        return fused ? mlp.forward_normed(x, norm) : mlp.forward(norm.forward(x));
      },
      dy);
  auto gc = gradcheck(
      [](const std::vector<Var>& in) {
        const std::vector<Var> ys = rms_norm_linears(in[0], in[1], 1e-6, {in[2], in[3]});
        return ys[0] * ys[1];
      },
      {Tensor::randn({2, 4}, gen, DType::f64), Tensor::randn({4}, gen, DType::f64, 1.0, 0.3),
       Tensor::randn({3, 4}, gen, DType::f64), Tensor::randn({3, 4}, gen, DType::f64)});
  INFO(gc.report);
  CHECK(gc.ok);
  REQUIRE_THROWS_WITH(rms_norm_linears(Var(Tensor::zeros({2, 4}, DType::f64)),
                                       Var(Tensor::ones({4}, DType::f64)), 1e-6,
                                       {Var(Tensor::zeros({3, 4}, DType::f64)),
                                        Var(Tensor::zeros({3, 5}, DType::f64))}),
                      Catch::Contains("rms_norm_linear"));
}

TEST_CASE("rotary: rotate-half at position offset + t, norm-preserving, relative", "[nn]") {
  Generator gen(2);
  const Var x(Tensor::randn({1, 5, 2, 8}, gen, DType::f64));
  const Var r = apply_rotary(x, 0);
  // Position 0 is the identity.
  REQUIRE_CLOSE("p0", values(select(x, 1, 0)), values(select(r, 1, 0)), 1e-15);
  // The offset shifts positions: rope(x[t:], offset t) == rope(x)[t:].
  REQUIRE_CLOSE("offset", values(slice(r, 1, 3, 5)), values(apply_rotary(slice(x, 1, 3, 5), 3)), 1e-6);
  // Element (p=1, i=0): x1 cos(1) - x2 sin(1) with x2 the element d/2 further.
  const double a = x.data().at({0, 1, 0, 0}), b = x.data().at({0, 1, 0, 4});
  CHECK(r.data().at({0, 1, 0, 0}) == Approx(a * std::cos(1.0) - b * std::sin(1.0)).epsilon(1e-6));
  auto gr = gradcheck([](const std::vector<Var>& in) { return apply_rotary(in[0], 2); },
                      {Tensor::randn({1, 3, 1, 4}, gen, DType::f64)});
  INFO(gr.report);
  CHECK(gr.ok);
}

TEST_CASE("rotary: the fused op equals the slice / cos / sin composition, forward and backward",
          "[nn]") {
  Generator gen(3);
  // the definition written with primitives (the tables in f32, as the op computes them)
  auto composed = [](const Var& x, int64_t offset, double base) {
    const int64_t T = x.size(1), d = x.size(3), half = d / 2;
    std::vector<double> c(T * half), s(T * half);
    for (int64_t i = 0; i < half; ++i)
      for (int64_t t = 0; t < T; ++t) {
        const float theta = float(offset + t) * ops::rotary_inverse_frequency(i, d, base);
        c[t * half + i] = std::cos(theta);
        s[t * half + i] = std::sin(theta);
      }
    const Var cv(Tensor::from_values(c, {T, 1, half}, x.dtype()));
    const Var sv(Tensor::from_values(s, {T, 1, half}, x.dtype()));
    const Var x1 = slice(x, 3, 0, half), x2 = slice(x, 3, half, d);
    return concat({x1 * cv - x2 * sv, x2 * cv + x1 * sv}, 3);
  };
  struct Shape4 {
    int64_t B, T, H, d, offset;
  };
  for (const Shape4& sh :
       {Shape4{2, 7, 3, 8, 0}, Shape4{1, 130, 2, 64, 5}, Shape4{1, 3, 1, 2, 1000}}) {
    INFO("B,T,H,d " << sh.B << "," << sh.T << "," << sh.H << "," << sh.d << " offset "
                    << sh.offset);
    const Var x(Tensor::randn({sh.B, sh.T, sh.H, sh.d}, gen, DType::f64), true);
    const Tensor dy = Tensor::randn(x.shape(), gen, DType::f64);
    const Var y = apply_rotary(x, sh.offset, 500.0), ref = composed(x, sh.offset, 500.0);
    REQUIRE_CLOSE("y", values(ref), values(y), 1e-14);
    y.backward(dy);
    const std::vector<double> dx = hla::test::values(x.grad());
    x.zero_grad();
    ref.backward(dy);
    REQUIRE_CLOSE("dx", hla::test::values(x.grad()), dx, 1e-14);
  }
  // f32 against f64
  const Tensor x = Tensor::randn({2, 33, 2, 16}, gen, DType::f64);
  REQUIRE_CLOSE("f32", values(apply_rotary(Var(x), 7)),
                values(apply_rotary(Var(x.to(DType::f32)), 7)), 1e-6);
  REQUIRE_THROWS_WITH(apply_rotary(Var(Tensor::zeros({2, 3, 5}, DType::f64)), 0),
                      Catch::Contains("[B,T,H,d]"));
}

TEST_CASE("forget gates: the fused op equals logsigmoid / lower bound / 1 - exp, with gradients",
          "[nn]") {
  Generator gen(4);
  const int64_t B = 2, T = 9, D = 6;
  for (bool with_bound : {true, false}) {
    INFO("lower bound " << with_bound);
    const Var x(Tensor::randn({B, T, D}, gen, DType::f64, 0.0, 3.0), true);
    // a zero channel (layer 0's bound) among positive ones
    const Var lb =
        with_bound
            ? Var(Tensor::from_values({0.0, 0.1, 0.5, 0.9, 0.25, 0.0}, {D}, DType::f64), true)
            : Var();
    const Tensor g1 = Tensor::randn({B, T, D}, gen, DType::f64);
    const Tensor g2 = Tensor::randn({B, T, D}, gen, DType::f64);
    const auto [log_f, one_minus_f] = forget_gates(x, lb, DType::f64, DType::f64);
    Var ref_log_f = logsigmoid(x);
    if (with_bound) ref_log_f = apply_lower_bound(ref_log_f, lb);
    const Var ref_omf = one_minus(exp(ref_log_f));
    REQUIRE_CLOSE("log_f", values(ref_log_f), values(log_f), 1e-14);
    REQUIRE_CLOSE("1 - f", values(ref_omf), values(one_minus_f), 1e-14);
    hla::backward({log_f, one_minus_f}, {g1, g2}, false);
    const std::vector<double> dx = values(Var(x.grad()));
    const std::vector<double> dlb = with_bound ? values(Var(lb.grad())) : std::vector<double>{};
    x.zero_grad();
    if (with_bound) lb.zero_grad();
    hla::backward({ref_log_f, ref_omf}, {g1, g2}, false);
    REQUIRE_CLOSE("dx", values(Var(x.grad())), dx, 1e-12);
    if (with_bound) REQUIRE_CLOSE("dlb", values(Var(lb.grad())), dlb, 1e-12);
    // only one output used
    auto only_log = gradcheck(
        [&](const std::vector<Var>& in) {
          return forget_gates(in[0], in[1], DType::f64, DType::f64).log_f;
        },
        {Tensor::randn({2, 3, 2}, gen, DType::f64),
         Tensor::from_values({0.3, 0.0}, {2}, DType::f64)});
    INFO(only_log.report);
    CHECK(only_log.ok);
  }
  REQUIRE_THROWS_WITH(forget_gates(Var(Tensor::zeros({2, 3}, DType::f64)),
                                   Var(Tensor::zeros({4}, DType::f64)), DType::f64, DType::f64),
                      Catch::Contains("lower bound [3]"));
}

TEST_CASE("gla_gate: the fused op equals max(logsigmoid(x) / normalizer, floor), with gradients",
          "[nn]") {
  Generator gen(5);
  for (double floor : {-2.0, -std::numeric_limits<double>::infinity()}) {
    INFO("floor " << floor);
    const Var x(Tensor::randn({3, 40}, gen, DType::f64, 0.0, 40.0), true);
    const Tensor dg = Tensor::randn({3, 40}, gen, DType::f64);
    const Var g = gla_gate(x, 16.0, floor);
    Var ref = logsigmoid(x) / 16.0;
    if (floor > -std::numeric_limits<double>::infinity())
      ref = maximum(ref, Var(Tensor::full({1}, floor, DType::f64)));
    REQUIRE_CLOSE("g", values(ref), values(g), 1e-15);
    g.backward(dg);
    const std::vector<double> dx = values(Var(x.grad()));
    x.zero_grad();
    ref.backward(dg);
    REQUIRE_CLOSE("dx", values(Var(x.grad())), dx, 1e-14);
    auto gc = gradcheck([floor](const std::vector<Var>& in) { return gla_gate(in[0], 4.0, floor); },
                        {Tensor::randn({2, 5}, gen, DType::f64, 0.0, 3.0)});
    INFO(gc.report);
    CHECK(gc.ok);
  }
  REQUIRE_THROWS_WITH(gla_gate(Var(Tensor::zeros({2}, DType::f64)), 0.0, -1.0),
                      Catch::Contains("normalizer"));
  // g takes x's dtype (or f32 for bf16 x, the GPU's mixed precision): f32 x, f64 g is refused
  REQUIRE_THROWS_WITH(gla_gate(Var(Tensor::zeros({2})), 16.0, -1.0, DType::f64),
                      Catch::Contains("g of x's dtype f32"));
}

TEST_CASE("HGRN lower-bound schedule: lb_l = l/L at init, 0 for layer 0", "[nn]") {
  const Var lb = lower_bound_schedule(Var(Tensor::zeros({4, 3}, DType::f64)));
  const std::vector<double> expect = {0, 0, 0, 0.25, 0.25, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75, 0.75};
  REQUIRE_CLOSE("lb", expect, values(lb), 1e-14);
  // The floored forget gate stays in (lb, 1).
  const Var f = apply_lower_bound(Var(Tensor::full({3}, -50.0, DType::f64)),
                                  Var(Tensor::full({3}, 0.5, DType::f64)));
  CHECK(std::exp(f.data().at({0})) == Approx(0.5));
}
