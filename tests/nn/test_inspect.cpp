// Tests: the inspection recorder (nn/inspect.h). Recorded shapes and values against hand
// computation on tiny inputs (decays, horizons, attention entropy/distance, exact and
// chunk-boundary state norms), the HybridLM layer paths, the StepRule hook, and that recording
// changes no result (bit-identical logits with and without a scope).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <vector>

#include "autograd/composites.h"
#include "autograd/step_rule.h"
#include "nn/inspect.h"
#include "nn/model.h"
#include "tests/helpers/close.h"
#include "tests/nn/nn_helpers.h"

using namespace hla;
using namespace hla::nn;
using hla::test::values;

namespace {

// ||S_t||_F per (b, t, h) of S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, in double from zeros.
// k, g [B,T,H,K], v [B,T,H,V] (row-major values).
std::vector<double> gla_norms_by_hand(const std::vector<double>& k, const std::vector<double>& v,
                                      const std::vector<double>& g, int64_t B, int64_t T,
                                      int64_t H, int64_t K, int64_t V) {
  std::vector<double> out(B * T * H);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> S(K * V, 0.0);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t kb = ((b * T + t) * H + h) * K, vb = ((b * T + t) * H + h) * V;
        double sq = 0;
        for (int64_t i = 0; i < K; ++i)
          for (int64_t j = 0; j < V; ++j) {
            double& s = S[i * V + j];
            s = std::exp(g[kb + i]) * s + k[kb + i] * v[vb + j];
            sq += s * s;
          }
        out[(b * T + t) * H + h] = std::sqrt(sq);
      }
    }
  return out;
}

std::vector<float> floats(const Tensor& t) { return t.to_vector<float>(); }

ModelConfig tiny_model(const std::string& variant, std::vector<int64_t> attention) {
  ModelConfig c;
  c.variant = variant;
  c = with_variant_defaults(c);
  c.vocab_size = 11;
  c.hidden_size = 16;
  c.num_layers = 3;
  c.num_heads = 2;
  c.expand_ratio = 8;
  c.head_dim = 4;
  c.intermediate_size = 32;
  c.attention = std::move(attention);
  c.attn_num_heads = 4;
  c.attn_num_kv_heads = 2;
  c.initializer_range = 0.3;
  return c;
}

Tensor random_tokens(Generator& gen, int64_t B, int64_t T) {
  std::vector<double> ids;
  for (int64_t i = 0; i < B * T; ++i) ids.push_back(static_cast<double>(gen.below(11)));
  return Tensor::from_values(ids, {B, T}, DType::i64);
}

}  // namespace

TEST_CASE("inspect: recording is off by default and scopes nest", "[nn][inspect]") {
  CHECK(inspect::active() == nullptr);
  CHECK(step_recorder() == nullptr);
  inspect::Recorder outer, inner;
  {
    inspect::RecordScope a(outer);
    CHECK(inspect::active() == &outer);
    {
      inspect::RecordScope b(inner);
      CHECK(inspect::active() == &inner);
      CHECK(step_recorder() == &inner);
    }
    CHECK(inspect::active() == &outer);
  }
  CHECK(inspect::active() == nullptr);
  CHECK(step_recorder() == nullptr);
  // Outside run_step_rule, record_step is a no-op even while recording.
  inspect::RecordScope s(outer);
  record_step("x", Var(Tensor::ones({1, 2})), "nothing");
  CHECK(outer.entries().empty());
}

TEST_CASE("inspect: paths, prefixes, duplicates and per-step stacking", "[nn][inspect]") {
  inspect::Recorder rec;
  rec.set_prefix("layer_00/gla");
  rec.record("decay", Tensor::ones({2, 3}, DType::f64), "d");
  CHECK(rec.get("layer_00/gla/decay").dtype() == DType::f32);
  CHECK(rec.description("layer_00/gla/decay") == "d");
  CHECK_THROWS_WITH(rec.record("decay", Tensor::ones({1}), "again"), Catch::Contains("twice"));
  CHECK_THROWS_WITH(rec.get("layer_00/gla/nope"), Catch::Contains("layer_00/gla/decay"));
  rec.set_prefix("");
  for (int t = 0; t < 4; ++t) rec.record_step("s", Tensor::full({2, 5}, t), "steps");
  const Tensor s = rec.get("s");
  CHECK(s.shape() == Shape{2, 4, 5});
  CHECK(s.at({1, 3, 4}) == 3.0);
}

TEST_CASE("inspect: horizons and attention statistics by hand", "[nn][inspect]") {
  // log decay -0.25 everywhere -> 4 steps to 1/e; 0 -> capped.
  Tensor g = Tensor::full({1, 2, 2, 3}, -0.25);
  g.slice(2, 1, 2).fill_(0.0);
  const Tensor hs = inspect::horizon_per_step(g);
  CHECK(hs.shape() == Shape{1, 2, 2});
  CHECK(hs.at({0, 1, 0}) == Approx(4.0));
  CHECK(hs.at({0, 1, 1}) == Approx(inspect::kMaxHorizon));
  const Tensor hh = inspect::horizon_per_head(Tensor::full({2, 3, 1}, std::log(0.5)));
  CHECK(hh.shape() == Shape{1});
  CHECK(hh.at({0}) == Approx(1.0 / std::log(2.0)));

  // q = 0: uniform weights over the causal past. Query t: entropy log(t+1), distance t/2.
  const Tensor q = Tensor::zeros({1, 3, 2, 4}), k = Tensor::ones({1, 3, 1, 4});
  const inspect::AttentionStats a = inspect::attention_stats(q, k, 0);
  CHECK(a.entropy.shape() == Shape{1, 3, 2});
  for (int64_t t = 0; t < 3; ++t) {
    CHECK(a.entropy.at({0, t, 1}) == Approx(std::log(t + 1.0)));
    CHECK(a.distance.at({0, t, 0}) == Approx(t / 2.0));
  }
  // Window 2: at most itself and one step back.
  const inspect::AttentionStats w = inspect::attention_stats(q, k, 2);
  CHECK(w.entropy.at({0, 2, 0}) == Approx(std::log(2.0)));
  CHECK(w.distance.at({0, 2, 0}) == Approx(0.5));
  // A sharp query on key 0: distance t, entropy ~ 0.
  Tensor q2 = Tensor::zeros({1, 3, 1, 2}), k2 = Tensor::zeros({1, 3, 1, 2});
  q2.fill_(30.0);
  k2.slice(1, 0, 1).fill_(1.0);
  const inspect::AttentionStats sharp = inspect::attention_stats(q2, k2, 0);
  CHECK(sharp.distance.at({0, 2, 0}) == Approx(2.0).margin(1e-6));
  CHECK(sharp.entropy.at({0, 2, 0}) == Approx(0.0).margin(1e-6));
}

TEST_CASE("inspect: GLA decay and state norms equal hand computation", "[nn][inspect]") {
  Generator gen(3);
  GatedLinearAttention gla_layer(GLAOptions{.hidden_size = 8, .num_heads = 2, .initializer_range = 0.3}, gen);
  gla_layer.to(DType::f64);
  const int64_t B = 2, T = 70, H = 2, K = 2, V = 4;  // T = 70: ragged against the 64-chunk
  const Var x(Tensor::randn({B, T, 8}, gen, DType::f64));
  std::vector<double> k, v, g;
  {
    NoGradGuard no_grad;
    k = values(gla_layer.k_proj->forward(x));
    v = values(gla_layer.v_proj->forward(x));
    g = values(logsigmoid(gla_layer.gk_proj->forward(x)) / 16.0);
  }
  const std::vector<double> norms = gla_norms_by_hand(k, v, g, B, T, H, K, V);

  inspect::Recorder rec;
  {
    inspect::RecordScope scope(rec);
    gla_layer.forward(x);
  }
  const Tensor decay = rec.get("decay");
  CHECK(decay.shape() == Shape{B, T, H, K});
  std::vector<double> exp_g(g.size());
  for (size_t i = 0; i < g.size(); ++i) exp_g[i] = std::exp(g[i]);
  REQUIRE_CLOSE("decay", exp_g, values(decay), 1e-6);  // f32 storage
  CHECK(rec.get("state_norm").shape() == Shape{B, T, H});
  REQUIRE_CLOSE("state_norm", norms, values(rec.get("state_norm")), 1e-6);
  CHECK(rec.get("horizon").shape() == Shape{B, T, H});
  CHECK(rec.get("horizon_head").shape() == Shape{H});
  // horizon at (0, 5, 1) = -1 / mean_K g
  const int64_t i = (0 * T + 5) * H + 1;
  CHECK(rec.get("horizon").at({0, 5, 1}) == Approx(-2.0 / (g[i * K] + g[i * K + 1])).epsilon(1e-5));

  // Chunk-boundary variant: norms at t = 63 and 69 only, labelled.
  inspect::Recorder chunked({.state_norms = inspect::StateNorms::ChunkBoundaries});
  {
    inspect::RecordScope scope(chunked);
    gla_layer.forward(x);
  }
  CHECK_FALSE(chunked.has("state_norm"));
  const Tensor sc = chunked.get("state_norm_chunk");
  CHECK(sc.shape() == Shape{B, 2, H});
  CHECK(floats(chunked.get("state_norm_chunk_end")) == std::vector<float>{63, 69});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      CHECK(sc.at({b, 0, h}) == Approx(norms[(b * T + 63) * H + h]).epsilon(1e-5));
      CHECK(sc.at({b, 1, h}) == Approx(norms[(b * T + 69) * H + h]).epsilon(1e-5));
    }
}

TEST_CASE("inspect: every mixer records its gates with the documented shapes", "[nn][inspect]") {
  Generator gen(7);
  const int64_t B = 2, T = 5;
  struct Want {
    std::string kind;
    std::vector<std::pair<std::string, Shape>> shapes;
  };
  const std::vector<Want> wants = {
      {"hgrn", {{"forget_gate", {B, T, 16}}, {"horizon", {B, T, 1}}, {"state_norm", {B, T, 1}}}},
      {"hgrn2", {{"decay", {B, T, 4, 4}}, {"horizon_head", {4}}, {"state_norm", {B, T, 4}}}},
      {"gla", {{"decay", {B, T, 2, 4}}, {"horizon", {B, T, 2}}, {"state_norm", {B, T, 2}}}},
      {"retnet", {{"decay", {2}}, {"horizon_head", {2}}, {"state_norm", {B, T, 2}}}},
      {"delta_net", {{"beta", {B, T, 2}}, {"state_norm", {B, T, 2}}}},
      {"gated_deltanet", {{"alpha", {B, T, 2}}, {"beta", {B, T, 2}}, {"horizon", {B, T, 2}},
                          {"state_norm", {B, T, 2}}}},
      {"attention", {{"entropy", {B, T, 4}}, {"distance", {B, T, 4}}}},
  };
  for (const Want& w : wants) {
    INFO(w.kind);
    auto m = hla::test::tiny_mixer(w.kind, gen);
    const Var x(Tensor::randn({B, T, hla::test::kTinyHidden}, gen, DType::f64));
    inspect::Recorder rec;
    inspect::RecordScope scope(rec);
    m->forward(x);
    for (const auto& [path, shape] : w.shapes) {
      INFO(path);
      REQUIRE(rec.has(path));
      CHECK(rec.get(path).shape() == shape);
      CHECK_FALSE(rec.description(path).empty());
    }
  }
  // RetNet: gamma_h = 1 - 2^(-5-h), horizon -1/log(gamma).
  auto ret = hla::test::tiny_mixer("retnet", gen);
  inspect::Recorder rec;
  {
    inspect::RecordScope scope(rec);
    ret->forward(Var(Tensor::randn({1, 3, 16}, gen, DType::f64)));
  }
  CHECK(rec.get("decay").at({1}) == Approx(1 - std::pow(2.0, -6)));
  CHECK(rec.get("horizon_head").at({0}) == Approx(-1 / std::log(1 - std::pow(2.0, -5))));
}

TEST_CASE("inspect: HybridLM records per layer; recording changes no result", "[nn][inspect]") {
  for (const std::string variant :
       {"hgrn", "hgrn2", "gla", "retnet", "delta_net", "gated_deltanet", "transformer"}) {
    INFO(variant);
    Generator gen(5);
    HybridLM lm(tiny_model(variant, {1}), gen);
    const Tensor tokens = random_tokens(gen, 2, 7);
    const Tensor before = lm.forward(tokens).data();
    inspect::Recorder rec;
    Tensor during;
    {
      inspect::RecordScope scope(rec);
      during = lm.forward(tokens).data();
    }
    const Tensor after = lm.forward(tokens).data();
    REQUIRE(during.numel() == before.numel());
    // Bit-identical: recording only reads.
    CHECK(std::memcmp(before.data<float>(), during.data<float>(), sizeof(float) * before.numel()) == 0);
    CHECK(std::memcmp(before.data<float>(), after.data<float>(), sizeof(float) * before.numel()) == 0);
    CHECK(rec.tokens().shape() == Shape{2, 7});
    CHECK(rec.has("layer_01/attention/entropy"));
    if (variant != "transformer") {
      CHECK(rec.has("layer_00/" + variant + "/state_norm"));
      CHECK(rec.has("layer_02/" + variant + "/state_norm"));
    }
    if (variant == "hgrn") {
      // Lower bounds lb_l = l / L at init (softmax of zeros): none at layer 0, 2/3 at layer 2.
      CHECK_FALSE(rec.has("layer_00/hgrn/lower_bound"));
      CHECK(rec.get("layer_02/hgrn/lower_bound").at({0}) == Approx(2.0 / 3.0));
      const std::vector<float> f = floats(rec.get("layer_02/hgrn/forget_gate"));
      for (float v : f) CHECK(v >= 2.0f / 3.0f - 1e-6f);
    }
  }
}

TEST_CASE("inspect: StepRules record state norms and their own tensors", "[nn][inspect]") {
  Generator gen(11);
  const int64_t B = 1, T = 6, H = 2, K = 3, V = 2;
  const Tensor q = Tensor::randn({B, T, H, K}, gen, DType::f64);
  const Tensor k = Tensor::randn({B, T, H, K}, gen, DType::f64);
  const Tensor v = Tensor::randn({B, T, H, V}, gen, DType::f64);
  const Tensor g = Tensor::rand({B, T, H, K}, gen, DType::f64, -1.0, -0.01);
  const Var h0(Tensor::zeros({B, H, K, V}, DType::f64));
  const RecurrenceResult off = run_step_rule(gla_step_rule(), {Var(q), Var(k), Var(v), Var(g)}, h0);
  inspect::Recorder rec;
  RecurrenceResult on;
  {
    inspect::RecordScope scope(rec);
    rec.set_prefix("proto");
    on = run_step_rule(gla_step_rule(), {Var(q), Var(k), Var(v), Var(g)}, h0);
  }
  CHECK(values(on.o) == values(off.o));  // bit-identical
  CHECK(rec.get("proto/gla/state_norm").shape() == Shape{B, T, H});
  CHECK(rec.get("proto/gla/decay").shape() == Shape{B, T, H, K});
  REQUIRE_CLOSE("state_norm",
                gla_norms_by_hand(values(k), values(v), values(g), B, T, H, K, V),
                values(rec.get("proto/gla/state_norm")), 1e-6);

  // A new rule records a named tensor through the same scope, with no other code.
  const StepRule leaky{"leaky", [](const Var& S, const std::vector<Var>& x) {
                         const Var gate = sigmoid(x[0]);
                         record_step("gate", gate, "sigmoid(x_t) [B,T,D]");
                         const Var S_new = gate * S + x[0];
                         return std::make_pair(S_new, S_new);
                       }};
  inspect::Recorder rec2;
  {
    inspect::RecordScope scope(rec2);
    run_step_rule(leaky, {Var(Tensor::randn({2, 4, 3}, gen))}, Var(Tensor::zeros({2, 3})));
  }
  CHECK(rec2.get("leaky/gate").shape() == Shape{2, 4, 3});
  CHECK(rec2.get("leaky/state_norm").shape() == Shape{2, 4, 1});
}
