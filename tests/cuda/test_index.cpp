// Indexing and movement on CUDA against the CPU: index_select, index_add (deterministic),
// concat, slice_backward.
#include "tests/cuda/cuda_test_helpers.h"

using namespace hla;
using namespace hla::ops;
using namespace hla::cuda_test;

TEST_CASE("cuda index_select and index_add match the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(41);
  for (DType it : {DType::i64, DType::i32}) {
    // Embedding-like: rows of a [V, D] table, with repeats.
    const Tensor table = Tensor::randn({50, 60}, gen);
    const Tensor ids = Tensor::from_values({3, 7, 3, 49, 0, 3, 12, 7}, {8}, it);
    REQUIRE_CLOSE("index_select dim 0", vals(index_select(table, 0, ids)),
                  vals(index_select(gpu(table), 0, gpu(ids))), 0.0);
    // dim 1 of a transposed view, index kept on the CPU.
    const Tensor x = Tensor::randn({9, 5, 4}, gen, DType::f64);
    const Tensor idx = Tensor::from_values({4, 0, 0, 2}, {4}, it);
    REQUIRE_CLOSE("index_select dim 1", vals(index_select(x.transpose(0, 2), 1, idx)),
                  vals(index_select(gpu(x).transpose(0, 2), 1, idx)), 0.0);
    // Integer tables are moved as raw words.
    const Tensor itab = Tensor::arange(40).reshape({10, 4});
    CHECK(vals(index_select(gpu(itab), 0, gpu(ids.slice(0, 0, 3)))) ==
          vals(index_select(itab, 0, ids.slice(0, 0, 3))));
    // index_add with repeated targets: the same order as the CPU, hence the same bits.
    const Tensor src = Tensor::randn({8, 60}, gen);
    const std::vector<double> c = vals(index_add({50, 60}, 0, ids, src));
    const std::vector<double> g1 = vals(index_add({50, 60}, 0, gpu(ids), gpu(src)));
    const std::vector<double> g2 = vals(index_add({50, 60}, 0, gpu(ids), gpu(src)));
    REQUIRE_CLOSE("index_add", c, g1, kF32);
    CHECK(g1 == g2);  // deterministic run to run
    const Tensor src3 = Tensor::randn({2, 4, 3}, gen, DType::f64);
    REQUIRE_CLOSE("index_add dim 1", vals(index_add({2, 5, 3}, 1, idx, src3)),
                  vals(index_add({2, 5, 3}, 1, gpu(idx), gpu(src3))), kF64);
  }
  REQUIRE_THROWS_AS(index_select(gpu(Tensor::ones({3, 2})), 0,
                                 Tensor::from_values({3}, {1}, DType::i64)), Error);
}

TEST_CASE("cuda concat and slice_backward match the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(42);
  const Tensor a = Tensor::randn({3, 4, 5}, gen), b = Tensor::randn({3, 2, 5}, gen);
  const Tensor c = Tensor::randn({5, 1, 3}, gen);  // transposed to [3, 1, 5]
  for (int64_t dim : {1, -2}) {
    const Tensor cpu_out = concat({a, b, c.transpose(0, 2)}, dim);
    const Tensor gpu_out = concat({gpu(a), gpu(b), gpu(c).transpose(0, 2)}, dim);
    REQUIRE(gpu_out.shape() == Shape{3, 7, 5});
    REQUIRE_CLOSE("concat", vals(cpu_out), vals(gpu_out), 0.0);
  }
  REQUIRE_CLOSE("concat dim 0", vals(concat({a, a}, 0)), vals(concat({gpu(a), gpu(a)}, 0)), 0.0);
  REQUIRE_THROWS_AS(concat({gpu(a), b}, 1), Error);
  const Tensor s = Tensor::randn({3, 2, 5}, gen);
  REQUIRE_CLOSE("slice_backward", vals(slice_backward(s, {3, 6, 5}, 1, 1, 3)),
                vals(slice_backward(gpu(s), {3, 6, 5}, 1, 1, 3)), 0.0);
}
