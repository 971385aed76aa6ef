// bf16 on the GPU against the CPU in f32: every tensor kernel of kernels/cuda/ops_cuda.h run on
// bf16 tensors, compared by name with the CPU computing in f32 on the same bf16-rounded inputs;
// the CPU result is rounded to bf16 too wherever the GPU result is bf16. Plus the device dtype
// conversion (exact round trips, ties to even) and the fp32 accumulation of every sum.
//
// Tolerances (relative RMS, tests/helpers/close.h):
//   kBf16 = 4e-3: a bf16 result. GPU and CPU compute the same float values up to f32 rounding
//     (summation order, libm, fused multiply-adds), so after both round to bf16 (unit roundoff
//     2^-8, ~2^-9 on average) they agree except where an f32 difference straddles a rounding
//     boundary. Elementwise maps and sums of up to 4096 terms stay far below 4e-3; a sum kept in
//     bf16 instead loses ~2^-9 per addition and fails (4096 terms: ~5e-2).
//   kBf16Matmul = 8e-3: bf16 products over K = 1024 (fp32 accumulation on tensor cores, in
//     cuBLAS's order): the same one output rounding, margin for the longer sums.
//   kF32Out = 1e-4: an f32 result of a bf16 op (cross-entropy loss and lse, rstd, dw of an f32
//     weight): f32 arithmetic on identical inputs agrees to ~1e-6; a bf16 rounding anywhere on
//     the way (~1e-3) fails.
// Exact (==): conversions of representable values, data movement (index_select, gather,
// concat, slice_backward), and the 2^16-ones sums.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "tests/cuda/cuda_test_helpers.h"

using namespace hla;
using namespace hla::ops;
using namespace hla::cuda_test;

namespace {

constexpr double kBf16 = 4e-3;
constexpr double kBf16Matmul = 8e-3;
constexpr double kF32Out = 1e-4;

// An f32 CPU tensor of bf16-representable values (the shared input of both sides).
Tensor randn_bf16(const Shape& shape, Generator& gen, double std = 1.0) {
  return Tensor::randn(shape, gen, DType::f32, 0.0, std).to(DType::bf16).to(DType::f32);
}
Tensor rand_bf16(const Shape& shape, Generator& gen, double lo, double hi) {
  return Tensor::rand(shape, gen, DType::f32, lo, hi).to(DType::bf16).to(DType::f32);
}
// The same values as a bf16 GPU tensor (exact: they are representable).
Tensor gpu_bf16(const Tensor& x) { return x.to(DType::bf16).to(Device::CUDA); }
// A GPU bf16 result as an f32 CPU tensor (exact), to feed the CPU backward the GPU's forward.
Tensor cpu_f32(const Tensor& g) { return g.to(Device::CPU).to(DType::f32); }
// The reference of a bf16 GPU result: the CPU's f32 result rounded to bf16.
std::vector<double> rounded(const Tensor& ref) { return vals(ref.to(DType::bf16)); }
// Index values in [0, bound), scattered and repeated.
std::vector<double> index_values(int64_t n, int64_t bound) {
  std::vector<double> v(n);
  for (int64_t j = 0; j < n; ++j) v[j] = double((j * 7919 + j / 3) % bound);
  return v;
}
uint16_t bits_of(const Tensor& gpu_bf16_scalar) {
  return gpu_bf16_scalar.to(Device::CPU).data<bf16>()[0].bits;
}

}  // namespace

// ---- conversion

TEST_CASE("cuda bf16 conversion: exact round trips, ties to even, strided sources", "[cuda]") {
  HLA_REQUIRE_GPU();
  // Every finite bf16 value: bf16 -> f32 / f64 on the GPU gives the host's values, and back to
  // bf16 gives the same bits (every bf16 is representable in f32 and f64).
  std::vector<bf16> all;
  for (uint32_t b = 0; b < 65536; ++b) {
    bf16 v;
    v.bits = static_cast<uint16_t>(b);
    if (std::isfinite(static_cast<float>(v))) all.push_back(v);
  }
  const int64_t n = static_cast<int64_t>(all.size());
  const Tensor host = Tensor::from_vector<bf16>(all, {n});
  const Tensor g = gpu(host);
  for (DType wide : {DType::f32, DType::f64}) {
    INFO("via " << dtype_name(wide));
    const Tensor gw = g.to(wide);
    REQUIRE(gw.device() == Device::CUDA);
    REQUIRE(gw.dtype() == wide);
    CHECK(vals(gw) == vals(host));
    const Tensor back = gw.to(DType::bf16).to(Device::CPU);
    REQUIRE(back.dtype() == DType::bf16);
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) mismatches += back.data<bf16>()[i].bits != all[i].bits;
    CHECK(mismatches == 0);
  }

  // f32 -> bf16 rounds to nearest, ties to even (1 + 2^-8 lies halfway between 1 and 1 + 2^-7).
  struct Case {
    float in;
    uint16_t bits;
    const char* why;
  };
  const std::vector<Case> cases = {
      {1.0f, 0x3f80, "exact"},
      {1.0f + 0x1p-8f, 0x3f80, "halfway: ties to the even 1"},
      {1.0f + 3 * 0x1p-8f, 0x3f82, "halfway: ties to the even 1 + 2^-6"},
      {1.0f + 0x1p-8f + 0x1p-23f, 0x3f81, "just above halfway rounds up"},
      {1.0f + 0x1p-8f - 0x1p-23f, 0x3f80, "just below halfway rounds down"},
      {-(1.0f + 0x1p-8f), 0xbf80, "ties to even on negatives"},
      {3.14159265f, 0x4049, "pi"},
      {-0.0f, 0x8000, "signed zero"},
      {INFINITY, 0x7f80, "infinity"},
      {FLT_MAX, 0x7f80, "past the largest bf16: infinity"},
  };
  for (const Case& c : cases) {
    INFO(c.why << ": " << c.in);
    CHECK(bf16(c.in).bits == c.bits);  // the host agrees
    CHECK(bits_of(gpu(Tensor::from_vector<float>({c.in}, {1})).to(DType::bf16)) == c.bits);
  }
  CHECK(std::isnan(gpu(Tensor::from_vector<float>({NAN}, {1})).to(DType::bf16).item()));

  // f64 -> bf16 rounds once, as on the host: 1 + 2^-8 + 2^-40 is just above the tie 1 + 2^-8,
  // so 1 + 2^-7 (through f32 it would become the tie itself, then 1).
  const Tensor d = Tensor::from_values({1.0 + 0x1p-8 + 0x1p-40}, {1}, DType::f64);
  CHECK(d.to(DType::bf16).data<bf16>()[0].bits == 0x3f81);
  CHECK(bits_of(gpu(d).to(DType::bf16)) == 0x3f81);

  // A strided (transposed, sliced) GPU source converts like the host.
  Generator gen(70);
  const Tensor x = Tensor::randn({64, 33}, gen, DType::f32, 0.0, 10.0);
  const Tensor view = x.transpose(0, 1).slice(1, 3, 60, 2);
  const Tensor gview = gpu(x).transpose(0, 1).slice(1, 3, 60, 2);
  CHECK(vals(gview.to(DType::bf16)) == vals(view.to(DType::bf16)));
  CHECK(vals(gview.to(DType::f64)) == vals(view.to(DType::f64)));

  // Contiguous, aligned GPU tensors convert 8 elements a thread in 16-byte packs, the rest and
  // misaligned ones (a view from element 1) one at a time: lengths around a pack, both ways.
  for (int64_t len : {1, 7, 8, 9, 4099}) {
    INFO("length " << len);
    const Tensor v = Tensor::randn({len + 1}, gen, DType::f32, 0.0, 10.0), h = v.to(DType::bf16);
    const Tensor gv = gpu(v), gh = gpu(h);
    for (int64_t start : {0, 1}) {
      const Tensor part = v.slice(0, start, start + len), gpart = gv.slice(0, start, start + len);
      const Tensor hpart = h.slice(0, start, start + len), ghpart = gh.slice(0, start, start + len);
      CHECK(vals(gpart.to(DType::bf16)) == vals(part.to(DType::bf16)));
      CHECK(vals(gpart.to(DType::f64)) == vals(part.to(DType::f64)));
      CHECK(vals(ghpart.to(DType::f32)) == vals(hpart.to(DType::f32)));
    }
  }

  // Integers: i32 <-> i64, floats truncate toward zero, integers -> bf16 through f32.
  const Tensor fl = Tensor::from_values({-2.7, -0.5, 0.0, 2.7, 1e6}, {5});
  CHECK(vals(gpu(fl).to(DType::i32)) == vals(fl.to(DType::i32)));
  const Tensor ints = Tensor::from_values({-3, 0, 7, 123456789}, {4}, DType::i64);
  CHECK(vals(gpu(ints).to(DType::i32)) == vals(ints.to(DType::i32)));
  CHECK(vals(gpu(ints.to(DType::i32)).to(DType::i64)) == vals(ints));
  CHECK(vals(gpu(ints).to(DType::bf16)) == vals(ints.to(DType::bf16)));
}

// ---- fp32 accumulation

TEST_CASE("cuda bf16 sums accumulate in fp32: 2^16 ones give 65536", "[cuda]") {
  HLA_REQUIRE_GPU();
  // A bf16 accumulator stops at 256 (256 + 1 rounds back to 256); 65536 = 2^16 is a bf16 value.
  const int64_t n = int64_t(1) << 16;
  const Tensor ones = Tensor::ones({1, n}, DType::bf16, Device::CUDA);
  const Tensor zeros = Tensor::zeros({1, n}, DType::bf16, Device::CUDA);
  CHECK(sum_all(ones).item() == 65536.0);
  CHECK(vals(sum(ones, {1}, false)) == std::vector<double>{65536.0});
  CHECK(vals(sum(ones.transpose(0, 1), {0}, false)) == std::vector<double>{65536.0});
  CHECK(matmul(ones, ones.transpose(0, 1)).item() == 65536.0);
  // Softmax of 2^16 equal logits: each 2^-16 (a bf16 sum of exponentials would give 2^-8).
  const std::vector<double> p = vals(softmax(zeros));
  CHECK(p == std::vector<double>(n, 0x1p-16));
  // Cross-entropy over 2^16 equal logits: log(2^16) (f32 loss).
  const Tensor target = Tensor::from_values({0}, {1}, DType::i64);
  const Tensor loss = cross_entropy(zeros, target, -100, nullptr);
  CHECK(loss.dtype() == DType::f32);
  CHECK(std::abs(loss.item() - 16.0 * std::log(2.0)) < 1e-5);
  // RMSNorm of ones: mean(x^2) = 1, so rstd = 1/sqrt(1 + eps) (a bf16 sum of squares: 16).
  Tensor rstd;
  const Tensor y = rms_norm(ones, Tensor::ones({n}, DType::bf16, Device::CUDA), 1e-6, &rstd);
  CHECK(std::abs(rstd.item() - 1.0) < 1e-5);
  CHECK(vals(y) == std::vector<double>(n, 1.0));
  // index_add / scatter_add of 2^16 ones into one element.
  const Tensor flat = ones.reshape({n});
  CHECK(vals(index_add({1}, 0, Tensor::zeros({n}, DType::i64), flat)) ==
        std::vector<double>{65536.0});
  CHECK(vals(scatter_add({1, 1}, 1, Tensor::zeros({1, n}, DType::i64, Device::CUDA), ones)) ==
        std::vector<double>{65536.0});
}

// ---- elementwise

TEST_CASE("cuda bf16 unary, scalar and binary maps, where and add_ match the CPU in f32",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(71);
  const Tensor x = randn_bf16({33, 65}, gen, 2.0), pos = rand_bf16({33, 65}, gen, 0.25, 4.0);
  const Tensor gx = gpu_bf16(x), gpos = gpu_bf16(pos);
  // clang-format off
  const std::vector<std::pair<const char*, Unary>> unaries = {
      {"neg", Unary::Neg},         {"exp", Unary::Exp},           {"log", Unary::Log},
      {"sqrt", Unary::Sqrt},       {"rsqrt", Unary::Rsqrt},       {"sigmoid", Unary::Sigmoid},
      {"tanh", Unary::Tanh},       {"abs", Unary::Abs},           {"relu", Unary::Relu},
      {"log1p", Unary::Log1p},     {"step", Unary::Step},         {"sign", Unary::Sign},
      {"square", Unary::Square},   {"reciprocal", Unary::Reciprocal}, {"sin", Unary::Sin},
      {"cos", Unary::Cos},         {"silu", Unary::Silu},         {"softplus", Unary::Softplus},
      {"logsigmoid", Unary::LogSigmoid}};
  // clang-format on
  for (const auto& [name, op] : unaries) {
    const bool positive = op == Unary::Log || op == Unary::Sqrt || op == Unary::Rsqrt ||
                          op == Unary::Log1p || op == Unary::Reciprocal;
    const Tensor& in = positive ? pos : x;
    const Tensor& gin = positive ? gpos : gx;
    const Tensor out = unary(op, gin);
    REQUIRE(out.dtype() == DType::bf16);
    REQUIRE_CLOSE(name, rounded(unary(op, in)), vals(out), kBf16);
  }
  REQUIRE_CLOSE("exp(x^T)", rounded(unary(Unary::Exp, x.transpose(0, 1))),
                vals(unary(Unary::Exp, gx.transpose(0, 1))), kBf16);
  REQUIRE_CLOSE("pow 1.5", rounded(pow_scalar(pos, 1.5)), vals(pow_scalar(gpos, 1.5)), kBf16);
  REQUIRE_CLOSE("add_scalar", rounded(add_scalar(x, 0.3)), vals(add_scalar(gx, 0.3)), kBf16);
  REQUIRE_CLOSE("mul_scalar", rounded(mul_scalar(x, -1.7)), vals(mul_scalar(gx, -1.7)), kBf16);

  // Binary ops against a broadcast row (row 0 of x itself, so Eq has hits).
  const Tensor row = x.slice(0, 0, 1), grow = gx.slice(0, 0, 1);
  const std::vector<std::pair<const char*, Binary>> binaries = {
      {"add", Binary::Add}, {"sub", Binary::Sub},         {"mul", Binary::Mul},
      {"div", Binary::Div}, {"maximum", Binary::Maximum}, {"minimum", Binary::Minimum},
      {"eq", Binary::Eq},   {"gt", Binary::Gt},           {"ge", Binary::Ge},
      {"silu_backward", Binary::SiluBackward}};
  for (const auto& [name, op] : binaries) {
    const Tensor& b = op == Binary::Div ? pos.slice(0, 0, 1) : row;
    const Tensor& gb = op == Binary::Div ? gpos.slice(0, 0, 1) : grow;
    const Tensor out = binary(op, gx, gb);
    REQUIRE(out.dtype() == DType::bf16);
    REQUIRE_CLOSE(name, rounded(binary(op, x, b)), vals(out), kBf16);
    // same-shape contiguous operands (the pack kernel and its tail), then rows 1.. of both: a
    // contiguous view 130 bytes in, off the 16-byte alignment the pack kernel needs
    REQUIRE_CLOSE(name, rounded(binary(op, x, pos)), vals(binary(op, gx, gpos)), kBf16);
    REQUIRE_CLOSE(name, rounded(binary(op, x.slice(0, 1, 33), pos.slice(0, 1, 33))),
                  vals(binary(op, gx.slice(0, 1, 33), gpos.slice(0, 1, 33))), kBf16);
    // a bias of whole packs repeated over the rows (the rows pack kernel)
    const Tensor bias = Tensor::rand({64}, gen, DType::f32, 0.5, 2.0).to(DType::bf16).to(DType::f32);
    const Tensor wide = x.slice(1, 0, 64).contiguous();
    REQUIRE_CLOSE(name, rounded(binary(op, wide, bias)),
                  vals(binary(op, gpu_bf16(wide), gpu_bf16(bias))), kBf16);
  }

  // where with a bf16 mask and with an f32 mask (converted on the device).
  const Tensor mask = binary(Binary::Gt, x, Tensor::scalar(0.0));
  const Tensor alt = randn_bf16({33, 65}, gen);
  const std::vector<double> ref_where = rounded(where(mask, x, alt));
  CHECK(vals(where(gpu_bf16(mask), gx, gpu_bf16(alt))) == ref_where);
  CHECK(vals(where(gpu(mask), gx, gpu_bf16(alt))) == ref_where);

  // add_ in place, with a broadcast operand.
  Tensor acc = x.clone(), gacc = gx.clone();
  add_(acc, row);
  add_(gacc, grow);
  REQUIRE(gacc.dtype() == DType::bf16);
  REQUIRE_CLOSE("add_", rounded(acc), vals(gacc), kBf16);
  add_(acc, pos);  // same shape, contiguous: the pack kernel
  add_(gacc, gpos);
  REQUIRE_CLOSE("add_ (same shape)", rounded(acc), vals(gacc), kBf16);
}

// ---- reductions and matmul

TEST_CASE("cuda bf16 sum / max over 4096-element rows and columns match the CPU in f32", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(72);
  const Tensor x = randn_bf16({8, 4096}, gen), gx = gpu_bf16(x);
  // dim 1: 4096-element rows (a block each); dim 0: 4096 rows of 8 (a warp each).
  for (int64_t dim : {1, 0}) {
    INFO("dim " << dim);
    const Tensor s = sum(gx, {dim}, false), m = max(gx, {dim}, false);
    REQUIRE(s.dtype() == DType::bf16);
    REQUIRE_CLOSE("sum", rounded(sum(x, {dim}, false)), vals(s), kBf16);
    CHECK(vals(m) == rounded(max(x, {dim}, false)));  // a max is one of the inputs: exact
  }
  REQUIRE_CLOSE("sum_all", rounded(sum_all(x)), vals(sum_all(gx)), kBf16);
  REQUIRE_CLOSE("sum_to", rounded(sum_to(x, {1, 4096})), vals(sum_to(gx, {1, 4096})), kBf16);
}

TEST_CASE("cuda bf16 matmul (K = 1024, tensor cores, fp32 accumulation) matches the CPU in f32",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(73);
  // Batched with a broadcast batch dim: [2, 1, 64, 1024] @ [3, 1024, 48] -> [2, 3, 64, 48].
  const Tensor a = randn_bf16({2, 1, 64, 1024}, gen), b = randn_bf16({3, 1024, 48}, gen);
  const Tensor c = matmul(gpu_bf16(a), gpu_bf16(b));
  REQUIRE(c.dtype() == DType::bf16);
  REQUIRE(c.shape() == Shape{2, 3, 64, 48});
  REQUIRE_CLOSE("matmul batched", rounded(matmul(a, b)), vals(c), kBf16Matmul);
  // Transposed operands, read in place (OP_T).
  const Tensor at = randn_bf16({1024, 40}, gen), bt = randn_bf16({56, 1024}, gen);
  REQUIRE_CLOSE("matmul a^T b^T", rounded(matmul(at.transpose(0, 1), bt.transpose(0, 1))),
                vals(matmul(gpu_bf16(at).transpose(0, 1), gpu_bf16(bt).transpose(0, 1))),
                kBf16Matmul);
  // Into f32 (the gradient of an f32 weight, dy^T R: a transposed left operand): the same fp32
  // sums, not rounded to bf16, so they agree with the CPU's f32 product to summation order (a
  // bf16 rounding would give ~1e-3).
  const Tensor b2 = randn_bf16({1024, 48}, gen);
  const Tensor c32 = matmul(gpu_bf16(at).transpose(0, 1), gpu_bf16(b2), DType::f32);
  REQUIRE(c32.dtype() == DType::f32);
  REQUIRE_CLOSE("matmul into f32", vals(matmul(at.transpose(0, 1), b2)), vals(c32), 1e-5);
  REQUIRE_THROWS_WITH(matmul(gpu(at), gpu(b2), DType::bf16),
                      Catch::Contains("in f32 for bf16 operands"));
  // Mixed dtypes are rejected (convert the weight once with .to(DType::bf16)).
  REQUIRE_THROWS_AS(matmul(gpu_bf16(a), gpu(b)), Error);
}

// ---- fused ops

TEST_CASE("cuda bf16 softmax / log_softmax and backward match the CPU in f32", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(74);
  for (int64_t n : {37, 4096}) {
    INFO("n " << n);
    const Tensor x = randn_bf16({6, n}, gen, 3.0), dy = randn_bf16({6, n}, gen);
    const Tensor gx = gpu_bf16(x), gdy = gpu_bf16(dy);
    const Tensor gy = softmax(gx), gl = log_softmax(gx);
    REQUIRE(gy.dtype() == DType::bf16);
    REQUIRE_CLOSE("softmax", rounded(softmax(x)), vals(gy), kBf16);
    REQUIRE_CLOSE("log_softmax", rounded(log_softmax(x)), vals(gl), kBf16);
    // The backward of both sides reads the GPU's (bf16) forward output.
    REQUIRE_CLOSE("dsoftmax", rounded(softmax_backward(cpu_f32(gy), dy)),
                  vals(softmax_backward(gy, gdy)), kBf16);
    REQUIRE_CLOSE("dlog_softmax", rounded(log_softmax_backward(cpu_f32(gl), dy)),
                  vals(log_softmax_backward(gl, gdy)), kBf16);
  }
}

TEST_CASE("cuda bf16 cross_entropy (f32 loss and lse) and backward match the CPU in f32",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(75);
  const int64_t N = 16, C = 4096, ignore = -100;
  const Tensor logits = randn_bf16({N, C}, gen, 2.0);
  std::vector<double> t(N);
  for (int64_t i = 0; i < N; ++i) t[i] = (i % 5 == 3) ? ignore : double((i * 7919) % C);
  const Tensor targets = Tensor::from_values(t, {N}, DType::i64);
  Tensor lse, glse;
  const Tensor loss = cross_entropy(logits, targets, ignore, &lse);
  const Tensor glogits = gpu_bf16(logits);
  const Tensor gloss = cross_entropy(glogits, gpu(targets), ignore, &glse);
  REQUIRE(gloss.dtype() == DType::f32);
  REQUIRE(glse.dtype() == DType::f32);
  REQUIRE(glse.shape() == Shape{N});
  REQUIRE_CLOSE("loss", vals(loss), vals(gloss), kF32Out);
  REQUIRE_CLOSE("lse", vals(lse), vals(glse), kF32Out);
  const Tensor gdx = cross_entropy_backward(glogits, gpu(targets), ignore, glse, 0.5);
  REQUIRE(gdx.dtype() == DType::bf16);
  REQUIRE_CLOSE("dlogits", rounded(cross_entropy_backward(logits, targets, ignore, lse, 0.5)),
                vals(gdx), kBf16);
  // lse must come from a bf16 forward (f32): a bf16 lse is a caller's mistake.
  const Tensor bf16_lse = glse.to(DType::bf16);
  REQUIRE_THROWS_AS(cross_entropy_backward(glogits, gpu(targets), ignore, bf16_lse, 1.0), Error);
}

TEST_CASE("cuda bf16 rms_norm / gated_rms_norm with bf16 or f32 weights match the CPU in f32",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(76);
  const int64_t rows = 6, D = 4096;
  const double eps = 1e-6;
  const Tensor x = randn_bf16({2, 3, D}, gen), g = randn_bf16({2, 3, D}, gen, 2.0);
  const Tensor dy = randn_bf16({2, 3, D}, gen);
  const Tensor gx = gpu_bf16(x), gg = gpu_bf16(g), gdy = gpu_bf16(dy);
  const Tensor w_f32 = Tensor::rand({D}, gen, DType::f32, 0.5, 1.5);
  for (DType wdt : {DType::bf16, DType::f32}) {
    INFO("weight " << dtype_name(wdt));
    // The CPU's weight is the one the GPU reads: bf16-rounded, or the f32 master weight as is.
    const Tensor w = wdt == DType::bf16 ? w_f32.to(DType::bf16).to(DType::f32) : w_f32;
    const Tensor gw = w.to(wdt).to(Device::CUDA);
    // dw has the weight's dtype: bf16 (rounded once) or f32.
    const auto dw_ref = [&](const Tensor& ref) {
      return wdt == DType::bf16 ? rounded(ref) : vals(ref);
    };
    const double dw_tol = wdt == DType::bf16 ? kBf16 : kF32Out;

    Tensor rstd, grstd;
    const Tensor y = rms_norm(x, w, eps, &rstd), gy = rms_norm(gx, gw, eps, &grstd);
    REQUIRE(gy.dtype() == DType::bf16);
    REQUIRE(grstd.dtype() == DType::f32);
    REQUIRE(grstd.shape() == Shape{rows});
    REQUIRE_CLOSE("y", rounded(y), vals(gy), kBf16);
    REQUIRE_CLOSE("rstd", vals(rstd), vals(grstd), kF32Out);
    Tensor dx, dw, gdx, gdw;
    rms_norm_backward(x, w, rstd, dy, &dx, &dw);
    rms_norm_backward(gx, gw, grstd, gdy, &gdx, &gdw);
    REQUIRE(gdx.dtype() == DType::bf16);
    REQUIRE(gdw.dtype() == wdt);
    REQUIRE_CLOSE("dx", rounded(dx), vals(gdx), kBf16);
    REQUIRE_CLOSE("dw", dw_ref(dw), vals(gdw), dw_tol);

    const Tensor z = gated_rms_norm(x, g, w, eps, &rstd);
    const Tensor gz = gated_rms_norm(gx, gg, gw, eps, &grstd);
    REQUIRE_CLOSE("gated y", rounded(z), vals(gz), kBf16);
    REQUIRE_CLOSE("gated rstd", vals(rstd), vals(grstd), kF32Out);
    Tensor dg, gdg;
    gated_rms_norm_backward(x, g, w, rstd, dy, &dx, &dg, &dw);
    gated_rms_norm_backward(gx, gg, gw, grstd, gdy, &gdx, &gdg, &gdw);
    REQUIRE_CLOSE("gated dx", rounded(dx), vals(gdx), kBf16);
    REQUIRE_CLOSE("gated dg", rounded(dg), vals(gdg), kBf16);
    REQUIRE_CLOSE("gated dw", dw_ref(dw), vals(gdw), dw_tol);
  }
  // Only bf16 activations take f32 weights; f32 activations with a bf16 weight are a mistake.
  REQUIRE_THROWS_AS(rms_norm(gpu(x), gpu_bf16(w_f32), eps, nullptr), Error);
}

// Rows of whole 16-byte packs up to 1024 bf16 take a warp a row (norm.cu), the backward's dw
// summed from per-warp partials: D of 40 (5 packs, most lanes idle), 128 and 256 (a pack a lane:
// two rows in flight a warp), 1024; 2997 rows (odd), more than the kernels' warps, so that warps
// walk several rows and some pairs lack their second row.
TEST_CASE("cuda bf16 rms_norm / gated_rms_norm, a warp a row, match the CPU in f32", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(79);
  const double eps = 1e-6;
  for (int64_t D : {40, 128, 256, 1024}) {
    INFO("D " << D);
    const Tensor x = randn_bf16({3, 999, D}, gen), g = randn_bf16({3, 999, D}, gen, 2.0);
    const Tensor dy = randn_bf16({3, 999, D}, gen);
    const Tensor w = Tensor::rand({D}, gen, DType::f32, 0.5, 1.5);  // f32 master weight
    const Tensor gx = gpu_bf16(x), gg = gpu_bf16(g), gdy = gpu_bf16(dy), gw = gpu(w);
    Tensor rstd, grstd, dx, dw, dg, gdx, gdw, gdg;
    REQUIRE_CLOSE("y", rounded(rms_norm(x, w, eps, &rstd)), vals(rms_norm(gx, gw, eps, &grstd)),
                  kBf16);
    REQUIRE_CLOSE("rstd", vals(rstd), vals(grstd), kF32Out);
    rms_norm_backward(x, w, rstd, dy, &dx, &dw);
    rms_norm_backward(gx, gw, grstd, gdy, &gdx, &gdw);
    REQUIRE_CLOSE("dx", rounded(dx), vals(gdx), kBf16);
    REQUIRE_CLOSE("dw", vals(dw), vals(gdw), kF32Out);
    REQUIRE_CLOSE("gated y", rounded(gated_rms_norm(x, g, w, eps, &rstd)),
                  vals(gated_rms_norm(gx, gg, gw, eps, &grstd)), kBf16);
    gated_rms_norm_backward(x, g, w, rstd, dy, &dx, &dg, &dw);
    gated_rms_norm_backward(gx, gg, gw, grstd, gdy, &gdx, &gdg, &gdw);
    REQUIRE_CLOSE("gated dx", rounded(dx), vals(gdx), kBf16);
    REQUIRE_CLOSE("gated dg", rounded(dg), vals(gdg), kBf16);
    REQUIRE_CLOSE("gated dw", vals(dw), vals(gdw), kF32Out);
  }
}

TEST_CASE("cuda bf16 swiglu and backward match the CPU in f32", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(77);
  const Tensor a = randn_bf16({33, 300}, gen, 4.0), b = randn_bf16({33, 300}, gen);
  const Tensor dy = randn_bf16({33, 300}, gen);
  const Tensor ga = gpu_bf16(a), gb = gpu_bf16(b), gdy = gpu_bf16(dy);
  const Tensor gy = swiglu(ga, gb);
  REQUIRE(gy.dtype() == DType::bf16);
  REQUIRE_CLOSE("swiglu", rounded(swiglu(a, b)), vals(gy), kBf16);
  Tensor da, db, gda, gdb;
  swiglu_backward(a, b, dy, &da, &db);
  swiglu_backward(ga, gb, gdy, &gda, &gdb);
  REQUIRE_CLOSE("da", rounded(da), vals(gda), kBf16);
  REQUIRE_CLOSE("db", rounded(db), vals(gdb), kBf16);
}

TEST_CASE("cuda bf16 short_conv (cache, silu, bf16 or f32 weights) and backward match the CPU",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(78);
  // dw sums B * T = 4096 terms per (channel, tap). W = 4: D = 24 and 136 (two blocks of 128
  // channels, the last of 8) run the register walks, D = 18 (not a multiple of 4) the tiled
  // kernels an element at a time; W = 6: the tiled kernels, D = 24 and 136 (three channel tiles)
  // in 16-byte groups, D = 18 an element at a time.
  const int64_t B = 2, T = 2048;
  for (int64_t W : {4, 6})
    for (int64_t D : {24, 18, 136}) {
      const Tensor x = randn_bf16({B, T, D}, gen), cache = randn_bf16({B, D, W - 1}, gen);
      const Tensor dy = randn_bf16({B, T, D}, gen);
      const Tensor gx = gpu_bf16(x), gcache = gpu_bf16(cache), gdy = gpu_bf16(dy);
      const Tensor w_f32 = Tensor::randn({D, W}, gen, DType::f32, 0.0, 0.5);
      for (DType wdt : {DType::bf16, DType::f32})
        for (bool silu : {false, true}) {
          INFO("W " << W << " D " << D << " weight " << dtype_name(wdt) << " silu " << silu);
          const Tensor w = wdt == DType::bf16 ? w_f32.to(DType::bf16).to(DType::f32) : w_f32;
          const Tensor gw = w.to(wdt).to(Device::CUDA);
          const Tensor gy = short_conv(gx, gw, silu, gcache);
          REQUIRE(gy.dtype() == DType::bf16);
          REQUIRE_CLOSE("y", rounded(short_conv(x, w, silu, cache)), vals(gy), kBf16);
          Tensor dx, dw, dc, gdx, gdw, gdc;
          short_conv_backward(x, w, silu, cache, dy, &dx, &dw, &dc);
          short_conv_backward(gx, gw, silu, gcache, gdy, &gdx, &gdw, &gdc);
          REQUIRE(gdx.dtype() == DType::bf16);
          REQUIRE(gdc.dtype() == DType::bf16);
          REQUIRE(gdw.dtype() == wdt);
          REQUIRE_CLOSE("dx", rounded(dx), vals(gdx), kBf16);
          REQUIRE_CLOSE("dcache", rounded(dc), vals(gdc), kBf16);
          if (wdt == DType::bf16)
            REQUIRE_CLOSE("dw", rounded(dw), vals(gdw), kBf16);
          else
            REQUIRE_CLOSE("dw", vals(dw), vals(gdw), kF32Out);
        }
    }
}

// ---- indexing and movement

TEST_CASE("cuda bf16 index_select, gather, concat, slice_backward are exact; index_add and "
          "scatter_add match the CPU in f32", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(79);
  const Tensor table = randn_bf16({50, 24}, gen), gtable = gpu_bf16(table);
  const Tensor ids = Tensor::from_values({3, 7, 3, 49, 0, 3, 12, 7}, {8}, DType::i64);
  CHECK(vals(index_select(gtable, 0, gpu(ids))) == vals(index_select(table, 0, ids)));
  const Tensor gidx = Tensor::from_values(index_values(50 * 9, 24), {50, 9}, DType::i64);
  CHECK(vals(gather(gtable, 1, gpu(gidx))) == vals(gather(table, 1, gidx)));
  const Tensor other = randn_bf16({50, 5}, gen);
  CHECK(vals(concat({gtable, gpu_bf16(other)}, 1)) == vals(concat({table, other}, 1)));
  CHECK(vals(slice_backward(gtable, {50, 60}, 1, 2, 2)) ==
        vals(slice_backward(table, {50, 60}, 1, 2, 2)));

  // index_add: 4096 source rows into 20 (about 205 each: the embedding backward).
  const int64_t m = 4096;
  const Tensor rows = Tensor::from_values(index_values(m, 20), {m}, DType::i64);
  const Tensor src = randn_bf16({m, 24}, gen);
  const Tensor gadd = index_add({20, 24}, 0, rows, gpu_bf16(src));
  REQUIRE(gadd.dtype() == DType::bf16);
  REQUIRE_CLOSE("index_add", rounded(index_add({20, 24}, 0, rows, src)), vals(gadd), kBf16);

  // scatter_add along dim 1: 4096 sources per row into 16 columns (256 each).
  const Tensor sidx = Tensor::from_values(index_values(4 * m, 16), {4, m}, DType::i64);
  const Tensor ssrc = randn_bf16({4, m}, gen);
  const Tensor gscat = scatter_add({4, 16}, 1, gpu(sidx), gpu_bf16(ssrc));
  REQUIRE(gscat.dtype() == DType::bf16);
  REQUIRE_CLOSE("scatter_add", rounded(scatter_add({4, 16}, 1, sidx, ssrc)), vals(gscat), kBf16);
}
