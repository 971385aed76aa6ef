// defines: SelectiveCopy, the selective copying task (Gu & Dao 2023, "Mamba: Linear-Time
// Sequence Modeling with Selective State Spaces", arXiv 2312.00752, section 4.1.1; after
// Arjovsky et al.'s copying task).
//
// What it measures: content-based selection. The tokens to remember sit at random positions
// among blanks, so a model whose state update ignores its input (a fixed decay, a
// time-invariant convolution) cannot tell what to keep; a model with input-dependent gates can
// write the data tokens and skip the blanks. It also needs order: the tokens come back in the
// order they were seen.
//
// Vocabulary (V = vocab_size): 0 = blank, 1 = separator, data tokens in [2, V).
// Example of length T with n = tokens and L = T - n context positions:
//
//   position:  0 ............................ L-1 | L    L+1  ...  L+n-1
//   input:     blanks, with n data tokens d_0..d_{n-1} | sep  d_0  ...  d_{n-2}
//              at sorted random positions          |
//   target:    ignored                             | d_0  d_1  ...  d_{n-1}
//
// Data tokens are uniform in [2, V) (repeats allowed); their n positions are distinct and
// uniform over [0, L). Exactly n scored positions per example.
#pragma once

#include "data/synthetic_task.h"

namespace hla::data {

struct SelectiveCopyConfig {
  int64_t vocab_size = 16;  // Mamba's setting: 16 tokens
  int64_t seq_len = 256;
  int64_t tokens = 16;  // n, the number of data tokens to copy
};

class SelectiveCopy final : public SyntheticTask {
 public:
  // Throws hla::Error unless vocab_size >= 3 and 1 <= tokens <= seq_len / 2.
  explicit SelectiveCopy(const SelectiveCopyConfig& config);

  std::string describe() const override;
  int64_t vocab_size() const override { return c_.vocab_size; }
  int64_t seq_len() const override { return c_.seq_len; }
  void example(uint64_t seed, uint64_t index, int32_t* inputs, int32_t* targets) const override;

  static constexpr int32_t kBlank = 0, kSeparator = 1;

 private:
  SelectiveCopyConfig c_;
};

}  // namespace hla::data
