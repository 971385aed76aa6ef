// linear_cross_entropy (the head and the loss over chunks of rows) against
// cross_entropy(matmul(x, W^T)) in f64: the loss and the gradients of x and W for several chunk
// sizes (one chunk, one row a chunk, a partial last chunk, a chunk with every row ignored), an
// upstream gradient other than 1, every row ignored, no grad mode, and bad inputs.
#include <catch2/catch.hpp>

#include "autograd/fused.h"
#include "autograd/grad_mode.h"
#include "autograd/primitives.h"
#include "tests/helpers/close.h"

using namespace hla;

namespace {
std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

struct Result {
  Tensor loss, dx, dw;
};
// The loss times `scale`, and the gradients of x and W.
Result run(const Tensor& x0, const Tensor& w0, const Tensor& targets, double scale,
           int64_t chunk_rows) {
  Var x(x0.clone(), true), w(w0.clone(), true);
  const Var loss = chunk_rows < 0 ? cross_entropy(matmul(x, transpose(w, 0, 1)), targets)
                                  : linear_cross_entropy(x, w, targets, kIgnoreIndex, chunk_rows);
  (loss * scale).backward();
  return {loss.data(), x.grad(), w.grad()};
}
}  // namespace

TEST_CASE("linear_cross_entropy equals cross_entropy of the logits, in any chunking",
          "[autograd]") {
  Generator gen(91);
  const int64_t N = 7, F = 5, V = 11;
  const Tensor x = Tensor::randn({N, F}, gen, DType::f64), w = Tensor::randn({V, F}, gen, DType::f64);
  // rows 0 and 1 ignored: with 2 rows a chunk the first chunk takes no loss
  const Tensor targets =
      Tensor::from_vector<int64_t>({kIgnoreIndex, kIgnoreIndex, 3, 0, 10, kIgnoreIndex, 7}, {N});
  const Result want = run(x, w, targets, 2.5, -1);
  for (int64_t chunk : {0, 1, 2, 3, 7, 50}) {
    INFO("chunk_rows " << chunk);
    const Result got = run(x, w, targets, 2.5, chunk);
    REQUIRE_CLOSE("loss", values(want.loss), values(got.loss), 1e-14);
    REQUIRE_CLOSE("dx", values(want.dx), values(got.dx), 1e-13);
    REQUIRE_CLOSE("dW", values(want.dw), values(got.dw), 1e-13);
  }
}

TEST_CASE("linear_cross_entropy: every row ignored gives 0 and zero gradients", "[autograd]") {
  Generator gen(92);
  const Tensor x = Tensor::randn({4, 3}, gen, DType::f64), w = Tensor::randn({6, 3}, gen, DType::f64);
  const Tensor targets = Tensor::full({4}, static_cast<double>(kIgnoreIndex), DType::i64);
  const Result got = run(x, w, targets, 1.0, 2);
  REQUIRE(got.loss.item() == 0.0);
  for (double v : values(got.dx)) REQUIRE(v == 0.0);
  for (double v : values(got.dw)) REQUIRE(v == 0.0);
}

TEST_CASE("linear_cross_entropy records nothing without grad mode", "[autograd]") {
  Generator gen(93);
  const Tensor x = Tensor::randn({5, 3}, gen, DType::f64), w = Tensor::randn({4, 3}, gen, DType::f64);
  const Tensor targets = Tensor::from_vector<int64_t>({0, 1, 2, 3, 1}, {5});
  NoGradGuard no_grad;
  const Var loss = linear_cross_entropy(Var(x, true), Var(w, true), targets, kIgnoreIndex, 2);
  REQUIRE(loss.is_leaf());
  REQUIRE_CLOSE("loss", values(cross_entropy(matmul(Var(x), transpose(Var(w), 0, 1)), targets).data()),
                values(loss.data()), 1e-14);
}

TEST_CASE("linear_cross_entropy rejects bad shapes and dtypes with hla::Error", "[autograd]") {
  Generator gen(94);
  const Var x(Tensor::randn({4, 3}, gen, DType::f64), true);
  const Var w(Tensor::randn({6, 3}, gen, DType::f64), true);
  const Tensor t = Tensor::from_vector<int64_t>({0, 1, 2, 3}, {4});
  REQUIRE_THROWS_AS(linear_cross_entropy(Var(Tensor::randn({4}, gen, DType::f64)), w, t), Error);
  REQUIRE_THROWS_AS(linear_cross_entropy(x, Var(Tensor::randn({6, 2}, gen, DType::f64)), t), Error);
  REQUIRE_THROWS_AS(linear_cross_entropy(x, w, Tensor::from_vector<int64_t>({0, 1}, {2})), Error);
  REQUIRE_THROWS_AS(linear_cross_entropy(x, Var(Tensor::zeros({6, 3}, DType::i64)), t), Error);
  REQUIRE_THROWS_AS(linear_cross_entropy(x, w, t, kIgnoreIndex, -1), Error);
  REQUIRE_THROWS_AS(linear_cross_entropy(x, w, Tensor::from_vector<int64_t>({0, 1, 6, 3}, {4})),
                    Error);  // a target past the vocabulary
}

// An f32 weight under f64 rows (the master weight under another compute dtype): the products
// on its f64 cast, the loss and dx as with that cast made outside, dW in f32 from the f64 sum.
TEST_CASE("linear_cross_entropy casts a weight of another dtype and returns its gradient in it",
          "[autograd]") {
  Generator gen(96);
  const Tensor x = Tensor::randn({6, 4}, gen, DType::f64), w = Tensor::randn({9, 4}, gen, DType::f32);
  const Tensor targets = Tensor::from_vector<int64_t>({0, 8, kIgnoreIndex, 3, 5, 1}, {6});
  Var xa(x.clone(), true), wa(w.clone(), true), xb(x.clone(), true), wb(w.clone(), true);
  const Var got = linear_cross_entropy(xa, wa, targets, kIgnoreIndex, 4);
  const Var want = cross_entropy(matmul(xb, transpose(to_dtype(wb, DType::f64), 0, 1)), targets);
  got.backward();
  want.backward();
  REQUIRE(wa.grad().dtype() == DType::f32);
  REQUIRE_CLOSE("loss", values(want.data()), values(got.data()), 1e-14);
  REQUIRE_CLOSE("dx", values(xb.grad()), values(xa.grad()), 1e-13);
  REQUIRE_CLOSE("dW", values(wb.grad()), values(wa.grad()), 1e-7);  // both rounded to f32 once
}

