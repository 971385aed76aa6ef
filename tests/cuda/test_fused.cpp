// Fused CUDA kernels against the CPU path, outputs and gradients by name: softmax / log_softmax,
// cross-entropy over a 32000 vocabulary, RMSNorm / gated RMSNorm, SwiGLU (and the forward's
// output their backwards recompute), rotary, the HGRN forget gate, GLA's log decay, short conv.
#include <algorithm>
#include <array>
#include <limits>
#include <vector>

#include "tests/cuda/cuda_test_helpers.h"

using namespace hla;
using namespace hla::ops;
using namespace hla::cuda_test;

TEST_CASE("cuda softmax / log_softmax and backward match the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(31);
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t n : {1, 7, 300, 32000}) {
      INFO("n " << n << " " << dtype_name(dt));
      const Tensor x = Tensor::randn({5, n}, gen, dt, 0.0, 3.0),
                   dy = Tensor::randn({5, n}, gen, dt);
      const Tensor gx = gpu(x), gdy = gpu(dy);
      const Tensor y = softmax(x), gy = softmax(gx);
      REQUIRE_CLOSE("softmax", vals(y), vals(gy), tol(dt));
      REQUIRE_CLOSE("dsoftmax", vals(softmax_backward(y, dy)), vals(softmax_backward(gy, gdy)),
                    tol(dt));
      const Tensor l = log_softmax(x), gl = log_softmax(gx);
      REQUIRE_CLOSE("log_softmax", vals(l), vals(gl), tol(dt));
      REQUIRE_CLOSE("dlog_softmax", vals(log_softmax_backward(l, dy)),
                    vals(log_softmax_backward(gl, gdy)), tol(dt));
    }
  // A transposed (non-contiguous) input.
  const Tensor x = Tensor::randn({9, 4}, gen);
  REQUIRE_CLOSE("softmax(x^T)", vals(softmax(x.transpose(0, 1))),
                vals(softmax(gpu(x).transpose(0, 1))), kF32);
}

TEST_CASE("cuda cross_entropy over a 32000 vocabulary matches the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(32);
  const int64_t C = 32000, ignore = -100;
  for (DType dt : {DType::f32, DType::f64})
    for (DType it : {DType::i64, DType::i32}) {
      INFO(dtype_name(dt) << " targets " << dtype_name(it));
      const int64_t N = 37;
      const Tensor logits = Tensor::randn({N, C}, gen, dt, 0.0, 2.0);
      std::vector<double> t(N);
      for (int64_t i = 0; i < N; ++i) t[i] = (i % 5 == 3) ? ignore : double((i * 7919) % C);
      t[0] = C - 1;
      const Tensor targets = Tensor::from_values(t, {N}, it);
      Tensor lse, glse;
      const Tensor loss = cross_entropy(logits, targets, ignore, &lse);
      const Tensor gloss = cross_entropy(gpu(logits), gpu(targets), ignore, &glse);
      REQUIRE(gloss.device() == Device::CUDA);
      REQUIRE(gloss.dim() == 0);
      REQUIRE_CLOSE("loss", vals(loss), vals(gloss), tol(dt));
      REQUIRE_CLOSE("lse", vals(lse), vals(glse), tol(dt));
      REQUIRE_CLOSE("dlogits", vals(cross_entropy_backward(logits, targets, ignore, lse, 0.5)),
                    vals(cross_entropy_backward(gpu(logits), gpu(targets), ignore, glse, 0.5)),
                    tol(dt));
      // Targets may stay on the CPU.
      REQUIRE_CLOSE("loss (cpu targets)", vals(loss),
                    vals(cross_entropy(gpu(logits), targets, ignore, nullptr)), tol(dt));
      // With the count passed (targets checked by the caller, no host read): the same bits.
      int64_t counted = 0;
      for (double v : t) counted += v != double(ignore);
      Tensor clse;
      CHECK(vals(cross_entropy(gpu(logits), gpu(targets), ignore, &clse, counted)) == vals(gloss));
      CHECK(vals(clse) == vals(glse));
      CHECK(vals(cross_entropy_backward(gpu(logits), gpu(targets), ignore, glse, 0.5, counted)) ==
            vals(cross_entropy_backward(gpu(logits), gpu(targets), ignore, glse, 0.5)));
    }
  // All rows ignored: loss 0, gradient 0.
  const Tensor logits = Tensor::randn({3, 11}, gen);
  const Tensor all_ignored = Tensor::from_values({-100, -100, -100}, {3}, DType::i64);
  Tensor glse;
  CHECK(cross_entropy(gpu(logits), gpu(all_ignored), -100, &glse).item() == 0.0);
  CHECK(vals(cross_entropy_backward(gpu(logits), all_ignored, -100, glse, 1.0)) ==
        std::vector<double>(33, 0.0));
  REQUIRE_THROWS_AS(
      cross_entropy(gpu(logits), Tensor::from_values({0, 11, 2}, {3}, DType::i64), -100, nullptr),
      Error);
}

TEST_CASE("cuda rms_norm / gated_rms_norm and backward match the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(33);
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t D : {60, 1, 1024}) {
      INFO("D " << D << " " << dtype_name(dt));
      const Tensor x = Tensor::randn({3, 13, D}, gen, dt), g = Tensor::randn({3, 13, D}, gen, dt);
      const Tensor w = Tensor::rand({D}, gen, dt, 0.5, 1.5),
                   dy = Tensor::randn({3, 13, D}, gen, dt);
      const double eps = 1e-6;
      Tensor rstd, grstd;
      const Tensor y = rms_norm(x, w, eps, &rstd), gy = rms_norm(gpu(x), gpu(w), eps, &grstd);
      REQUIRE_CLOSE("y", vals(y), vals(gy), tol(dt));
      REQUIRE_CLOSE("rstd", vals(rstd), vals(grstd), tol(dt));
      Tensor dx, dw, gdx, gdw;
      rms_norm_backward(x, w, rstd, dy, &dx, &dw);
      rms_norm_backward(gpu(x), gpu(w), grstd, gpu(dy), &gdx, &gdw);
      REQUIRE_CLOSE("dx", vals(dx), vals(gdx), tol(dt));
      REQUIRE_CLOSE("dw", vals(dw), vals(gdw), tol(dt));
      // Gated, with a transposed-then-restored (non-contiguous) gate.
      const Tensor gt = g.transpose(0, 1).contiguous().transpose(0, 1);
      const Tensor ggt = gpu(g.transpose(0, 1).contiguous()).transpose(0, 1);
      const Tensor z = gated_rms_norm(x, gt, w, eps, &rstd),
                   gz = gated_rms_norm(gpu(x), ggt, gpu(w), eps, &grstd);
      REQUIRE_CLOSE("gated y", vals(z), vals(gz), tol(dt));
      Tensor dg, gdg;
      gated_rms_norm_backward(x, gt, w, rstd, dy, &dx, &dg, &dw);
      gated_rms_norm_backward(gpu(x), ggt, gpu(w), grstd, gpu(dy), &gdx, &gdg, &gdw);
      REQUIRE_CLOSE("gated dx", vals(dx), vals(gdx), tol(dt));
      REQUIRE_CLOSE("gated dg", vals(dg), vals(gdg), tol(dt));
      REQUIRE_CLOSE("gated dw", vals(dw), vals(gdw), tol(dt));
    }
}

TEST_CASE("cuda swiglu and backward match the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(34);
  for (DType dt : {DType::f32, DType::f64}) {
    const Tensor a = Tensor::randn({7, 33}, gen, dt, 0.0, 4.0), b = Tensor::randn({33, 7}, gen, dt);
    const Tensor dy = Tensor::randn({7, 33}, gen, dt);
    const Tensor bt = b.transpose(0, 1), gbt = gpu(b).transpose(0, 1);
    REQUIRE_CLOSE("swiglu", vals(swiglu(a, bt)), vals(swiglu(gpu(a), gbt)), tol(dt));
    Tensor da, db, gda, gdb;
    swiglu_backward(a, bt, dy, &da, &db);
    swiglu_backward(gpu(a), gbt, gpu(dy), &gda, &gdb);
    REQUIRE_CLOSE("da", vals(da), vals(gda), tol(dt));
    REQUIRE_CLOSE("db", vals(db), vals(gdb), tol(dt));
  }
}

// The backwards' optional y (a node recomputing the forward's output for a product's gradient):
// the forward's bit for bit whichever kernel either direction takes (a warp a row for rows of
// up to 4 packs a lane, a block a row past them; an unaligned dy sends the backward to the
// block kernel while the forward took the warp's), and the gradients as without it.
TEST_CASE("cuda norm and swiglu backwards recompute the forward's y bit for bit", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(35);
  const auto rand = [&](const Shape& shape, DType dt, double scale, bool unaligned) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const Tensor flat = gpu(Tensor::randn({n + 1}, gen, DType::f64, 0.0, scale).to(dt));
    return flat.narrow(0, unaligned ? 1 : 0, n).reshape(shape);
  };
  const auto same = [](const char* name, const Tensor& a, const Tensor& b) {
    INFO(name);
    CHECK(vals(a) == vals(b));
  };
  for (DType dt : {DType::f32, DType::f64, DType::bf16})
    for (DType wdt : {dt, DType::f32})
      for (int64_t D : {40, 256, 1024, 4096})
        for (bool unaligned : {false, true}) {
          if (wdt != dt && dt != DType::bf16) continue;
          INFO(dtype_name(dt) << " weight " << dtype_name(wdt) << " D " << D
                              << (unaligned ? " unaligned dy" : ""));
          const Shape shape{3, 37, D};
          const Tensor x = rand(shape, dt, 1.0, false), g = rand(shape, dt, 2.0, false);
          const Tensor dy = rand(shape, dt, 1.0, unaligned);
          const Tensor w = gpu(Tensor::rand({D}, gen, DType::f32, 0.5, 1.5).to(wdt));
          Tensor rstd, dx, dg, dw, y, dx2, dg2, dw2;
          const Tensor n = rms_norm(x, w, 1e-6, &rstd);
          rms_norm_backward(x, w, rstd, dy, &dx, &dw);
          rms_norm_backward(x, w, rstd, dy, &dx2, &dw2, &y);
          same("y", y, n);
          same("dx", dx2, dx);
          same("dw", dw2, dw);
          const Tensor gn = gated_rms_norm(x, g, w, 1e-6, &rstd);
          gated_rms_norm_backward(x, g, w, rstd, dy, &dx, &dg, &dw);
          gated_rms_norm_backward(x, g, w, rstd, dy, &dx2, &dg2, &dw2, &y);
          same("gated y", y, gn);
          same("gated dx", dx2, dx);
          same("gated dg", dg2, dg);
          same("gated dw", dw2, dw);
          if (wdt != dt || D == 4096) continue;
          const Shape odd{7, D + 3};  // a tail past the last whole pack
          const Tensor a = rand(odd, dt, 4.0, false), b = rand(odd, dt, 1.0, false);
          const Tensor dz = rand(odd, dt, 1.0, unaligned);
          Tensor da, db, da2, db2;
          swiglu_backward(a, b, dz, &da, &db);
          swiglu_backward(a, b, dz, &da2, &db2, &y);
          same("swiglu y", y, swiglu(a, b));
          same("swiglu da", da2, da);
          same("swiglu db", db2, db);
        }
}

TEST_CASE("cuda rotary and its backward match the CPU (f32, f64, bf16)", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(37);
  struct Shape4 {
    int64_t B, T, H, d, offset;
  };
  for (const Shape4& sh :
       {Shape4{2, 37, 3, 64, 0}, Shape4{1, 2048, 1, 128, 0}, Shape4{1, 5, 2, 2, 900},
        Shape4{2, 130, 16, 64, 7}})
    for (DType dt : {DType::f32, DType::f64}) {
      INFO("B,T,H,d " << sh.B << "," << sh.T << "," << sh.H << "," << sh.d << " offset "
                      << sh.offset << " " << dtype_name(dt));
      const Tensor x = Tensor::randn({sh.B, sh.T, sh.H, sh.d}, gen, dt);
      // the angles (up to ~2900 rad) are float on both sides; libm's cos / sin differ by ulps
      REQUIRE_CLOSE("y", vals(rotary(x, sh.offset, 10000.0)),
                    vals(rotary(gpu(x), sh.offset, 10000.0)), kF32);
      REQUIRE_CLOSE("dx", vals(rotary_backward(x, sh.offset, 10000.0)),
                    vals(rotary_backward(gpu(x), sh.offset, 10000.0)), kF32);
    }
  // bf16 on the GPU against f32 on the CPU on the same bf16-valued input: one rounding per output
  const Tensor x = Tensor::randn({2, 300, 4, 64}, gen).to(DType::bf16).to(DType::f32);
  const Tensor gx = gpu(x).to(DType::bf16);
  REQUIRE_CLOSE("y bf16", vals(rotary(x, 3, 10000.0)), vals(rotary(gx, 3, 10000.0).to(DType::f32)),
                8e-3);
  REQUIRE_CLOSE("dx bf16", vals(rotary_backward(x, 3, 10000.0)),
                vals(rotary_backward(gx, 3, 10000.0).to(DType::f32)), 8e-3);
  REQUIRE_THROWS_WITH(rotary(gpu(Tensor::zeros({2, 3, 4, 5})), 0, 10000.0),
                      Catch::Contains("even head dim"));
}

TEST_CASE("cuda forget_gate and its backward match the CPU (bounds, missing gradients, bf16)",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(38);
  const int64_t B = 3, T = 70;
  auto bound_of = [&](DType dt, int64_t D) {  // zeros (layer 0) and values in (0, 1)
    std::vector<double> b(D);
    for (int64_t c = 0; c < D; ++c) b[c] = c % 5 == 0 ? 0.0 : double(c) / (D + 1);
    return Tensor::from_values(b, {D}, dt);
  };
  // D = 48: rows of whole 16-byte packs (the pack kernels); D = 45: the element kernels
  for (int64_t D : {48, 45})
    for (DType dt : {DType::f32, DType::f64})
      for (bool with_bound : {true, false})
        for (int missing : {-1, 0, 1}) {  // which output's gradient is undefined
          INFO("D " << D << " " << dtype_name(dt) << " bound " << with_bound << " missing gradient "
                    << missing);
          auto bound = [&](DType t) { return bound_of(t, D); };
          const Tensor x = Tensor::randn({B, T, D}, gen, dt, 0.0, 4.0);
          const Tensor lb = with_bound ? bound(dt) : Tensor(),
                       glb = with_bound ? gpu(lb) : Tensor();
          const Tensor g1 = missing == 0 ? Tensor() : Tensor::randn({B, T, D}, gen, dt);
          const Tensor g2 = missing == 1 ? Tensor() : Tensor::randn({B, T, D}, gen, dt);
          auto on_gpu = [](const Tensor& t) { return t.defined() ? gpu(t) : Tensor(); };
          Tensor lf, om, glf, gom;
          forget_gate(x, lb, &lf, &om);
          forget_gate(gpu(x), glb, &glf, &gom);
          REQUIRE_CLOSE("log_f", vals(lf), vals(glf), tol(dt));
          REQUIRE_CLOSE("1 - f", vals(om), vals(gom), tol(dt));
          Tensor dx, dlb, gdx, gdlb;
          forget_gate_backward(x, lb, g1, g2, &dx, &dlb);
          forget_gate_backward(gpu(x), glb, on_gpu(g1), on_gpu(g2), &gdx, &gdlb);
          REQUIRE_CLOSE("dx", vals(dx), vals(gdx), tol(dt));
          REQUIRE(dlb.defined() == with_bound);
          REQUIRE(gdlb.defined() == with_bound);
          if (with_bound) REQUIRE_CLOSE("dlb", vals(dlb), vals(gdlb), tol(dt));
        }
  // bf16 logits with an f32 bound (the parameters' dtype) against f32 on the CPU
  const int64_t D = 48;
  auto bound = [&](DType t) { return bound_of(t, D); };
  const Tensor x =
      Tensor::randn({B, T, D}, gen, DType::f32, 0.0, 4.0).to(DType::bf16).to(DType::f32);
  const Tensor g1 = Tensor::randn({B, T, D}, gen).to(DType::bf16).to(DType::f32);
  const Tensor g2 = Tensor::randn({B, T, D}, gen).to(DType::bf16).to(DType::f32);
  Tensor lf, om, glf, gom, dx, dlb, gdx, gdlb;
  forget_gate(x, bound(DType::f32), &lf, &om);
  forget_gate(gpu(x).to(DType::bf16), gpu(bound(DType::f32)), &glf, &gom);
  REQUIRE(glf.dtype() == DType::bf16);
  REQUIRE_CLOSE("log_f bf16", vals(lf), vals(glf.to(DType::f32)), 8e-3);
  REQUIRE_CLOSE("1 - f bf16", vals(om), vals(gom.to(DType::f32)), 8e-3);
  forget_gate_backward(x, bound(DType::f32), g1, g2, &dx, &dlb);
  forget_gate_backward(gpu(x).to(DType::bf16), gpu(bound(DType::f32)), gpu(g1).to(DType::bf16),
                       gpu(g2).to(DType::bf16), &gdx, &gdlb);
  REQUIRE(gdlb.dtype() == DType::f32);
  REQUIRE_CLOSE("dx bf16", vals(dx), vals(gdx.to(DType::f32)), 8e-3);
  REQUIRE_CLOSE("dlb bf16", vals(dlb), vals(gdlb), 1e-4);  // float sums of the same terms
  // log_f in f32 beside bf16 x (HGRN2's gate under mixed precision): not rounded to bf16, and its
  // f32 gradient read as is; on packs (D = 48) and element by element (D = 36: not whole packs)
  for (int64_t Dm : {int64_t(48), int64_t(36)}) {
    INFO("D " << Dm);
    const Tensor xm =
        Tensor::randn({B, T, Dm}, gen, DType::f32, 0.0, 4.0).to(DType::bf16).to(DType::f32);
    const Tensor g1m = Tensor::randn({B, T, Dm}, gen), lbm = bound_of(DType::f32, Dm);
    const Tensor g2m = Tensor::randn({B, T, Dm}, gen).to(DType::bf16).to(DType::f32);
    forget_gate(xm, lbm, &lf, &om);
    forget_gate(gpu(xm).to(DType::bf16), gpu(lbm), &glf, &gom, DType::f32);
    REQUIRE(glf.dtype() == DType::f32);
    REQUIRE(gom.dtype() == DType::bf16);
    REQUIRE_CLOSE("log_f f32 of bf16 x", vals(lf), vals(glf), 1e-5);
    REQUIRE_CLOSE("1 - f bf16", vals(om), vals(gom.to(DType::f32)), 8e-3);
    forget_gate_backward(xm, lbm, g1m, g2m, &dx, &dlb);
    forget_gate_backward(gpu(xm).to(DType::bf16), gpu(lbm), gpu(g1m), gpu(g2m).to(DType::bf16),
                         &gdx, &gdlb);
    REQUIRE_CLOSE("dx bf16, f32 dlog_f", vals(dx), vals(gdx.to(DType::f32)), 8e-3);
    REQUIRE_CLOSE("dlb, f32 dlog_f", vals(dlb), vals(gdlb), 1e-4);
  }
  REQUIRE_THROWS_WITH(forget_gate(gpu(x), gpu(Tensor::zeros({5})), &glf, &gom),
                      Catch::Contains("lower bound [48]"));
  REQUIRE_THROWS_WITH(forget_gate(gpu(x), gpu(bound(DType::f32)), &glf, &gom, DType::bf16),
                      Catch::Contains("or f32 for bf16 x"));
}

TEST_CASE("cuda gla_gate and its backward match the CPU (clamped and not, bf16)", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(39);
  // [4, 77, 32]: whole 16-byte packs; [3, 7, 5]: packs and a tail an element a thread
  for (const Shape& shape : {Shape{4, 77, 32}, Shape{3, 7, 5}})
    for (DType dt : {DType::f32, DType::f64})
      for (double floor : {-1.5, -std::numeric_limits<double>::infinity()}) {
        INFO(to_string(shape) << " " << dtype_name(dt) << " floor " << floor);
        const Tensor x = Tensor::randn(shape, gen, dt, 0.0, 30.0),
                     dg = Tensor::randn(shape, gen, dt);
        const Tensor g = gla_gate(x, 16.0, floor), gg = gla_gate(gpu(x), 16.0, floor);
        REQUIRE_CLOSE("g", vals(g), vals(gg), tol(dt));
        REQUIRE_CLOSE("dx", vals(gla_gate_backward(g, dg, 16.0, floor)),
                      vals(gla_gate_backward(gg, gpu(dg), 16.0, floor)), tol(dt));
      }
  // bf16: g rounded to bf16 (2^-9 relative); the backward from it against the f32 one from x
  // with a floor nothing reaches (-5: x < -80), then, where the clamp binds, against the CPU's
  // f32 backward on the same rounded g with the floor as bf16 stores it (-0.3 -> -0.30078125).
  const Tensor x =
      Tensor::randn({4, 77, 32}, gen, DType::f32, 0.0, 8.0).to(DType::bf16).to(DType::f32);
  const Tensor dg = Tensor::randn({4, 77, 32}, gen).to(DType::bf16).to(DType::f32);
  const Tensor g = gla_gate(x, 16.0, -5.0), gg = gla_gate(gpu(x).to(DType::bf16), 16.0, -5.0);
  REQUIRE_CLOSE("g bf16", vals(g), vals(gg.to(DType::f32)), 8e-3);
  REQUIRE_CLOSE("dx bf16", vals(gla_gate_backward(g, dg, 16.0, -5.0)),
                vals(gla_gate_backward(gg, gpu(dg).to(DType::bf16), 16.0, -5.0).to(DType::f32)),
                8e-3);
  // bf16 x with an f32 g (the mixed-precision models' gates): g computed in float and kept
  // unrounded (against the CPU's f32 on the same values), dx from the f32 g and dg, rounded once
  // to bf16; other pairs are refused.
  const Tensor g32 = gla_gate(gpu(x).to(DType::bf16), 16.0, -5.0, DType::f32);
  REQUIRE(g32.dtype() == DType::f32);
  REQUIRE_CLOSE("g f32 of bf16 x", vals(g), vals(g32), kF32);
  const Tensor dx16 = gla_gate_backward(g32, gpu(dg), 16.0, -5.0, DType::bf16);
  REQUIRE(dx16.dtype() == DType::bf16);
  REQUIRE_CLOSE("dx bf16 of f32 g", vals(gla_gate_backward(g, dg, 16.0, -5.0)),
                vals(dx16.to(DType::f32)), 8e-3);
  REQUIRE_THROWS_WITH(gla_gate(gpu(x), 16.0, -5.0, DType::bf16),
                      Catch::Contains("or f32 for bf16 x"));
  const double floor = -0.3, stored_floor = double(float(bf16(float(floor))));
  const Tensor gc = gla_gate(gpu(x).to(DType::bf16), 16.0, floor);
  const Tensor dx = gla_gate_backward(gc, gpu(dg).to(DType::bf16), 16.0, floor);
  const Tensor g_host = gc.to(DType::f32).to(Device::CPU);
  const std::vector<double> gv = vals(g_host);
  const auto clamped = std::count(gv.begin(), gv.end(), stored_floor);
  INFO(clamped << " of " << gv.size() << " clamped");
  REQUIRE(clamped > 1000);
  REQUIRE(clamped < int64_t(gv.size()) / 2);
  REQUIRE_CLOSE("dx bf16 clamped", vals(gla_gate_backward(g_host, dg, 16.0, stored_floor)),
                vals(dx.to(DType::f32)), 4e-3);
}

TEST_CASE("cuda short_conv and backward match the CPU (with and without cache, silu)", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(35);
  // Shapes [B, T, D]: one tile of 64 time steps x 64 channels; ragged tiles on both axes (the
  // halo rows of the next tile, dw summed over tiles); fewer steps than the cache holds.
  // W <= 4 with D even (f32) or any D (f64) runs the register walks (T = 150: two blocks of
  // 128 steps, a partial run); D = 5 in f32 and W = 6 the tiled kernels (D = 60 in f32 in
  // 16-byte groups, 70 and 5 an element at a time).
  const std::vector<std::array<int64_t, 3>> shapes = {{2, 37, 60}, {3, 150, 70}, {2, 2, 5}};
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t W : {4, 1, 3, 6})
      for (bool silu : {true, false})
        for (bool with_cache : {false, true})
          for (const auto& [B, T, D] : shapes) {
            if (W == 1 && with_cache) continue;  // cache [B, D, 0]
            INFO("W " << W << " silu " << silu << " cache " << with_cache << " " << dtype_name(dt)
                      << " B " << B << " T " << T << " D " << D);
            const Tensor x = Tensor::randn({B, T, D}, gen, dt), w = Tensor::randn({D, W}, gen, dt);
            const Tensor cache = with_cache ? Tensor::randn({B, D, W - 1}, gen, dt) : Tensor();
            const Tensor gcache = with_cache ? gpu(cache) : Tensor();
            const Tensor dy = Tensor::randn({B, T, D}, gen, dt);
            REQUIRE_CLOSE("y", vals(short_conv(x, w, silu, cache)),
                          vals(short_conv(gpu(x), gpu(w), silu, gcache)), tol(dt));
            Tensor dx, dw, dc, gdx, gdw, gdc;
            short_conv_backward(x, w, silu, cache, dy, &dx, &dw, &dc);
            short_conv_backward(gpu(x), gpu(w), silu, gcache, gpu(dy), &gdx, &gdw, &gdc);
            REQUIRE_CLOSE("dx", vals(dx), vals(gdx), tol(dt));
            REQUIRE_CLOSE("dw", vals(dw), vals(gdw), tol(dt));
            if (with_cache) REQUIRE_CLOSE("dcache", vals(dc), vals(gdc), tol(dt));
          }
}
