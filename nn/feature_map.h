// Elementwise maps applied to q and k before a linear-attention recurrence: fla's `feature_map`
// of GLA and RetNet (spec/recurrences.md 3.3 step 5, 4.4 step 1) and the non-silu
// `qk_activation`s of DeltaNet (5.3).
//
//   relu(x)    = max(x, 0)
//   silu(x)    = swish(x) = x * sigmoid(x)
//   sigmoid(x) = 1 / (1 + exp(-x))
//   elu_p1(x)  = elu(x) + 1 = x + 1 (x >= 0), exp(x) (x < 0)      (DeltaNet's "elu")
//
// The feature-map names are those on which fla's GLA table (fla.modules.activations.ACT2FN) and
// RetNet's (transformers' ACT2FN) agree and that are plain elementwise maps; "none" is fla's None.
#pragma once

#include <string>

#include "autograd/var.h"

namespace hla::nn {

// "none" | "relu" | "silu" | "swish" | "sigmoid"
bool is_feature_map(const std::string& name);
// Throws hla::Error naming `key` unless is_feature_map(name).
void check_feature_map(const std::string& key, const std::string& name);
// x of any shape -> the map applied elementwise ("none": x itself).
Var apply_feature_map(const std::string& name, const Var& x);

// elu(x) + 1, written as relu(x) + exp(-relu(-x)) so that exp never sees a positive argument.
Var elu_p1(const Var& x);

}  // namespace hla::nn
