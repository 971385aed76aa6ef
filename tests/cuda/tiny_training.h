// The tiny training runs of the GPU training tests (test_train_gpu.cpp: CUDA against the CPU;
// test_mixed_precision.cpp: bf16 against fp32): a 32-wide HybridLM of any variant and layout,
// random token batches of a fixed seed, and one step = forward, mean cross-entropy, backward,
// global-norm clipping to 1 (the optimizer's step is the caller's, after its checks).
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "nn/model.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "tests/cuda/cuda_test_helpers.h"

namespace hla::cuda_test {

constexpr int64_t kTinyVocab = 64, kTinyBatch = 2;

struct TrainCase {
  std::string variant;
  std::string layout;  // "pure" or "r:1"
  int64_t num_layers;
  int64_t T;
  std::function<void(nn::ModelConfig&)> options = {};  // layer options beyond the defaults
};

inline nn::ModelConfig tiny_config(const TrainCase& c) {
  nn::ModelConfig m;
  m.variant = c.variant;
  m = nn::with_variant_defaults(m);
  m.vocab_size = kTinyVocab;
  m.hidden_size = 32;
  m.num_layers = c.num_layers;
  m.num_heads = 2;
  m.expand_ratio = 16;  // hgrn2: 2 heads
  m.head_dim = 8;       // gated_deltanet: K = 8, V = 16
  m.intermediate_size = 64;
  m.attention = nn::attention_layers(c.layout, c.num_layers);
  m.attn_num_heads = 2;
  m.attn_num_kv_heads = 2;
  m.initializer_range = 0.1;  // large enough that every layer shapes the loss
  if (c.options) c.options(m);
  return m;
}

// Random token ids [B, T + 1] from rng, cut into inputs [B, T] and targets [B, T].
inline std::pair<Tensor, Tensor> token_batch(std::mt19937& rng, int64_t T) {
  std::vector<int32_t> in, out;
  for (int64_t b = 0; b < kTinyBatch; ++b) {
    std::vector<int32_t> ids(static_cast<size_t>(T + 1));
    for (auto& id : ids) id = static_cast<int32_t>(rng() % kTinyVocab);
    in.insert(in.end(), ids.begin(), ids.end() - 1);
    out.insert(out.end(), ids.begin() + 1, ids.end());
  }
  return {Tensor::from_vector(in, {kTinyBatch, T}), Tensor::from_vector(out, {kTinyBatch, T})};
}

// The tiny runs' AdamW: the paper's betas and weight decay, for each model of a comparison.
inline optim::AdamW tiny_adamw(const nn::HybridLM& model) {
  return optim::AdamW(optim::optim_params(model.named_parameters()),
                      {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1});
}

struct StepResult {
  double loss = 0, grad_norm = 0;  // the norm before clipping
};

// Forward, loss (an f32 scalar on `device`), backward and clipping; the gradients stay in params.
inline StepResult train_step(nn::HybridLM& model, optim::AdamW& opt, const std::vector<Var>& params,
                             const Tensor& inputs, const Tensor& targets, Device device) {
  opt.zero_grad();
  const Var loss = model.loss(inputs.to(device), targets.to(device));
  REQUIRE(loss.device() == device);
  REQUIRE(loss.dtype() == DType::f32);
  loss.backward();
  StepResult r;
  r.loss = loss.item();
  r.grad_norm = optim::clip_grad_norm(params, 1.0);
  return r;
}

}  // namespace hla::cuda_test
