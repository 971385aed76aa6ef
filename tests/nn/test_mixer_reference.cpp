// Each linear mixer against a literal per-token transcription of its spec section, written here
// with primitives (f64): checks the wiring of gates, keys, betas, norms and scales around the ops.
#include <catch2/catch.hpp>
#include <cmath>

#include "autograd/composites.h"
#include "autograd/primitives.h"
#include "nn/rotary.h"
#include "nn_helpers.h"
#include "tests/helpers/close.h"

using namespace hla;
using namespace hla::nn;
using hla::test::values;

namespace {

// Per head, literally: S <- exp(log_decay_t) S;  with beta: S <- S + beta_t k_t (v_t - S^T k_t)^T,
// else S <- S + k_t v_t^T;  o_t = S^T (scale q_t).
// q, k [B,T,H,K]; v [B,T,H,V]; log_decay [B,T,H,K] or [B,T,H,1]; beta [B,T,H] or undefined.
Var scan(const Var& q, const Var& k, const Var& v, const Var& log_decay, const Var& beta) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), Vd = v.size(3);
  const double scale = 1.0 / std::sqrt(static_cast<double>(K));
  Var S(Tensor::zeros({B, H, K, Vd}, DType::f64));
  std::vector<Var> outs;
  for (int64_t t = 0; t < T; ++t) {
    const Var kt = select(k, 1, t), qt = select(q, 1, t);
    Var vt = select(v, 1, t);
    S = S * exp(unsqueeze(select(log_decay, 1, t), -1));
    if (beta.defined()) {
      const Var pred = sum(S * unsqueeze(kt, -1), {2});  // S^T k  [B,H,V]
      vt = (vt - pred) * unsqueeze(select(beta, 1, t), -1);
    }
    S = S + unsqueeze(kt, -1) * unsqueeze(vt, -2);
    outs.push_back(sum(S * unsqueeze(qt * scale, -1), {2}));
  }
  return stack(outs, 1);  // [B,T,H,V]
}

Var heads(const Var& x, int64_t H) { return split_heads(x, H); }

struct Fixture {
  Generator gen{7};
  Var x{Tensor::randn({2, 5, test::kTinyHidden}, gen, DType::f64)};
};

}  // namespace

TEST_CASE("HGRN layer = spec 1.3 step by step", "[nn]") {
  Fixture f;
  auto m = std::static_pointer_cast<HGRNAttention>(test::tiny_mixer("hgrn", f.gen));
  const Var lb = test::tiny_lower_bound("hgrn", f.gen);
  const Var i = m->i_conv1d->forward(m->i_proj->forward(f.x));
  const Var fg = m->f_conv1d->forward(m->f_proj->forward(f.x));
  const Var forget = lb + one_minus(lb) * sigmoid(fg);  // lb + (1 - lb) sigma(f~)
  const Var u = silu(i) * one_minus(forget);
  Var h(Tensor::zeros({2, test::kTinyHidden}, DType::f64));
  std::vector<Var> hs;
  for (int64_t t = 0; t < 5; ++t) {
    h = select(forget, 1, t) * h + select(u, 1, t);
    hs.push_back(h);
  }
  const Var ref = m->o_proj->forward(m->g_norm->forward(stack(hs, 1), m->g_proj->forward(f.x)));
  REQUIRE_CLOSE("hgrn", values(ref), values(m->forward(f.x, nullptr, lb)), 1e-12);
}

TEST_CASE("HGRN2 layer = spec 2.3 step by step", "[nn]") {
  Fixture f;
  auto m = std::static_pointer_cast<HGRN2Attention>(test::tiny_mixer("hgrn2", f.gen));
  const Var lb = test::tiny_lower_bound("hgrn2", f.gen);
  const int64_t H = m->num_heads;
  const Var q = silu(m->q_conv1d->forward(m->q_proj->forward(f.x)));
  const Var forget = lb + one_minus(lb) * sigmoid(m->f_conv1d->forward(m->f_proj->forward(f.x)));
  const Var v = m->i_conv1d->forward(m->i_proj->forward(f.x));
  const Var o = scan(heads(q, H), heads(one_minus(forget), H), heads(v, H), heads(log(forget), H), Var());
  const Var ref = m->o_proj->forward(m->g_norm->forward(merge_heads(o)));
  CHECK(m->g_norm->eps == 1e-5);  // fla's rms_norm_linear default, whatever norm_eps says
  REQUIRE_CLOSE("hgrn2", values(ref), values(m->forward(f.x, nullptr, lb)), 1e-12);
}

TEST_CASE("GLA layer = spec 3.3 step by step", "[nn]") {
  Fixture f;
  auto m = std::static_pointer_cast<GatedLinearAttention>(test::tiny_mixer("gla", f.gen));
  const int64_t H = m->opt.num_heads;
  const Var q = m->q_conv1d->forward(m->q_proj->forward(f.x));
  const Var k = m->k_conv1d->forward(m->k_proj->forward(f.x));
  const Var v = m->v_conv1d->forward(m->v_proj->forward(f.x));
  const Var gk = m->gk_proj->up->forward(m->gk_proj->down->forward(f.x));
  const Var g = log(sigmoid(gk)) / 16.0;
  const Var o = scan(heads(q, H), heads(k, H), heads(v, H), heads(g, H), Var());
  const Var gate = heads(m->g_proj->forward(f.x), H);
  const Var ref = m->o_proj->forward(merge_heads(m->g_norm_swish_gate->forward(o, gate)));
  REQUIRE_CLOSE("gla", values(ref), values(m->forward(f.x)), 1e-12);
}

TEST_CASE("RetNet layer = spec 4.4 step by step (gamma_h = 1 - 2^(-5-h), RoPE)", "[nn]") {
  Fixture f;
  auto m = std::static_pointer_cast<MultiScaleRetention>(test::tiny_mixer("retnet", f.gen));
  const int64_t H = m->opt.num_heads;
  const Var q = apply_rotary(heads(m->q_proj->forward(f.x), H), 0);
  const Var k = apply_rotary(heads(m->k_proj->forward(f.x), H), 0);
  const Var v = heads(m->v_proj->forward(f.x), H);
  std::vector<double> lg;
  for (int64_t t = 0; t < 2 * 5; ++t)
    for (int64_t h = 0; h < H; ++h) lg.push_back(std::log(1.0 - std::pow(2.0, -5.0 - h)));
  const Var log_gamma(Tensor::from_values(lg, {2, 5, H, 1}, DType::f64));
  const Var o = scan(q, k, v, log_gamma, Var());
  const Var gate = heads(m->g_proj->forward(f.x), H);
  const Var ref = m->o_proj->forward(merge_heads(m->g_norm_swish_gate->forward(o, gate)));
  REQUIRE_CLOSE("retnet", values(ref), values(m->forward(f.x)), 1e-12);
}

TEST_CASE("DeltaNet layer = spec 5.3 step by step", "[nn]") {
  Fixture f;
  auto m = std::static_pointer_cast<DeltaNet>(test::tiny_mixer("delta_net", f.gen));
  const int64_t H = m->opt.num_heads;
  const Var q = l2_normalize(heads(m->q_conv1d->forward(m->q_proj->forward(f.x)), H));
  const Var k = l2_normalize(heads(m->k_conv1d->forward(m->k_proj->forward(f.x)), H));
  const Var v = heads(m->v_conv1d->forward(m->v_proj->forward(f.x)), H);
  const Var beta = sigmoid(m->b_proj->forward(f.x));
  const Var no_decay(Tensor::zeros({2, 5, H, 1}, DType::f64));
  const Var o = scan(q, k, v, no_decay, beta);
  const Var ref = m->o_proj->forward(merge_heads(m->o_norm->forward(o)));
  REQUIRE_CLOSE("delta_net", values(ref), values(m->forward(f.x)), 1e-12);
}

TEST_CASE("Gated DeltaNet layer = spec 6.3 step by step", "[nn]") {
  Fixture f;
  auto m = std::static_pointer_cast<GatedDeltaNet>(test::tiny_mixer("gated_deltanet", f.gen));
  const int64_t H = m->opt.num_heads;
  const Var q = l2_normalize(heads(m->q_conv1d->forward(m->q_proj->forward(f.x)), H));
  const Var k = l2_normalize(heads(m->k_conv1d->forward(m->k_proj->forward(f.x)), H));
  const Var v = heads(m->v_conv1d->forward(m->v_proj->forward(f.x)), H);
  const Var beta = sigmoid(m->b_proj->forward(f.x));
  const Var dt = log1p(exp(m->a_proj->forward(f.x) + m->dt_bias));  // softplus
  const Var g = neg(exp(m->A_log)) * dt;                              // [B,T,H]
  const Var o = scan(q, k, v, unsqueeze(g, -1), beta);
  const Var gate = heads(m->g_proj->forward(f.x), H);
  const Var ref = m->o_proj->forward(merge_heads(m->o_norm_gated->forward(o, gate)));
  REQUIRE_CLOSE("gated_deltanet", values(ref), values(m->forward(f.x)), 1e-12);
}

TEST_CASE("Attention layer = softmax(q k^T / sqrt(d)) v with RoPE, causal, GQA", "[nn]") {
  Fixture f;
  auto m = std::static_pointer_cast<Attention>(test::tiny_mixer("attention", f.gen));
  const int64_t H = m->opt.num_heads, Hkv = m->num_kv_heads, d = m->head_dim, T = 5;
  const Var q = apply_rotary(heads(m->q_proj->forward(f.x), H), 0);
  const Var k = apply_rotary(heads(m->k_proj->forward(f.x), Hkv), 0);
  const Var v = heads(m->v_proj->forward(f.x), Hkv);
  std::vector<Var> per_head;
  for (int64_t h = 0; h < H; ++h) {
    const int64_t j = h / (H / Hkv);
    const Var qh = select(q, 2, h), kh = select(k, 2, j), vh = select(v, 2, j);  // [B,T,d]
    std::vector<double> mask(T * T, 0.0);
    for (int64_t a = 0; a < T; ++a)
      for (int64_t b = a + 1; b < T; ++b) mask[a * T + b] = -1e300;
    const Var s = matmul(qh, transpose(kh, 1, 2)) / std::sqrt(double(d)) +
                  Var(Tensor::from_values(mask, {T, T}, DType::f64));
    const Var p = exp(s - max(s, {-1}, true));
    per_head.push_back(matmul(p / sum(p, {-1}, true), vh));
  }
  const Var ref = m->o_proj->forward(merge_heads(stack(per_head, 2)));
  REQUIRE_CLOSE("attention", values(ref), values(m->forward(f.x)), 1e-12);
}
