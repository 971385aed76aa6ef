// Embedding: a lookup table weight [num_embeddings, dim]; ids of any shape -> [ids..., dim].
// Init N(0, std^2) (spec/recurrences.md 8.4). fla name: model.embeddings.weight.
#pragma once

#include "nn/module.h"

namespace hla::nn {

class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t dim, Generator& gen, double std = 0.02);
  // ids [...] (i32/i64) -> [..., dim]
  Var forward(const Tensor& ids) const;

  Var weight;  // [num_embeddings, dim]
};

}  // namespace hla::nn
