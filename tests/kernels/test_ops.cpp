// Forward values of the tensor kernels against independent double-precision loops, in f32 and
// f64, on contiguous and strided inputs; and their errors.
#include <catch2/catch.hpp>
#include <cmath>

#include "kernels/ops.h"
#include "tests/helpers/close.h"

using namespace hla;
using namespace hla::ops;

namespace {
Generator gen(77);
std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }
}  // namespace

TEST_CASE("matmul matches naive loops (2-D, batched, broadcast, transposed)", "[kernels]") {
  for (DType dt : {DType::f64, DType::f32}) {
    const double tol = dt == DType::f64 ? 1e-13 : 1e-6;
    const Tensor a = Tensor::randn({2, 1, 5, 7}, gen, dt), b = Tensor::randn({3, 7, 4}, gen, dt);
    const Tensor c = matmul(a, b);
    REQUIRE(c.shape() == Shape{2, 3, 5, 4});
    std::vector<double> ref;
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 3; ++j)
        for (int64_t m = 0; m < 5; ++m)
          for (int64_t n = 0; n < 4; ++n) {
            double s = 0;
            for (int64_t k = 0; k < 7; ++k) s += a.at({i, 0, m, k}) * b.at({j, k, n});
            ref.push_back(s);
          }
    REQUIRE_CLOSE("matmul", ref, vals(c), tol);
    // Transposed operands are read in place and give the same product as their copies.
    const Tensor at = Tensor::randn({6, 5}, gen, dt).transpose(0, 1);
    const Tensor bt = Tensor::randn({3, 6}, gen, dt).transpose(0, 1);
    REQUIRE_CLOSE("matmul^T", vals(matmul(at.contiguous(), bt.contiguous())), vals(matmul(at, bt)), tol);
    // A sliced (non-unit outer stride) operand.
    const Tensor big = Tensor::randn({5, 9}, gen, dt);
    const Tensor sl = big.slice(1, 2, 8);
    REQUIRE_CLOSE("matmul slice", vals(matmul(sl.contiguous(), bt)), vals(matmul(sl, bt)), tol);
  }
}

TEST_CASE("matmul_acc adds the product into c (transposed operands; errors)", "[kernels]") {
  for (DType dt : {DType::f64, DType::f32}) {
    const double tol = dt == DType::f64 ? 1e-13 : 1e-6;
    const Tensor a = Tensor::randn({9, 5}, gen, dt).transpose(0, 1);  // [5, 9], column-major
    const Tensor b = Tensor::randn({9, 4}, gen, dt);
    const Tensor c0 = Tensor::randn({5, 4}, gen, dt);
    Tensor c = c0.clone();
    matmul_acc(c, a, b);
    matmul_acc(c, a, b);
    std::vector<double> ref;
    for (int64_t m = 0; m < 5; ++m)
      for (int64_t n = 0; n < 4; ++n) {
        double s = 0;
        for (int64_t k = 0; k < 9; ++k) s += a.at({m, k}) * b.at({k, n});
        ref.push_back(c0.at({m, n}) + 2 * s);
      }
    REQUIRE_CLOSE("matmul_acc", ref, vals(c), tol);
    Tensor wrong = Tensor::zeros({4, 5}, dt);
    REQUIRE_THROWS_AS(matmul_acc(wrong, a, b), Error);
    Tensor strided = Tensor::zeros({4, 5}, dt).transpose(0, 1);
    REQUIRE_THROWS_AS(matmul_acc(strided, a, b), Error);
  }
  Tensor c64 = Tensor::zeros({2, 2}, DType::f64);
  REQUIRE_THROWS_AS(matmul_acc(c64, Tensor::ones({2, 3}), Tensor::ones({3, 2})), Error);
}

TEST_CASE("broadcasting binary ops and reductions", "[kernels]") {
  const Tensor a = Tensor::from_values({1, 2, 3, 4, 5, 6}, {2, 3}, DType::f64);
  const Tensor b = Tensor::from_values({10, 20, 30}, {3}, DType::f64);
  CHECK(vals(binary(Binary::Add, a, b)) == std::vector<double>{11, 22, 33, 14, 25, 36});
  CHECK(vals(binary(Binary::Sub, b, a)) == std::vector<double>{9, 18, 27, 6, 15, 24});
  CHECK(vals(binary(Binary::Mul, a.transpose(0, 1), Tensor::from_values({1, -1}, {2}, DType::f64))) ==
        std::vector<double>{1, -4, 2, -5, 3, -6});
  CHECK(vals(binary(Binary::Gt, a, Tensor::scalar(3, DType::f64))) == std::vector<double>{0, 0, 0, 1, 1, 1});
  CHECK(vals(sum(a, {0})) == std::vector<double>{5, 7, 9});
  CHECK(vals(sum(a, {1}, true)) == std::vector<double>{6, 15});
  CHECK(sum(a, {1}, true).shape() == Shape{2, 1});
  CHECK(sum_all(a).item() == 21);
  CHECK(vals(max(a, {0})) == std::vector<double>{4, 5, 6});
  CHECK(vals(sum_to(Tensor::ones({4, 2, 3}, DType::f64), {2, 1})) == std::vector<double>{12, 12});
  CHECK(vals(where(Tensor::from_values({1, 0, 1}, {3}, DType::f64), a, b)) ==
        std::vector<double>{1, 20, 3, 4, 20, 6});
  CHECK(unary(Unary::Sigmoid, Tensor::from_values({-800, 800}, {2})).to_vector<float>() ==
        std::vector<float>{0, 1});  // no NaN at the tails
}

TEST_CASE("silu, softplus, logsigmoid: direct formulas, and finite on both tails", "[kernels]") {
  const std::vector<double> xs{-7.5, -1.25, -1e-3, 0, 2e-3, 0.75, 9};
  const Tensor x = Tensor::from_values(xs, {7}, DType::f64);
  const std::vector<double> silu = vals(unary(Unary::Silu, x)),
                            sp = vals(unary(Unary::Softplus, x)),
                            ls = vals(unary(Unary::LogSigmoid, x));
  for (size_t i = 0; i < xs.size(); ++i) {
    const long double v = xs[i], s = 1.0L / (1.0L + std::exp(-v));
    CHECK(silu[i] == Approx(double(v * s)).epsilon(1e-14).margin(1e-300));
    CHECK(sp[i] == Approx(double(std::log1p(std::exp(v)))).epsilon(1e-14));
    CHECK(ls[i] == Approx(double(std::log(s))).epsilon(1e-14));
  }
  // where the naive forms overflow (e^800) or lose everything (log(1 - 1))
  const Tensor tails = Tensor::from_values({-800, 800}, {2});
  CHECK(unary(Unary::Softplus, tails).to_vector<float>() == std::vector<float>{0, 800});
  CHECK(unary(Unary::LogSigmoid, tails).to_vector<float>() == std::vector<float>{-800, 0});
  CHECK(unary(Unary::Silu, tails).to_vector<float>() == std::vector<float>{0, 800});
}

TEST_CASE("softmax, log_softmax and cross-entropy against direct formulas", "[kernels]") {
  for (DType dt : {DType::f64, DType::f32}) {
    const double tol = dt == DType::f64 ? 1e-14 : 1e-6;
    const Tensor x = Tensor::randn({4, 9}, gen, dt, 0, 3);
    std::vector<double> sm, lsm;
    for (int64_t r = 0; r < 4; ++r) {
      double s = 0;
      for (int64_t c = 0; c < 9; ++c) s += std::exp(x.at({r, c}));
      for (int64_t c = 0; c < 9; ++c) {
        sm.push_back(std::exp(x.at({r, c})) / s);
        lsm.push_back(x.at({r, c}) - std::log(s));
      }
    }
    REQUIRE_CLOSE("softmax", sm, vals(softmax(x)), tol);
    REQUIRE_CLOSE("log_softmax", lsm, vals(log_softmax(x)), tol);
    const Tensor t = Tensor::from_vector<int64_t>({3, -100, 8, 0}, {4});
    Tensor lse;
    const double ce = cross_entropy(x, t, -100, &lse).item();
    const double ref = -(lsm[0 * 9 + 3] + lsm[2 * 9 + 8] + lsm[3 * 9 + 0]) / 3.0;
    CHECK(ce == Approx(ref).epsilon(tol * 10));
    // Large logits do not overflow.
    const Tensor huge = Tensor::from_values({1000, 0, -1000}, {1, 3}, dt);
    CHECK(std::isfinite(cross_entropy(huge, Tensor::from_vector<int64_t>({1}, {1}), -100, nullptr).item()));
  }
  // All rows ignored: zero loss, zero gradient.
  const Tensor x = Tensor::randn({2, 3}, gen, DType::f64);
  const Tensor t = Tensor::from_vector<int64_t>({-100, -100}, {2});
  Tensor lse;
  CHECK(cross_entropy(x, t, -100, &lse).item() == 0);
  CHECK(sum_all(unary(Unary::Abs, cross_entropy_backward(x, t, -100, lse, 1.0))).item() == 0);
}

TEST_CASE("rms_norm, gated_rms_norm, swiglu and short_conv against loops", "[kernels]") {
  const Tensor x = Tensor::randn({3, 8}, gen, DType::f64), w = Tensor::randn({8}, gen, DType::f64);
  const Tensor g = Tensor::randn({3, 8}, gen, DType::f64);
  std::vector<double> rn, grn, sw;
  for (int64_t r = 0; r < 3; ++r) {
    double ss = 0;
    for (int64_t c = 0; c < 8; ++c) ss += x.at({r, c}) * x.at({r, c});
    const double rs = 1 / std::sqrt(ss / 8 + 1e-5);
    for (int64_t c = 0; c < 8; ++c) {
      const double gi = g.at({r, c}), silu = gi / (1 + std::exp(-gi));
      rn.push_back(x.at({r, c}) * rs * w.at({c}));
      grn.push_back(rn.back() * silu);
      const double a = x.at({r, c});
      sw.push_back(a / (1 + std::exp(-a)) * gi);
    }
  }
  REQUIRE_CLOSE("rms_norm", rn, vals(rms_norm(x, w, 1e-5, nullptr)), 1e-14);
  REQUIRE_CLOSE("gated_rms_norm", grn, vals(gated_rms_norm(x, g, w, 1e-5, nullptr)), 1e-14);
  REQUIRE_CLOSE("swiglu", sw, vals(swiglu(x, g)), 1e-14);

  const int64_t B = 2, T = 5, D = 3, W = 4;
  const Tensor xs = Tensor::randn({B, T, D}, gen, DType::f64), ws = Tensor::randn({D, W}, gen, DType::f64);
  const Tensor cache = Tensor::randn({B, D, W - 1}, gen, DType::f64);
  std::vector<double> ref;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < D; ++c) {
        double s = 0;
        for (int64_t j = 0; j < W; ++j) {
          const int64_t p = t - (W - 1) + j;
          s += ws.at({c, j}) * (p >= 0 ? xs.at({b, p, c}) : cache.at({b, c, W - 1 + p}));
        }
        ref.push_back(s);
      }
  REQUIRE_CLOSE("short_conv", ref, vals(short_conv(xs, ws, false, cache)), 1e-14);
  // Running T tokens equals running the first 2 and then the rest from the carried inputs.
  const Tensor full = short_conv(xs, ws, true, Tensor());
  const Tensor first = short_conv(xs.narrow(1, 0, 2), ws, true, Tensor());
  Tensor carried = Tensor::zeros({B, D, W - 1}, DType::f64);
  carried.narrow(2, 1, 2).copy_(xs.narrow(1, 0, 2).permute({0, 2, 1}));
  const Tensor rest = short_conv(xs.narrow(1, 2, T - 2), ws, true, carried);
  REQUIRE_CLOSE("short_conv carry", vals(full), vals(concat({first, rest}, 1)), 1e-14);
}

// A node that recomputes the forward's output for a product's gradient asks the backward for it
// (autograd/functions/projected_rows.h): it must be the forward's bit for bit, and asking for it
// must leave the gradients as they were.
TEST_CASE("rms_norm, gated_rms_norm and swiglu backwards recompute y bit for bit", "[kernels]") {
  for (DType dt : {DType::f32, DType::f64}) {
    INFO(dtype_name(dt));
    const Tensor x = Tensor::randn({4, 3, 20}, gen, dt), g = Tensor::randn({4, 3, 20}, gen, dt);
    const Tensor w = Tensor::rand({20}, gen, dt, 0.5, 1.5), dy = Tensor::randn({4, 3, 20}, gen, dt);
    Tensor rstd, dx, dw, dg, y, dx2, dw2, dg2;
    const Tensor n = rms_norm(x, w, 1e-6, &rstd);
    rms_norm_backward(x, w, rstd, dy, &dx, &dw);
    rms_norm_backward(x, w, rstd, dy, &dx2, &dw2, &y);
    CHECK(vals(y) == vals(n));
    CHECK(vals(dx2) == vals(dx));
    CHECK(vals(dw2) == vals(dw));
    const Tensor gn = gated_rms_norm(x, g, w, 1e-6, &rstd);
    gated_rms_norm_backward(x, g, w, rstd, dy, &dx, &dg, &dw);
    gated_rms_norm_backward(x, g, w, rstd, dy, &dx2, &dg2, &dw2, &y);
    CHECK(vals(y) == vals(gn));
    CHECK(vals(dx2) == vals(dx));
    CHECK(vals(dg2) == vals(dg));
    CHECK(vals(dw2) == vals(dw));
    const Tensor a = Tensor::randn({4, 3, 20}, gen, dt, 0.0, 4.0);
    const Tensor s = swiglu(a, g);
    swiglu_backward(a, g, dy, &dx, &dg);
    swiglu_backward(a, g, dy, &dx2, &dg2, &y);
    CHECK(vals(y) == vals(s));
    CHECK(vals(dx2) == vals(dx));
    CHECK(vals(dg2) == vals(dg));
  }
  Tensor da, db;
  CHECK_THROWS_WITH(swiglu_backward(Tensor::zeros({2, 3}), Tensor::zeros({3, 2}),
                                    Tensor::zeros({2, 3}), &da, &db),
                    Catch::Contains("swiglu_backward"));
}

TEST_CASE("index ops", "[kernels]") {
  const Tensor x = Tensor::arange(0, 12, 1, DType::f64).reshape({4, 3});
  const Tensor idx = Tensor::from_vector<int32_t>({3, 0, 3}, {3});
  CHECK(vals(index_select(x, 0, idx)) == std::vector<double>{9, 10, 11, 0, 1, 2, 9, 10, 11});
  CHECK(vals(index_add({4, 1}, 0, idx, Tensor::ones({3, 1}, DType::f64))) == std::vector<double>{1, 0, 0, 2});
  const Tensor gi = Tensor::from_vector<int64_t>({2, 0, 1, 1}, {4, 1});
  CHECK(vals(gather(x, 1, gi)) == std::vector<double>{2, 3, 7, 10});
  CHECK(vals(concat({x.narrow(0, 0, 1), x.narrow(0, 3, 1)}, 0)) == std::vector<double>{0, 1, 2, 9, 10, 11});
}

TEST_CASE("kernel misuse throws hla::Error", "[kernels][errors]") {
  const Tensor a = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH(matmul(a, a), Catch::Contains("inner dimensions"));
  CHECK_THROWS_WITH(matmul(a, Tensor::zeros({3, 2}, DType::f64)), Catch::Contains("one dtype"));
  CHECK_THROWS_WITH(unary(Unary::Exp, Tensor::zeros({2}, DType::i64)), Catch::Contains("f32 or f64"));
  CHECK_THROWS_WITH(unary(Unary::Exp, Tensor::zeros({2}, DType::bf16)), Catch::Contains("storage type"));
  CHECK_THROWS_WITH(index_select(a, 0, Tensor::from_vector<int64_t>({5}, {1})), Catch::Contains("[0, 2)"));
  CHECK_THROWS_WITH(cross_entropy(a, Tensor::from_vector<int64_t>({0, 7}, {2}), -100, nullptr),
                    Catch::Contains("target ids") && Catch::Contains("hint"));
  CHECK_THROWS_WITH(rms_norm(a, Tensor::ones({2}), 1e-5, nullptr), Catch::Contains("weight must be [D]=[3]"));
  CHECK_THROWS_WITH(short_conv(a, Tensor::ones({3, 4}), false, Tensor()), Catch::Contains("[B,T,D]"));
}
