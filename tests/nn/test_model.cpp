// HybridLM: attention layouts, parameter names, decoding vs. the full forward, a tiny training
// run, config errors.
#include <catch2/catch.hpp>

#include "autograd/fused.h"
#include "autograd/grad_mode.h"
#include "autograd/primitives.h"
#include "nn/model.h"
#include "nn_helpers.h"
#include "tests/helpers/close.h"

using namespace hla;
using namespace hla::nn;
using hla::test::values;
using V = std::vector<int64_t>;

TEST_CASE("attention_layers: every ratio at L = 24", "[nn]") {
  CHECK(attention_layers("pure", 24).empty());
  V all;
  for (int64_t i = 0; i < 24; ++i) all.push_back(i);
  CHECK(attention_layers("transformer", 24) == all);
  CHECK(attention_layers("1:1", 24) == V{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23});
  CHECK(attention_layers("2:1", 24) == V{2, 5, 8, 11, 14, 17, 20, 23});
  CHECK(attention_layers("3:1", 24) == V{3, 7, 11, 15, 19, 23});
  CHECK(attention_layers("5:1", 24) == V{5, 11, 17, 23});
  CHECK(attention_layers("6:1", 24) == V{7, 15, 23});
  CHECK(attention_layers("12:1", 24) == V{11, 23});
  CHECK(attention_layers("24:1", 24) == V{23});
  CHECK(attention_layers("48:1", 24) == V{23});  // at least one
  CHECK(attention_layers("3:1", 8) == V{3, 7});
  for (const char* bad : {"", "3", "3:2", "x:1", "-1:1", "3:1:1", "hybrid"})
    CHECK_THROWS_WITH(attention_layers(bad, 24), Catch::Contains("model.layout"));
  CHECK_THROWS_WITH(attention_layers("3:1", 0), Catch::Contains("model.num_layers"));
}

namespace {
ModelConfig tiny(const std::string& variant, V attention = {}) {
  ModelConfig c;
  c.variant = variant;
  c = with_variant_defaults(c);
  c.vocab_size = 11;
  c.hidden_size = 16;
  c.num_layers = 3;
  c.num_heads = 2;
  c.expand_ratio = 8;  // hgrn2: 2 heads
  c.head_dim = 4;      // gated_deltanet
  c.intermediate_size = 32;
  c.attention = std::move(attention);
  c.attn_num_heads = 4;
  c.attn_num_kv_heads = 2;
  c.initializer_range = 0.3;  // large enough that every layer matters in the checks
  return c;
}
}  // namespace

TEST_CASE("with_variant_defaults applies each variant's fla defaults", "[nn]") {
  ModelConfig c;
  c.variant = "retnet";
  c = with_variant_defaults(c);
  CHECK(c.expand_k == 1.0);
  CHECK(c.expand_v == 2.0);
  CHECK(c.hidden_ratio == 2.0);
  CHECK(c.num_heads == 8);
  c.variant = "delta_net";
  c = with_variant_defaults(c);
  CHECK(c.use_short_conv);
  CHECK_FALSE(c.use_output_gate);
  CHECK(c.hidden_ratio == 4.0);
  c.variant = "gated_deltanet";
  c = with_variant_defaults(c);
  CHECK(c.expand_v == 2.0);
  CHECK(c.use_output_gate);
  CHECK(c.num_heads == 6);
  CHECK(c.head_dim == 256);
  c.variant = "mamba";
  CHECK_THROWS_WITH(with_variant_defaults(c), Catch::Contains("model.variant"));
}

TEST_CASE("HybridLM parameter names follow fla's state dicts", "[nn]") {
  Generator gen(0);
  ModelConfig c = tiny("hgrn", {1});
  c.num_layers = 2;
  HybridLM lm(c, gen);
  std::vector<std::string> names;
  for (auto& [n, v] : lm.named_parameters()) names.push_back(n);
  const std::vector<std::string> expected = {
      "model.lower_bounds", "model.embeddings.weight",
      "model.layers.0.attn_norm.weight", "model.layers.0.attn.i_proj.weight",
      "model.layers.0.attn.f_proj.weight", "model.layers.0.attn.g_proj.weight",
      "model.layers.0.attn.g_norm.weight", "model.layers.0.attn.o_proj.weight",
      "model.layers.0.mlp_norm.weight", "model.layers.0.mlp.gate_proj.weight",
      "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
      "model.layers.1.attn_norm.weight", "model.layers.1.attn.q_proj.weight",
      "model.layers.1.attn.k_proj.weight", "model.layers.1.attn.v_proj.weight",
      "model.layers.1.attn.o_proj.weight", "model.layers.1.mlp_norm.weight",
      "model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight",
      "model.layers.1.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"};
  CHECK(names == expected);
  CHECK(lm.state_dict().at("model.lower_bounds").shape() == Shape{2, 16});

  c.tie_word_embeddings = true;
  HybridLM tied(c, gen);
  CHECK(tied.num_parameters() == lm.num_parameters() - 11 * 16);
  Tensor tokens = Tensor::from_values({1, 2, 3}, {1, 3}, DType::i64);
  CHECK(tied.forward(tokens).shape() == Shape{1, 3, 11});
}

TEST_CASE("HybridLM decoding equals the full forward, for every variant with attention", "[nn]") {
  for (const std::string variant :
       {"hgrn", "hgrn2", "gla", "retnet", "delta_net", "gated_deltanet", "transformer"}) {
    INFO(variant);
    Generator gen(5);
    HybridLM lm(tiny(variant, {1}), gen);
    lm.to(DType::f64);
    std::vector<double> ids;
    for (int i = 0; i < 2 * 9; ++i) ids.push_back(static_cast<double>(gen.below(11)));
    const Tensor tokens = Tensor::from_values(ids, {2, 9}, DType::i64);
    const Var full = lm.forward(tokens);
    CHECK(full.shape() == Shape{2, 9, 11});
    for (const V& pieces : {V(9, 1), V{5, 1, 3}}) {
      auto st = lm.start_decoding(2);
      std::vector<Var> outs;
      int64_t t = 0;
      for (int64_t n : pieces) {
        outs.push_back(lm.decode(tokens.slice(1, t, t + n), *st));
        t += n;
      }
      REQUIRE_CLOSE(variant, values(full), values(concat(outs, 1)), 1e-10);
    }
  }
}

TEST_CASE("HybridLM block checkpointing leaves the loss and every gradient unchanged", "[nn]") {
  for (const std::string variant :
       {"hgrn", "hgrn2", "gla", "retnet", "delta_net", "gated_deltanet", "transformer"}) {
    INFO(variant);
    const Tensor inputs = Tensor::from_values({1, 4, 2, 9, 3, 0, 7, 5}, {2, 4}, DType::i64);
    const Tensor targets = Tensor::from_values({4, 2, 9, -100, 0, 7, 5, 1}, {2, 4}, DType::i64);
    auto run = [&](bool checkpointing) {
      Generator gen(6);
      HybridLM lm(tiny(variant, {1}), gen);
      lm.to(DType::f64);
      if (variant == "hgrn" || variant == "hgrn2")  // lower bounds away from their zero init
        lm.state_dict().at("model.lower_bounds").copy_(Tensor::randn({3, 16}, gen, DType::f64));
      lm.set_block_checkpointing(checkpointing);
      CHECK(lm.block_checkpointing() == checkpointing);
      const Var loss = lm.loss(inputs, targets);
      loss.backward();
      std::vector<std::pair<std::string, Tensor>> out{{"loss", loss.data()}};
      for (auto& [name, p] : lm.named_parameters()) out.emplace_back(name, p.grad());
      return out;
    };
    const auto plain = run(false), kept = run(true);
    REQUIRE(plain.size() == kept.size());
    for (size_t i = 0; i < plain.size(); ++i) {
      REQUIRE(kept[i].second.defined());
      REQUIRE_CLOSE(plain[i].first, values(plain[i].second), values(kept[i].second), 1e-12);
    }
  }
}

TEST_CASE("HybridLM loss (the head and the loss in chunks) equals cross_entropy of its logits",
          "[nn]") {
  for (const std::string variant : {"gla", "transformer"})
    for (bool tied : {false, true}) {
      INFO(variant << " tied " << tied);
      const Tensor inputs = Tensor::from_values({1, 4, 2, 9, 3, 0, 7, 5}, {2, 4}, DType::i64);
      const Tensor targets = Tensor::from_values({4, 2, 9, -100, 0, 7, 5, 1}, {2, 4}, DType::i64);
      auto run = [&](bool fused) {
        Generator gen(8);
        ModelConfig c = tiny(variant, {1});
        c.tie_word_embeddings = tied;
        HybridLM lm(c, gen);
        lm.to(DType::f64);
        const Var loss = fused ? lm.loss(inputs, targets)
                               : cross_entropy(reshape(lm.forward(inputs), {8, c.vocab_size}),
                                               targets.reshape({8}));
        loss.backward();
        std::vector<std::pair<std::string, Tensor>> out{{"loss", loss.data()}};
        for (auto& [name, p] : lm.named_parameters()) out.emplace_back(name, p.grad());
        return out;
      };
      const auto fused = run(true), logits = run(false);
      REQUIRE(fused.size() == logits.size());
      for (size_t i = 0; i < fused.size(); ++i)
        REQUIRE_CLOSE(fused[i].first, values(logits[i].second), values(fused[i].second), 1e-12);
    }
}

TEST_CASE("HybridLM: loss falls on a tiny copy task with plain SGD", "[nn]") {
  Generator gen(6);
  ModelConfig c = tiny("gla", {1});
  c.num_layers = 2;
  c.initializer_range = 0.02;
  HybridLM lm(c, gen);
  // Each row: 6 random tokens in [1, 10], a separator 0, then the same 6 again. Targets are the
  // next token, scored only on the copied half (the first half is unpredictable).
  const int64_t B = 8, T = 13;
  std::vector<double> in(B * T), tgt(B * T, -100);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> seq(14);
    for (int i = 0; i < 6; ++i) seq[i] = seq[7 + i] = 1 + static_cast<double>(gen.below(10));
    seq[6] = 0;
    seq[13] = 0;
    for (int64_t t = 0; t < T; ++t) {
      in[b * T + t] = seq[t];
      if (t >= 6) tgt[b * T + t] = seq[t + 1];
    }
  }
  const Tensor inputs = Tensor::from_values(in, {B, T}, DType::i64);
  const Tensor targets = Tensor::from_values(tgt, {B, T}, DType::i64);
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    for (auto& p : lm.parameters()) p.zero_grad();
    const Var loss = lm.loss(inputs, targets);
    loss.backward();
    if (step == 0) first = loss.item();
    last = loss.item();
    NoGradGuard ng;
    for (auto& p : lm.parameters()) {
      Tensor& w = p.mutable_data();
      w.copy_(sub(Var(w), mul_scalar(Var(p.grad()), 0.5)).data());
    }
  }
  INFO("loss " << first << " -> " << last);
  CHECK(first == Approx(std::log(11.0)).epsilon(0.1));
  CHECK(last < 0.7 * first);
}

TEST_CASE("bad configs throw hla::Error naming the key", "[nn]") {
  Generator gen(0);
  auto throws = [&](ModelConfig c, const std::string& key) {
    INFO(key);
    CHECK_THROWS_AS(validate(c), hla::Error);
    CHECK_THROWS_WITH(validate(c), Catch::Contains(key));
    CHECK_THROWS_WITH(HybridLM(c, gen), Catch::Contains(key));
  };
  ModelConfig c = tiny("gla");
  c.hidden_size = 18;
  c.num_heads = 4;
  throws(c, "model.hidden_size");
  c = tiny("gla");
  c.hidden_size = 0;
  throws(c, "model.hidden_size");
  c = tiny("gla");
  c.num_heads = 0;
  throws(c, "model.num_heads");
  c = tiny("hgrn2");
  c.expand_ratio = 5;
  throws(c, "model.expand_ratio");
  c = tiny("gla", {3});
  throws(c, "model.attention");
  c = tiny("gla", {1, 1});
  throws(c, "model.attention");
  c = tiny("gla", {1});
  c.attn_num_heads = 3;
  throws(c, "model.attn_num_heads");
  c = tiny("gla", {1});
  c.attn_num_kv_heads = 3;
  throws(c, "model.attn_num_kv_heads");
  c = tiny("gla");
  c.vocab_size = -1;
  throws(c, "model.vocab_size");
  c = tiny("gla");
  c.num_layers = 0;
  throws(c, "model.num_layers");
  c = tiny("gla");
  c.variant = "mamba";
  throws(c, "model.variant");
  c = tiny("gated_deltanet");
  c.head_dim = 0;
  throws(c, "model.head_dim");
  HybridLM lm(tiny("gla"), gen);
  CHECK_THROWS_AS(lm.loss(Tensor::zeros({2, 3}, DType::i64), Tensor::zeros({2, 4}, DType::i64)),
                  hla::Error);
}

TEST_CASE("HybridLM state_dict round trip reproduces the logits", "[nn]") {
  Generator g1(1), g2(2);
  const ModelConfig c = tiny("gated_deltanet", {2});
  HybridLM a(c, g1), b(c, g2);
  const Tensor tokens = Tensor::from_values({1, 5, 7, 2}, {1, 4}, DType::i64);
  b.load_state_dict(a.state_dict());
  REQUIRE_CLOSE("logits", values(a.forward(tokens)), values(b.forward(tokens)), 0.0);
  auto st = b.start_decoding(1);
  CHECK_FALSE(b.decode(tokens, *st).requires_grad());  // decoding builds no graph
}

TEST_CASE("HybridLM loss gradients (lower_bounds included) match finite differences", "[nn][gradcheck]") {
  for (const std::string variant : {"hgrn", "hgrn2"}) {
    INFO(variant);
    Generator gen(8);
    HybridLM lm(tiny(variant, {1}), gen);
    lm.to(DType::f64);
    // lower_bounds start at zero; move them so the softmax over layers is not uniform.
    auto sd = lm.state_dict();
    sd.at("model.lower_bounds").copy_(Tensor::randn({3, 16}, gen, DType::f64));
    const Tensor inputs = Tensor::from_values({1, 4, 2, 9, 3, 0, 7, 5}, {2, 4}, DType::i64);
    const Tensor targets = Tensor::from_values({4, 2, 9, -100, 0, 7, 5, 1}, {2, 4}, DType::i64);
    lm.loss(inputs, targets).backward();
    for (auto& [name, p] : lm.named_parameters()) {
      if (name != "model.lower_bounds" && name != "model.layers.2.attn.f_proj.weight" &&
          name != "model.embeddings.weight")
        continue;
      INFO(name);
      const std::vector<double> analytic = values(p.grad());
      for (int64_t i : {int64_t(1), p.numel() / 2 + 1, p.numel() - 2}) {
        double* e = p.mutable_data().data<double>() + i;
        const double saved = *e, h = 1e-6;
        NoGradGuard ng;
        *e = saved + h;
        const double up = lm.loss(inputs, targets).item();
        *e = saved - h;
        const double down = lm.loss(inputs, targets).item();
        *e = saved;
        CHECK(analytic[i] == Approx((up - down) / (2 * h)).margin(1e-8).epsilon(1e-5));
      }
    }
  }
}
