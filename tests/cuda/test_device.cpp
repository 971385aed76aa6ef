// The CUDA storage backend: round trips between devices, GPU views, errors on mixed devices and
// on ops without a CUDA implementation.
#include <tuple>

#include "tests/cuda/cuda_test_helpers.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif

using namespace hla;
using namespace hla::cuda_test;

TEST_CASE("without a GPU, CUDA tensors throw a clear hla::Error", "[cuda]") {
  if (device_available(Device::CUDA)) {
    SUCCEED("a GPU is present: covered by the other [cuda] tests");
    return;
  }
  WARN("no CUDA device: checking the CPU-only error path");
  REQUIRE_THROWS_AS(Tensor::empty({2}, DType::f32, Device::CUDA), Error);
  REQUIRE_THROWS_WITH(Tensor::ones({2}).to(Device::CUDA), Catch::Contains("no CUDA device"));
}

TEST_CASE("to(cuda) and back is exact for every dtype and layout", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(1);
  for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64, DType::bf16}) {
    INFO("dtype " << dtype_name(dt));
    const Tensor x = ops::mul_scalar(Tensor::randn({3, 5, 7}, gen, DType::f64), 100.0).to(dt);
    const Tensor g = gpu(x);
    REQUIRE(g.device() == Device::CUDA);
    REQUIRE(g.shape() == x.shape());
    const Tensor back = g.to(Device::CPU);
    REQUIRE(back.device() == Device::CPU);
    CHECK(vals(back) == vals(x));
    // A non-contiguous CPU source is made contiguous on the way.
    const Tensor xt = x.transpose(0, 2);
    CHECK(vals(gpu(xt)) == vals(xt));
  }
  // Factories, fill_, item() and at() on the GPU.
  const Tensor z = Tensor::zeros({4, 3}, DType::f32, Device::CUDA);
  CHECK(vals(z) == std::vector<double>(12, 0.0));
  Tensor f = Tensor::full({2, 2}, 2.5, DType::f64, Device::CUDA);
  CHECK(f.at({1, 1}) == 2.5);
  f.fill_(-1.0);
  CHECK(vals(f) == std::vector<double>(4, -1.0));
  CHECK(Tensor::ones({1}, DType::f32, Device::CUDA).item() == 1.0);
  // fill_ on the device: zero over earlier contents (the memset), every dtype, and a strided view
  // that must leave the elements outside it alone.
  for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64, DType::bf16}) {
    INFO("dtype " << dtype_name(dt));
    Tensor t = Tensor::full({3, 4}, 7.0, dt, Device::CUDA);
    t.zero_();
    CHECK(vals(t) == std::vector<double>(12, 0.0));
    t.slice(1, 1, 4, 2).fill_(3.0);  // columns 1 and 3: a strided view
    t.select(0, 2).fill_(0.0);       // row 2: a contiguous view at an offset (the memset)
    t.select(1, 3).fill_(0.0);       // column 3: zero through the broadcast path
    const std::vector<double> want = {0, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0};
    CHECK(vals(t) == want);
  }
  // GPU -> GPU copy (clone of a contiguous tensor) and copy_ from the CPU.
  const Tensor a = gpu(Tensor::randn({64, 33}, gen));
  CHECK(vals(a.clone()) == vals(a));
  Tensor dst = Tensor::empty({64, 33}, DType::f32, Device::CUDA);
  const Tensor src = Tensor::randn({64, 33}, gen);
  dst.copy_(src);
  CHECK(vals(dst) == vals(src));
}

#ifdef HLA_WITH_CUDA
TEST_CASE("strided GPU views copy to contiguous tensors", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(2);
  const Tensor x = Tensor::randn({4, 6, 5}, gen);
  const Tensor g = gpu(x);
  for (const auto& [name, cv, gv] :
       {std::tuple{"transpose", x.transpose(0, 2), g.transpose(0, 2)},
        std::tuple{"slice", x.slice(1, 1, 6, 2), g.slice(1, 1, 6, 2)},
        std::tuple{"select", x.select(2, 3), g.select(2, 3)},
        std::tuple{"expand", x.select(1, 0).unsqueeze(1).expand({4, 3, 5}),
                   g.select(1, 0).unsqueeze(1).expand({4, 3, 5})}}) {
    INFO(name);
    const Tensor c = cuda::contiguous(gv);
    CHECK(c.is_contiguous());
    CHECK(vals(c) == vals(cv));
  }
  // Raw-word copies move integer tensors too.
  const Tensor idx = Tensor::arange(12).reshape({3, 4});
  CHECK(vals(cuda::contiguous(gpu(idx).transpose(0, 1))) == vals(idx.transpose(0, 1)));
  cuda::synchronize();
}
#endif

TEST_CASE("mixing devices and unported dtypes throw hla::Error", "[cuda]") {
  HLA_REQUIRE_GPU();
  using namespace hla::ops;
  Generator gen(3);
  const Tensor c = Tensor::randn({3, 4}, gen), g = gpu(c);
  REQUIRE_THROWS_AS(binary(Binary::Add, c, g), Error);
  REQUIRE_THROWS_AS(binary(Binary::Add, g, c), Error);
  REQUIRE_THROWS_WITH(matmul(g, c.transpose(0, 1)), Catch::Contains("on cuda"));
  REQUIRE_THROWS_AS(matmul(c, gpu(c.transpose(0, 1))), Error);
  REQUIRE_THROWS_AS(where(g, c, c), Error);
  REQUIRE_THROWS_AS(rms_norm(g, Tensor::ones({4}), 1e-6, nullptr), Error);
  // An index on the other device is a device mismatch, never a silent copy.
  REQUIRE_THROWS_AS(gather(g, 1, Tensor::zeros({3, 1}, DType::i64)), Error);
  // Integer tensors are not compute types: a clear dtype error.
  REQUIRE_THROWS_WITH(unary(Unary::Exp, g.to(DType::i32)), Catch::Contains("f32, f64 or bf16"));
}
