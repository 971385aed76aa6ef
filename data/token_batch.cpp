// defines: TokenBatch::num_targets, masked_accuracy (see token_batch.h).
#include "data/token_batch.h"

#include <algorithm>
#include <string>

#include "tensor/error.h"

namespace hla::data {

int64_t TokenBatch::num_targets() const {
  return std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t != kIgnoreIndex; });
}

Accuracy masked_accuracy(const TokenBatch& batch, std::span<const int32_t> predicted) {
  if (static_cast<int64_t>(predicted.size()) != batch.B * batch.T) {
    throw Error("masked_accuracy",
                "predicted ids of shape [B,T]=[" + std::to_string(batch.B) + "," +
                    std::to_string(batch.T) + "]",
                std::to_string(predicted.size()) + " values", "pass argmax over the vocabulary");
  }
  Accuracy acc;
  for (size_t i = 0; i < predicted.size(); ++i) {
    if (batch.targets[i] == kIgnoreIndex) continue;
    ++acc.total;
    acc.correct += predicted[i] == batch.targets[i];
  }
  return acc;
}

}  // namespace hla::data
