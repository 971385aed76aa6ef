// Elementwise CUDA kernels against the CPU path: unary and scalar maps, broadcasting binary ops,
// where and add_, on contiguous, transposed, sliced and broadcast inputs, in f32 and f64.
#include "tests/cuda/cuda_test_helpers.h"

using namespace hla;
using namespace hla::ops;
using namespace hla::cuda_test;

TEST_CASE("cuda unary and scalar maps match the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(11);
  // clang-format off
  const std::vector<std::pair<Unary, const char*>> ops_list = {
      {Unary::Neg, "neg"},         {Unary::Exp, "exp"},           {Unary::Log, "log"},
      {Unary::Sqrt, "sqrt"},       {Unary::Rsqrt, "rsqrt"},       {Unary::Sigmoid, "sigmoid"},
      {Unary::Tanh, "tanh"},       {Unary::Abs, "abs"},           {Unary::Relu, "relu"},
      {Unary::Log1p, "log1p"},     {Unary::Step, "step"},         {Unary::Sign, "sign"},
      {Unary::Square, "square"},   {Unary::Reciprocal, "reciprocal"}, {Unary::Sin, "sin"},
      {Unary::Cos, "cos"},         {Unary::Silu, "silu"},         {Unary::Softplus, "softplus"},
      {Unary::LogSigmoid, "logsigmoid"}};
  // clang-format on
  for (DType dt : {DType::f32, DType::f64}) {
    // Positive inputs (log, sqrt, ...) of a ragged shape, and a transposed view of them.
    const Tensor pos = Tensor::rand({37, 65}, gen, dt, 0.1, 3.0);
    const Tensor sgn = Tensor::randn({37, 65}, gen, dt, 0.0, 3.0);
    for (const auto& [op, name] : ops_list) {
      const bool needs_pos = op == Unary::Log || op == Unary::Sqrt || op == Unary::Rsqrt ||
                             op == Unary::Log1p || op == Unary::Reciprocal;
      const Tensor x = needs_pos ? pos : sgn;
      INFO(name << " " << dtype_name(dt));
      REQUIRE_CLOSE(name, vals(unary(op, x)), vals(unary(op, gpu(x))), tol(dt));
      const Tensor xt = x.transpose(0, 1);
      REQUIRE_CLOSE(name, vals(unary(op, xt)), vals(unary(op, gpu(x).transpose(0, 1))), tol(dt));
    }
    // Extreme inputs for the stable sigmoid.
    const Tensor ext = Tensor::from_values({-300, -30, 0, 30, 300}, {5}, dt);
    for (Unary op : {Unary::Sigmoid, Unary::Silu, Unary::Softplus, Unary::LogSigmoid})
      REQUIRE_CLOSE("stable tails (+-300)", vals(unary(op, ext)), vals(unary(op, gpu(ext))),
                    tol(dt));
    const Tensor sl = pos.slice(1, 3, 60, 4);
    REQUIRE_CLOSE("pow", vals(pow_scalar(sl, 1.7)), vals(pow_scalar(gpu(pos).slice(1, 3, 60, 4), 1.7)), tol(dt));
    REQUIRE_CLOSE("add_scalar", vals(add_scalar(sgn, -0.25)), vals(add_scalar(gpu(sgn), -0.25)), tol(dt));
    REQUIRE_CLOSE("mul_scalar", vals(mul_scalar(sgn, 3.5)), vals(mul_scalar(gpu(sgn), 3.5)), tol(dt));
  }
  // An empty tensor maps to an empty tensor.
  CHECK(unary(Unary::Exp, gpu(Tensor::zeros({0, 3}))).shape() == Shape{0, 3});
}

TEST_CASE("cuda binary ops broadcast like the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(12);
  const std::vector<std::pair<Binary, const char*>> ops_list = {
      {Binary::Add, "add"}, {Binary::Sub, "sub"},         {Binary::Mul, "mul"},
      {Binary::Div, "div"}, {Binary::Maximum, "maximum"}, {Binary::Minimum, "minimum"},
      {Binary::Eq, "eq"},   {Binary::Gt, "gt"},           {Binary::Ge, "ge"},
      {Binary::SiluBackward, "silu_backward"}};
  for (DType dt : {DType::f32, DType::f64}) {
    const Tensor a = Tensor::randn({3, 1, 5}, gen, dt);
    const Tensor b = Tensor::rand({4, 1}, gen, dt, 0.5, 2.0);
    const Tensor big = Tensor::randn({7, 4, 9}, gen, dt);  // transposed below
    const Tensor same = Tensor::randn({9, 4, 7}, gen, dt);
    for (const auto& [op, name] : ops_list) {
      INFO(name << " " << dtype_name(dt));
      const Tensor c = binary(op, a, b), g = binary(op, gpu(a), gpu(b));
      REQUIRE(g.shape() == Shape{3, 4, 5});
      REQUIRE_CLOSE(name, vals(c), vals(g), tol(dt));
      // Non-contiguous operand of the full shape and a 0-dim scalar.
      const Tensor bt = big.transpose(0, 2);
      REQUIRE_CLOSE(name, vals(binary(op, bt, same)),
                    vals(binary(op, gpu(big).transpose(0, 2), gpu(same))), tol(dt));
      const Tensor s = Tensor::scalar(0.75, dt);
      REQUIRE_CLOSE(name, vals(binary(op, same, s)), vals(binary(op, gpu(same), gpu(s))), tol(dt));
      // Same-shape contiguous operands (the pack kernel), whole and from element 1 (unaligned).
      const Tensor other = Tensor::rand({9, 4, 7}, gen, dt, 0.5, 2.0);
      REQUIRE_CLOSE(name, vals(binary(op, same, other)), vals(binary(op, gpu(same), gpu(other))),
                    tol(dt));
      const Tensor fs = same.reshape({252}).slice(0, 1, 252),
                   fo = other.reshape({252}).slice(0, 1, 252);
      REQUIRE_CLOSE(name, vals(binary(op, fs, fo)),
                    vals(binary(op, gpu(same).reshape({252}).slice(0, 1, 252),
                                gpu(other).reshape({252}).slice(0, 1, 252))),
                    tol(dt));
      // b repeated over a's rows (a bias: the rows pack kernel), [8], [5, 8] and [1, 5, 8] over
      // [6, 5, 8]; rows of 5 (not whole packs) take the scalar kernel.
      const Tensor rows = Tensor::randn({6, 5, 8}, gen, dt);
      for (const Shape& bs : {Shape{8}, Shape{5, 8}, Shape{1, 5, 8}}) {
        const Tensor bias = Tensor::rand(bs, gen, dt, 0.5, 2.0);
        REQUIRE_CLOSE(name, vals(binary(op, rows, bias)), vals(binary(op, gpu(rows), gpu(bias))),
                      tol(dt));
      }
      const Tensor odd = Tensor::randn({3, 5}, gen, dt), row5 = Tensor::rand({5}, gen, dt, 0.5, 2.0);
      REQUIRE_CLOSE(name, vals(binary(op, odd, row5)), vals(binary(op, gpu(odd), gpu(row5))),
                    tol(dt));
    }
    // Eq on identical values is exactly 1.
    CHECK(vals(binary(Binary::Eq, gpu(a), gpu(a))) == std::vector<double>(15, 1.0));
  }
  // A 0-dim CPU tensor is a scalar operand; a CPU tensor of rank >= 1 is a device mix.
  const Tensor x = Tensor::randn({4, 3}, gen);
  REQUIRE_CLOSE("x * cpu scalar", vals(binary(Binary::Mul, x, Tensor::scalar(2.0))),
                vals(binary(Binary::Mul, gpu(x), Tensor::scalar(2.0))), kF32);
  REQUIRE_THROWS_AS(binary(Binary::Mul, gpu(x), Tensor::ones({1})), Error);
  REQUIRE_THROWS_AS(binary(Binary::Add, gpu(Tensor::ones({3})), gpu(Tensor::ones({4}))), Error);
  REQUIRE_THROWS_AS(binary(Binary::Add, gpu(Tensor::ones({3})),
                           gpu(Tensor::ones({3}, DType::f64))), Error);
}

TEST_CASE("cuda where and add_ match the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(13);
  for (DType dt : {DType::f32, DType::f64}) {
    const Tensor cond = binary(Binary::Gt, Tensor::randn({6, 1}, gen, dt), Tensor::scalar(0.0, dt));
    const Tensor a = Tensor::randn({6, 8}, gen, dt), b = Tensor::randn({8}, gen, dt);
    REQUIRE_CLOSE("where", vals(where(cond, a, b)), vals(where(gpu(cond), gpu(a), gpu(b))), tol(dt));
    const Tensor zero = Tensor::zeros({}, dt);  // CPU scalar, as autograd's where rule passes it
    REQUIRE_CLOSE("where(cpu scalar)", vals(where(cond, a, zero)), vals(where(gpu(cond), gpu(a), zero)), tol(dt));
    // A mask of another dtype is accepted.
    const Tensor cond64 = cond.to(DType::i64);
    REQUIRE_CLOSE("where(i64 mask)", vals(where(cond64, a, b)),
                  vals(where(gpu(cond64), gpu(a), gpu(b))), tol(dt));
    Tensor acc_c = a.clone(), acc_g = gpu(a);
    add_(acc_c, b);
    add_(acc_g, gpu(b));
    REQUIRE_CLOSE("add_ (broadcast)", vals(acc_c), vals(acc_g), tol(dt));
    const Tensor bt = Tensor::randn({8, 6}, gen, dt);
    add_(acc_c, bt.transpose(0, 1));
    add_(acc_g, gpu(bt).transpose(0, 1));
    REQUIRE_CLOSE("add_ (transposed)", vals(acc_c), vals(acc_g), tol(dt));
    add_(acc_c, a);  // same shape, contiguous: the pack kernel
    add_(acc_g, gpu(a));
    REQUIRE_CLOSE("add_ (same shape)", vals(acc_c), vals(acc_g), tol(dt));
  }
}
