// Reductions (sum, max, sum_to, sum_all) and cuBLAS matmul against the CPU path.
#include "tests/cuda/cuda_test_helpers.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif

using namespace hla;
using namespace hla::ops;
using namespace hla::cuda_test;

TEST_CASE("cuda sum / max / sum_to / sum_all match the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(21);
  for (DType dt : {DType::f32, DType::f64}) {
    const Tensor x = Tensor::randn({5, 7, 9}, gen, dt);
    const Tensor g = gpu(x);
    const std::vector<std::vector<int64_t>> dim_sets = {{0}, {1}, {-1}, {0, 2}, {1, 2}, {0, 1, 2}, {}};
    for (const auto& dims : dim_sets)
      for (bool keep : {false, true}) {
        INFO("dims size " << dims.size() << " keepdim " << keep << " " << dtype_name(dt));
        const Tensor cs = sum(x, dims, keep), gs = sum(g, dims, keep);
        REQUIRE(cs.shape() == gs.shape());
        REQUIRE_CLOSE("sum", vals(cs), vals(gs), tol(dt));
        if (!dims.empty()) REQUIRE_CLOSE("max", vals(max(x, dims, keep)), vals(max(g, dims, keep)), tol(dt));
      }
    // Non-contiguous input; long rows (block-per-row kernel); sum_all; sum_to.
    REQUIRE_CLOSE("sum(x^T)", vals(sum(x.transpose(0, 2), {1}, false)),
                  vals(sum(g.transpose(0, 2), {1}, false)), tol(dt));
    const Tensor lng = Tensor::randn({3, 5000}, gen, dt);
    REQUIRE_CLOSE("sum(long rows)", vals(sum(lng, {1}, false)), vals(sum(gpu(lng), {1}, false)), tol(dt));
    REQUIRE_CLOSE("max(long rows)", vals(max(lng, {1}, false)), vals(max(gpu(lng), {1}, false)), tol(dt));
    REQUIRE_CLOSE("sum_all", vals(sum_all(lng)), vals(sum_all(gpu(lng))), tol(dt));
    // Leading dims of a contiguous tensor reduce in place as columns, rows split over blocks.
    const Tensor tall = Tensor::randn({3000, 70}, gen, dt), tall3 = Tensor::randn({2, 1500, 33}, gen, dt);
    REQUIRE_CLOSE("sum(columns)", vals(sum(tall, {0}, false)), vals(sum(gpu(tall), {0}, false)), tol(dt));
    REQUIRE_CLOSE("max(columns)", vals(max(tall, {0}, true)), vals(max(gpu(tall), {0}, true)), tol(dt));
    REQUIRE_CLOSE("sum(columns, 2 dims)", vals(sum(tall3, {1, 0}, false)),
                  vals(sum(gpu(tall3), {1, 0}, false)), tol(dt));
    const Tensor st = sum_to(g, {7, 1});
    REQUIRE(st.shape() == Shape{7, 1});
    REQUIRE_CLOSE("sum_to", vals(sum_to(x, {7, 1})), vals(st), tol(dt));
  }
  // Zero-size inputs are made with empty() on the GPU: Tensor::is_contiguous() reports a
  // zero-size tensor as strided, so moving one between devices throws (a tensor/ issue).
  const Tensor empty_rows = Tensor::empty({2, 0}, DType::f32, Device::CUDA);
  REQUIRE_THROWS_AS(max(empty_rows, {1}, false), Error);
  CHECK(vals(sum(empty_rows, {1}, false)) == std::vector<double>{0, 0});
}

TEST_CASE("cuda matmul matches the CPU (batched, broadcast, transposed, sliced, ragged)", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(22);
  for (DType dt : {DType::f32, DType::f64}) {
    INFO(dtype_name(dt));
    const Tensor a = Tensor::randn({2, 1, 33, 65}, gen, dt), b = Tensor::randn({3, 65, 17}, gen, dt);
    const Tensor c = matmul(gpu(a), gpu(b));
    REQUIRE(c.shape() == Shape{2, 3, 33, 17});
    REQUIRE_CLOSE("matmul batched/broadcast", vals(matmul(a, b)), vals(c), tol(dt));
    // Transposed operands (read in place with OP_T), a sliced operand, a 2-D product.
    const Tensor at = Tensor::randn({40, 31}, gen, dt), bt = Tensor::randn({19, 40}, gen, dt);
    REQUIRE_CLOSE("matmul a^T b^T", vals(matmul(at.transpose(0, 1), bt.transpose(0, 1))),
                  vals(matmul(gpu(at).transpose(0, 1), gpu(bt).transpose(0, 1))), tol(dt));
    const Tensor big = Tensor::randn({31, 50}, gen, dt);
    REQUIRE_CLOSE("matmul slice", vals(matmul(big.slice(1, 3, 43), bt.transpose(0, 1).slice(0, 0, 40))),
                  vals(matmul(gpu(big).slice(1, 3, 43), gpu(bt).transpose(0, 1))), tol(dt));
    // Batch dims that do not collapse to one stride (a permuted batch) take a contiguous copy.
    const Tensor p = Tensor::randn({4, 3, 6, 5}, gen, dt).permute({1, 0, 2, 3});
    const Tensor q = Tensor::randn({3, 4, 5, 2}, gen, dt);
    const Tensor pg = gpu(p.permute({1, 0, 2, 3}).contiguous()).permute({1, 0, 2, 3});
    REQUIRE_CLOSE("matmul permuted batch (gpu view)", vals(matmul(p, q)), vals(matmul(pg, gpu(q))), tol(dt));
    // Degenerate sizes.
    CHECK(vals(matmul(Tensor::empty({2, 0}, dt, Device::CUDA), Tensor::empty({0, 3}, dt, Device::CUDA))) ==
          std::vector<double>(6, 0.0));
    CHECK(matmul(Tensor::empty({0, 4}, dt, Device::CUDA), gpu(Tensor::ones({4, 3}, dt))).shape() == Shape{0, 3});
  }
  REQUIRE_THROWS_AS(matmul(gpu(Tensor::ones({2, 3})), gpu(Tensor::ones({4, 2}))), Error);
}

// matmul_acc on CUDA: f32 and f64 into their own dtype, bf16 operands summed in f32 into an f32
// c (against the CPU in f32 on the same bf16 values: 1e-5, the products are exact in f32 and
// only their sums round), and bf16 into a bf16 c (a b + c rounded once to bf16: 8e-3, twice
// bf16's half ulp).
TEST_CASE("cuda matmul_acc adds the product into c (f32, f64, bf16 into f32 and bf16)", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(23);
  struct Case { DType in, c; double tol; };
  for (const Case& k :
       {Case{DType::f32, DType::f32, kF32}, Case{DType::f64, DType::f64, kF64},
        Case{DType::bf16, DType::f32, kF32}, Case{DType::bf16, DType::bf16, 8e-3}}) {
    INFO(dtype_name(k.in) << " into " << dtype_name(k.c));
    const DType ref_dt = k.in == DType::f64 ? DType::f64 : DType::f32;
    const Tensor a = Tensor::randn({70, 33}, gen, ref_dt).to(k.in).to(ref_dt);  // a^T [33, 70]
    const Tensor b = Tensor::randn({70, 21}, gen, ref_dt).to(k.in).to(ref_dt);
    const Tensor c0 = Tensor::randn({33, 21}, gen, ref_dt).to(k.c).to(ref_dt);
    Tensor want = c0.clone(), got = gpu(c0.to(k.c));
    matmul_acc(want, a.transpose(0, 1), b);
    matmul_acc(got, gpu(a.to(k.in)).transpose(0, 1), gpu(b.to(k.in)));
    REQUIRE(got.dtype() == k.c);
    REQUIRE_CLOSE("matmul_acc", vals(want), vals(got), k.tol);
  }
  Tensor c16 = gpu(Tensor::zeros({2, 2}).to(DType::bf16));
  REQUIRE_THROWS_AS(matmul_acc(c16, gpu(Tensor::ones({2, 3})), gpu(Tensor::ones({3, 2}))), Error);
}

#ifdef HLA_WITH_CUDA
TEST_CASE("cuda matmul in TF32 mode is close (looser tolerance) and off by default", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(23);
  REQUIRE_FALSE(cuda::tf32_enabled());
  const Tensor a = Tensor::randn({256, 512}, gen), b = Tensor::randn({512, 384}, gen);
  const std::vector<double> ref = vals(matmul(a, b));
  cuda::set_tf32(true);
  const std::vector<double> out = vals(matmul(gpu(a), gpu(b)));
  cuda::set_tf32(false);
  // TF32 keeps 10 mantissa bits of each operand: ~1e-3 relative error; kTF32 = 5e-3.
  REQUIRE_CLOSE("matmul (TF32)", ref, out, kTF32);
  REQUIRE_CLOSE("matmul (fp32)", ref, vals(matmul(gpu(a), gpu(b))), kF32);
}
#endif
