// linear(x, W) = x W^T (the projected-rows node nn::Linear runs) against the Matmul primitive
// matmul(x, transpose(to_dtype(W, x.dtype()))) in f64: values and the gradients of x and W,
// for a batched x, a strided x, and an f32 weight under f64 compute (the cast inside, the weight's
// gradient in f32, and the node keeping the weight itself, not a cast copy); gradcheck; bad
// inputs. The products are the same GEMMs; the tolerance 1e-13 allows Eigen's blocking of a
// batched against a merged product.
#include <catch2/catch.hpp>

#include "autograd/fused.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "autograd/primitives.h"
#include "tests/helpers/close.h"

using namespace hla;

namespace {
std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }
}  // namespace

TEST_CASE("linear equals matmul(x, W^T), values and gradients, casting W to x's dtype",
          "[autograd]") {
  Generator gen(95);
  const Tensor x0 = Tensor::randn({2, 3, 5}, gen, DType::f64);
  const Tensor dy = Tensor::randn({2, 3, 4}, gen, DType::f64);
  for (DType wt : {DType::f64, DType::f32})
    for (bool strided : {false, true}) {
      INFO("W " << dtype_name(wt) << (strided ? ", x strided" : ""));
      const Tensor w0 = Tensor::randn({4, 5}, gen, wt);
      // x as a transposed view of its [5, 3, 2] transpose: the same values, strided
      const Tensor xs = strided ? x0.permute({2, 1, 0}).contiguous().permute({2, 1, 0}) : x0;
      Var x(xs.clone(), true), w(w0.clone(), true);
      if (strided) x = Var(xs, true);
      Var xr(x0.clone(), true), wr(w0.clone(), true);
      const Var y = linear(x, w);
      const Var yr = matmul(xr, transpose(to_dtype(wr, DType::f64), 0, 1));
      REQUIRE(y.dtype() == DType::f64);
      REQUIRE(y.shape() == Shape{2, 3, 4});
      REQUIRE_CLOSE("y", values(yr.data()), values(y.data()), 1e-13);
      // the node keeps the weight itself (no cast copy of it between the passes)
      REQUIRE(y.grad_fn()->inputs[1].data().raw_data() == w.data().raw_data());
      y.backward(dy);
      yr.backward(dy);
      REQUIRE(w.grad().dtype() == wt);
      REQUIRE(x.grad().shape() == x0.shape());
      REQUIRE_CLOSE("dx", values(xr.grad()), values(x.grad()), 1e-13);
      REQUIRE_CLOSE("dW", values(wr.grad()), values(w.grad()), 1e-13);
    }
  auto gc = gradcheck([](const std::vector<Var>& in) { return linear(in[0], in[1]); },
                      {Tensor::randn({3, 2, 5}, gen, DType::f64), Tensor::randn({4, 5}, gen, DType::f64)});
  INFO(gc.report);
  CHECK(gc.ok);
}

TEST_CASE("linear rejects bad shapes and dtypes with hla::Error", "[autograd]") {
  const Var x(Tensor::zeros({2, 5}, DType::f64));
  REQUIRE_THROWS_WITH(linear(x, Var(Tensor::zeros({5}, DType::f64))), Catch::Contains("linear"));
  REQUIRE_THROWS_WITH(linear(x, Var(Tensor::zeros({4, 6}, DType::f64))),
                      Catch::Contains("x [..., 6]"));
  REQUIRE_THROWS_WITH(linear(Var(Tensor::zeros({}, DType::f64)), Var(Tensor::zeros({4, 5}, DType::f64))),
                      Catch::Contains("linear"));
  REQUIRE_THROWS_WITH(linear(Var(Tensor::zeros({2, 5}, DType::i64)), Var(Tensor::zeros({4, 5}, DType::f64))),
                      Catch::Contains("floating"));
}
