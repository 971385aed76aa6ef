// defines: TokenBatch, the one batch type of hla::data (language-model windows and synthetic
// tasks alike), and masked_accuracy.
//
// inputs and targets are [B, T] row-major int32. targets[b, t] is the id the model should predict
// after reading inputs[b, 0..t]; positions where no loss is taken hold kIgnoreIndex (-100, the
// ignore_index of PyTorch's cross_entropy and of fla), so a loss is a mean over the other
// positions only.
//
//   TokenBatch batch = windows.next();
//   // loss = cross_entropy(model(batch.inputs), batch.targets, ignore_index = kIgnoreIndex)
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace hla::data {

inline constexpr int32_t kIgnoreIndex = -100;

struct TokenBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> inputs;   // [B, T]
  std::vector<int32_t> targets;  // [B, T], kIgnoreIndex where no loss is taken

  // The number of positions that carry a loss.
  int64_t num_targets() const;
};

struct Accuracy {
  int64_t correct = 0, total = 0;
  double value() const { return total ? static_cast<double>(correct) / total : 0.0; }
};

// Accuracy over the positions that carry a loss; predicted: [B, T] ids (e.g. argmax of logits).
// Throws hla::Error if predicted.size() != B * T.
Accuracy masked_accuracy(const TokenBatch& batch, std::span<const int32_t> predicted);

}  // namespace hla::data
