// Linear: y = x W^T (+ b), PyTorch layout W [out, in] so fla/PyTorch checkpoints load as they are.
//
//   Linear q_proj(1024, 512, /*bias=*/false, gen);   // weight [512, 1024] ~ N(0, 0.02^2)
//   Var q = q_proj.forward(x);                       // x [B, T, 1024] -> [B, T, 512]
//
// Init (spec/recurrences.md 0.9): weight ~ N(0, std^2), bias = 0.
// Computes in x's dtype: weight and bias are cast to it where used (mixed precision: f32 master
// weights, bf16 activations; no cast when the dtypes agree).
#pragma once

#include "nn/module.h"

namespace hla::nn {

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen, double std = 0.02);
  // x [..., in] -> [..., out]
  Var forward(const Var& x) const;

  int64_t in_features, out_features;
  Var weight;  // [out, in]
  Var bias;    // [out] or undefined
};

}  // namespace hla::nn
