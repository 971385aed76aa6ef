// gather and scatter_add on CUDA against the CPU (kernels/cuda/index.cu): ranks 1 to 4, every dim
// (negative ones too), i32 and i64 indices, index extents on `dim` below, equal to and above x's,
// repeated targets; a strided x and src, integer data. Both are exact: gather copies, and
// scatter_add sums each output element's sources in the CPU's order (so the bits match the CPU
// and repeat run to run). Errors as on the CPU; autograd through the Var-level gather.
#include "tests/cuda/cuda_test_helpers.h"
#ifdef HLA_WITH_CUDA
#include <string>
#include <utility>
#include <vector>

#include "autograd/primitives.h"
#include "autograd/var.h"

using namespace hla;
using namespace hla::ops;
using namespace hla::cuda_test;

namespace {

// Random indices in [0, n) of the given shape and dtype.
Tensor random_index(const Shape& shape, int64_t n, DType it, Generator& gen) {
  return Tensor::rand(shape, gen, DType::f64, 0.0, static_cast<double>(n) - 1e-6).to(it);
}

}  // namespace

TEST_CASE("cuda gather and scatter_add match the CPU exactly", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(71);
  const std::vector<Shape> shapes{{7}, {5, 9}, {4, 3, 6}, {2, 3, 4, 5}};
  for (const Shape& xs : shapes)
    for (int64_t dim = -1; dim < static_cast<int64_t>(xs.size()); ++dim)
      for (DType it : {DType::i64, DType::i32})
        for (DType dt : {DType::f32, DType::f64})
          for (int64_t m : {int64_t(1), int64_t(3), int64_t(11)}) {
            const int64_t d = dim < 0 ? dim + static_cast<int64_t>(xs.size()) : dim;
            INFO("x " << to_string(xs) << " dim " << dim << " m " << m << " " << dtype_name(it)
                      << " " << dtype_name(dt));
            Shape is = xs;
            is[d] = m;  // below, equal to or above x's extent on dim: repeats
            const Tensor x = Tensor::randn(xs, gen, dt);
            const Tensor idx = random_index(is, xs[d], it, gen);
            const Tensor ref = gather(x, dim, idx);
            const Tensor out = gather(gpu(x), dim, gpu(idx));
            REQUIRE(out.device() == Device::CUDA);
            REQUIRE(out.shape() == is);
            REQUIRE_CLOSE("gather", vals(ref), vals(out), 0.0);

            const Tensor src = Tensor::randn(is, gen, dt);
            const std::vector<double> cpu = vals(scatter_add(xs, dim, idx, src));
            const std::vector<double> g1 = vals(scatter_add(xs, dim, gpu(idx), gpu(src)));
            const std::vector<double> g2 = vals(scatter_add(xs, dim, gpu(idx), gpu(src)));
            REQUIRE_CLOSE("scatter_add", cpu, g1, 0.0);
            CHECK(g1 == g2);  // deterministic run to run
          }
}

TEST_CASE("cuda gather reads strided views and any dtype", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(72);
  const Tensor x = Tensor::randn({6, 4, 5}, gen, DType::f64);
  const Tensor idx = random_index({5, 4, 9}, 6, DType::i64, gen);
  // x.transpose(0, 2) is [5, 4, 6]: gather along its last dim.
  REQUIRE_CLOSE("gather strided", vals(gather(x.transpose(0, 2), 2, idx)),
                vals(gather(gpu(x).transpose(0, 2), 2, gpu(idx))), 0.0);
  // Integer tables move as raw words.
  const Tensor table = Tensor::arange(0, 30, 1, DType::i64).reshape({5, 6});
  const Tensor rows = random_index({2, 6}, 5, DType::i32, gen);
  CHECK(vals(gather(gpu(table), 0, gpu(rows))) == vals(gather(table, 0, rows)));
  // A non-contiguous src for scatter_add.
  const Tensor src = Tensor::randn({9, 4, 5}, gen, DType::f32);
  REQUIRE_CLOSE("scatter_add strided", vals(scatter_add({5, 4, 6}, 2, idx, src.transpose(0, 2))),
                vals(scatter_add({5, 4, 6}, 2, gpu(idx), gpu(src).transpose(0, 2))), 0.0);
}

TEST_CASE("cuda gather and scatter_add refuse bad input like the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(73);
  const Tensor x = Tensor::randn({3, 4}, gen), gx = gpu(x);
  const Tensor src = Tensor::randn({3, 2}, gen), gsrc = gpu(src);
  // The message names the first bad entry, as on the CPU: 4 (too big) and -1 (negative).
  const std::vector<std::pair<Tensor, std::string>> bad_indices{
      {Tensor::from_values({0, 1, 3, 4, 2, 7}, {3, 2}, DType::i64), "got 4 "},
      {Tensor::from_values({0, 1, 2, 3, -1, -2}, {3, 2}, DType::i32), "got -1 "}};
  for (const auto& [bad, got] : bad_indices) {
    REQUIRE_THROWS_WITH(gather(x, 1, bad), Catch::Contains("[0, 4)") && Catch::Contains(got));
    REQUIRE_THROWS_WITH(gather(gx, 1, gpu(bad)), Catch::Contains("[0, 4)") && Catch::Contains(got));
    REQUIRE_THROWS_WITH(scatter_add({3, 4}, 1, gpu(bad), gsrc),
                        Catch::Contains("[0, 4)") && Catch::Contains(got));
  }
  const Tensor ok = Tensor::from_values({0, 1, 3, 3, 2, 1}, {3, 2}, DType::i64);
  REQUIRE_THROWS_WITH(gather(gx, 1, gpu(ok.to(DType::f32))), Catch::Contains("i32 or i64"));
  REQUIRE_THROWS_WITH(scatter_add({3, 4}, 1, gpu(ok.to(DType::f32)), gsrc),
                      Catch::Contains("i32 or i64"));
  REQUIRE_THROWS_AS(gather(gx, 1, gpu(ok.reshape({6}))), Error);  // rank
  REQUIRE_THROWS_WITH(gather(gx, 1, gpu(ok.reshape({2, 3}))), Catch::Contains("except on dim 1"));
  REQUIRE_THROWS_AS(gather(gx, 2, gpu(ok)), Error);  // dim out of range
  REQUIRE_THROWS_AS(scatter_add({3, 4}, 1, gpu(ok.reshape({2, 3})), gsrc), Error);  // index vs src
  REQUIRE_THROWS_WITH(scatter_add({2, 4}, 1, gpu(ok), gsrc), Catch::Contains("except on dim 1"));
  REQUIRE_THROWS_WITH(scatter_add({3, 4}, 1, gpu(ok), gpu(src.to(DType::i64))),
                      Catch::Contains("f32, f64 or bf16"));
  // An index on the other device is a device mismatch, never a silent copy.
  REQUIRE_THROWS_WITH(gather(gx, 1, ok), Catch::Contains("on cuda"));
  REQUIRE_THROWS_WITH(scatter_add({3, 4}, 1, ok, gsrc), Catch::Contains("on cuda"));
  REQUIRE_THROWS_AS(gather(x, 1, gpu(ok)), Error);
}

TEST_CASE("cuda autograd through gather matches the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(74);
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t dim : {0, 1, 2}) {
      INFO(dtype_name(dt) << " dim " << dim);
      const Tensor x = Tensor::randn({4, 5, 6}, gen, dt);
      Shape is{4, 5, 6};
      is[dim] = 8;  // repeats: the backward sums them
      const Tensor idx = random_index(is, x.shape()[dim], DType::i64, gen);
      const Tensor dy = Tensor::randn(is, gen, dt);
      std::vector<Tensor> y, dx;
      for (Device dev : {Device::CPU, Device::CUDA}) {
        Var vx(x.to(dev), true);
        const Var out = gather(vx, dim, idx.to(dev));
        out.backward(dy.to(dev));
        REQUIRE(vx.grad().device() == dev);
        y.push_back(out.data());
        dx.push_back(vx.grad());
      }
      REQUIRE_CLOSE("y", vals(y[0]), vals(y[1]), 0.0);
      REQUIRE_CLOSE("dx", vals(dx[0]), vals(dx[1]), 0.0);
    }
}
#endif
