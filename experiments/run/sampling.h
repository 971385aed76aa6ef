// defines: sample_token, picking the next token from one row of logits.
//
//   temperature == 0:  argmax (greedy)
//   otherwise:         p_i proportional to exp(logit_i / temperature) over the top_k largest
//                      logits (top_k == 0: all), one uniform draw from `gen` per token
//
// The same logits, options and generator state always give the same token.
#pragma once

#include <cstdint>

#include "tensor/random.h"

namespace hla::run {

struct SamplingOptions {
  double temperature = 0.8;  // >= 0
  int64_t top_k = 40;        // >= 0; 0 keeps every token
};

// logits: [V] contiguous.
int32_t sample_token(const float* logits, int64_t V, const SamplingOptions& options,
                     Generator& gen);

}  // namespace hla::run
