// The compute dtype of a model apart from its parameters' (mixed precision's plumbing), on the
// CPU: the autograd cast to_dtype, and a HybridLM of f32 parameters computing in f64 for every
// variant. bf16 compute runs on CUDA only (tests/cuda/test_mixed_precision.cpp); f64 exercises
// the same casts here: every weight cast where it is used, gates in gate_dtype, the logits back
// in the parameters' dtype, gradients arriving in f32 (tied embeddings and biases included).
// And the recurrence nodes refuse bf16 on the CPU, where it is a storage type only.
//
// Tolerances: the f64-compute model differs from the f32 one only by f32 rounding (~6e-8
// relative per op, a few hundred ops deep): loss relative 1e-5, gradients relative RMS 1e-3 by
// name (small gradients sum many terms with cancellation). A cast in the wrong place fails with
// a dtype error or by O(1).
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "autograd/primitives.h"
#include "autograd/recurrences.h"
#include "nn/mixer.h"
#include "nn/model.h"
#include "tests/helpers/close.h"

using namespace hla;

namespace {

std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }

nn::ModelConfig tiny(const std::string& variant, const std::string& layout, int64_t layers) {
  nn::ModelConfig m;
  m.variant = variant;
  m = nn::with_variant_defaults(m);
  m.vocab_size = 32;
  m.hidden_size = 16;
  m.num_layers = layers;
  m.num_heads = 2;
  m.expand_ratio = 8;  // hgrn2: 2 heads
  m.head_dim = 4;      // gated_deltanet: K = 4, V = 8
  m.intermediate_size = 32;
  m.attention = nn::attention_layers(layout, layers);
  m.attn_num_heads = 2;
  m.attn_num_kv_heads = 1;
  m.initializer_range = 0.2;  // every path carries signal
  return m;
}

// inputs and targets [2, T] of random ids.
std::pair<Tensor, Tensor> batch(int64_t T, int64_t vocab) {
  std::mt19937 rng(3);
  std::vector<int32_t> in, out;
  for (int64_t i = 0; i < 2 * T; ++i) {
    in.push_back(static_cast<int32_t>(rng() % vocab));
    out.push_back(static_cast<int32_t>(rng() % vocab));
  }
  return {Tensor::from_vector(in, {2, T}), Tensor::from_vector(out, {2, T})};
}

}  // namespace

TEST_CASE("to_dtype: values converted, the gradient back in the input's dtype", "[nn][precision]") {
  Generator gen(5);
  const Var x(Tensor::randn({3, 4}, gen), /*requires_grad=*/true);
  const Var w(Tensor::randn({3, 4}, gen, DType::f64));
  const Var y = to_dtype(x, DType::f64);
  REQUIRE(y.dtype() == DType::f64);
  REQUIRE_CLOSE("y", vals(x.data()), vals(y.data()), 0.0);
  sum(y * w).backward();
  REQUIRE(x.grad().dtype() == DType::f32);
  REQUIRE_CLOSE("dx", vals(w.data().to(DType::f32)), vals(x.grad()), 0.0);

  CHECK(to_dtype(x, DType::f32).same(x));  // no cast, no node
  CHECK_THROWS_WITH(to_dtype(x, DType::i64), Catch::Contains("to_dtype"));
  CHECK(nn::gate_dtype(DType::bf16) == DType::f32);
  CHECK(nn::gate_dtype(DType::f64) == DType::f64);
}

TEST_CASE("recurrence nodes take bf16 on CUDA only", "[nn][precision]") {
  Generator gen(7);
  const Var q(Tensor::randn({1, 4, 2, 8}, gen).to(DType::bf16));
  const Var g(Tensor::zeros({1, 4, 2, 8}, DType::bf16));
  CHECK_THROWS_WITH(gla(q, q, q, g), Catch::Contains("bf16 on cuda") &&
                                         Catch::Contains("storage type on the CPU"));
  CHECK_THROWS_WITH(softmax_attention(q, q, q), Catch::Contains("bf16 on cuda"));
}

TEST_CASE("HybridLM with f32 parameters computing in f64: every variant", "[nn][precision]") {
  struct Case {
    const char* variant;
    const char* layout;
    bool tied_and_biased;  // tied embeddings (the lm_head reads the table) and qkv biases
  };
  for (const Case c : {Case{"gla", "pure", false}, Case{"hgrn", "pure", false},
                       Case{"hgrn2", "pure", false}, Case{"retnet", "pure", false},
                       Case{"delta_net", "pure", false}, Case{"gated_deltanet", "pure", false},
                       Case{"transformer", "pure", false}, Case{"gla", "1:1", false},
                       Case{"gla", "1:1", true}}) {
    SECTION(std::string(c.variant) + " " + c.layout + (c.tied_and_biased ? " tied, biased" : "")) {
      nn::ModelConfig config = tiny(c.variant, c.layout, 2);
      config.tie_word_embeddings = c.tied_and_biased;
      config.attn_qkv_bias = c.tied_and_biased;
      Generator g32(11), g64(11);
      nn::HybridLM ref(config, g32), mixed(config, g64);
      REQUIRE(mixed.compute_dtype() == DType::f32);  // by default: the parameters' dtype
      mixed.set_compute_dtype(DType::f64);
      REQUIRE(mixed.compute_dtype() == DType::f64);
      const auto [inputs, targets] = batch(24, config.vocab_size);

      const Var loss_ref = ref.loss(inputs, targets);
      const Var loss = mixed.loss(inputs, targets);
      REQUIRE(loss.dtype() == DType::f32);  // the logits return in the parameters' dtype
      REQUIRE(mixed.forward(inputs).dtype() == DType::f32);
      INFO("loss f32 " << loss_ref.item() << ", f64 compute " << loss.item());
      REQUIRE(std::abs(loss.item() - loss_ref.item()) <= 1e-5 * std::abs(loss_ref.item()));

      loss_ref.backward();
      loss.backward();
      const auto named_ref = ref.named_parameters(), named = mixed.named_parameters();
      REQUIRE(named.size() == named_ref.size());
      for (size_t i = 0; i < named.size(); ++i) {
        const auto& [name, p] = named[i];
        INFO(name);
        REQUIRE(p.dtype() == DType::f32);
        REQUIRE(p.grad().defined());
        REQUIRE(p.grad().dtype() == DType::f32);
        REQUIRE_CLOSE("grad " + name, vals(named_ref[i].second.grad()), vals(p.grad()), 1e-3);
      }
    }
  }
}

TEST_CASE("HybridLM compute dtype: decoding follows it, bad dtypes throw", "[nn][precision]") {
  const nn::ModelConfig config = tiny("gated_deltanet", "1:1", 2);
  Generator gen(13);
  nn::HybridLM model(config, gen);
  model.set_compute_dtype(DType::f64);
  const Tensor inputs = batch(6, config.vocab_size).first;
  const Var full = model.forward(inputs);
  auto state = model.start_decoding(2);
  model.decode(inputs.slice(1, 0, 4), *state);  // the prompt
  const Var rest = model.decode(inputs.slice(1, 4, 6), *state);
  REQUIRE(rest.dtype() == DType::f32);
  REQUIRE_CLOSE("decoded logits", vals(full.data().slice(1, 4, 6)), vals(rest.data()), 1e-5);
  CHECK_THROWS_WITH(model.set_compute_dtype(DType::i32), Catch::Contains("set_compute_dtype"));
}
