// Benchmarks CPU training throughput: one optimizer step (forward, backward, global-norm
// clipping, AdamW) of a tiny HybridLM (4 layers, hidden 256, vocab 8192) on MQAR batches of
// B = 8 sequences of T = 256 tokens, for every variant (pure, and the transformer) and for a GLA
// 3:1 hybrid. items_processed counts input tokens, so items_per_second is tokens/s.
//
// Before timing, each model must pass a sanity check: the loss at initialisation is finite and
// near ln(vocab) (the uniform prediction of a N(0, 0.02^2)-initialised model), and one step
// gives a finite gradient norm; otherwise the case reports an error instead of a number.
//
//   ./bench/bench_train_cpu --benchmark_min_time=0   (a few iterations per case)
#include <benchmark/benchmark.h>

#include <cmath>
#include <memory>

#include "data/synthetic_task.h"
#include "nn/model.h"
#include "optim/adamw.h"
#include "optim/clip.h"

namespace {

constexpr int64_t kB = 8, kT = 256, kVocab = 8192;

hla::nn::ModelConfig tiny_config(const std::string& variant, const std::string& layout) {
  hla::nn::ModelConfig c;
  c.variant = variant;
  c.hidden_size = 256;
  c.num_layers = 4;
  c.vocab_size = kVocab;
  c = hla::nn::with_variant_defaults(c);
  c.num_heads = 4;
  c.expand_ratio = 64;  // HGRN2: 4 heads of 64
  c.head_dim = 64;      // Gated DeltaNet
  c.attn_num_heads = c.attn_num_kv_heads = 4;
  c.attention =
      hla::nn::attention_layers(variant == "transformer" ? "transformer" : layout, c.num_layers);
  hla::nn::validate(c);
  return c;
}

struct Step {
  hla::nn::HybridLM& model;
  hla::optim::AdamW& opt;
  std::vector<hla::Var> params;
  hla::Tensor inputs, targets;
  // One training step; returns {loss, grad_norm}.
  std::pair<double, double> operator()() {
    opt.zero_grad();
    const hla::Var loss = model.loss(inputs, targets);
    loss.backward();
    const double norm = hla::optim::clip_grad_norm(params, 1.0);
    opt.step(1e-3);
    return {loss.item(), norm};
  }
};

void BM_TrainStep(benchmark::State& state, const std::string& variant, const std::string& layout) {
  hla::Generator gen(0);
  hla::nn::HybridLM model(tiny_config(variant, layout), gen);
  hla::optim::AdamW opt(hla::optim::optim_params(model.named_parameters()),
                        {.beta2 = 0.95, .weight_decay = 0.1});
  const auto task = hla::data::make_synthetic_task("mqar:vocab_size=8192,seq_len=256,pairs=16");
  const hla::data::TokenBatch batch = task->batch(0, 0, kB);
  Step step{model, opt, model.parameters(),
            hla::Tensor::from_vector<int32_t>(batch.inputs, {kB, kT}),
            hla::Tensor::from_vector<int32_t>(batch.targets, {kB, kT})};

  const auto [loss0, norm0] = step();
  if (!(std::isfinite(loss0) && std::abs(loss0 - std::log(double(kVocab))) < 0.5 &&
        std::isfinite(norm0))) {
    state.SkipWithError(("initial loss " + std::to_string(loss0) +
                         " is not ~ln(8192) = 9.01, or the "
                         "gradient norm is not finite")
                            .c_str());
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(step());
  state.SetItemsProcessed(state.iterations() * kB * kT);
  state.counters["params_M"] = double(model.num_parameters()) / 1e6;
}

void register_all() {
  for (const char* v :
       {"hgrn", "hgrn2", "gla", "retnet", "delta_net", "gated_deltanet", "transformer"}) {
    const std::string layout = std::string(v) == "transformer" ? "transformer" : "pure";
    benchmark::RegisterBenchmark(("train_step/" + std::string(v) + "/" + layout).c_str(),
                                 BM_TrainStep, v, layout)
        ->Iterations(2)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("train_step/gla/3:1", BM_TrainStep, "gla", "3:1")
      ->Iterations(2)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
