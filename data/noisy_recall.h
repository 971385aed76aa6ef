// defines: NoisyRecall, recall of one key-value pair at a controlled distance through noise.
//
// What it measures: how long a memory survives. One pair (k, v) is written, then `distance`
// positions later k is asked again; everything in between is noise that the model's state also
// absorbs. Sweeping distance traces accuracy against time since writing, which shows each
// layer's effective memory horizon (how fast its forget gates erase an association) far more
// directly than perplexity; `distractors` extra pairs with other keys add interference, so
// sweeping them probes capacity at a fixed distance. Unlike MQAR, the distance is an exact,
// chosen number rather than a power-law draw.
//
// Vocabulary (V = vocab_size, K = V/4): keys in [0, K), values in [K, 2K), noise in [2K, V);
// the three ranges are disjoint, so noise can never look like a key or value.
// Example of length T with d = distance (drawn uniformly from [distance, max_distance]):
//
//   position:  ...noise...  p   p+1  ...noise and distractor pairs...  T-1
//   input:                  k   v                                       k
//   target:    ignored everywhere except position T-1, whose target is v
//
//   p = T - 1 - d. The distractors are pairs (k', v') with distinct keys k' != k at random
//   non-overlapping positions before T-1, anywhere except p and p+1 (before or after the pair).
//   One scored position per example.
#pragma once

#include "data/synthetic_task.h"

namespace hla::data {

struct NoisyRecallConfig {
  int64_t vocab_size = 512;
  int64_t seq_len = 256;
  int64_t distance = 64;      // positions from the key to its query
  int64_t max_distance = -1;  // if > distance, d is uniform in [distance, max_distance]
  int64_t distractors = 0;    // extra pairs with other keys
};

class NoisyRecall final : public SyntheticTask {
 public:
  // Throws hla::Error unless 2 <= distance <= max_distance <= seq_len - 1, vocab_size >= 8, and
  // the distractors fit (2 * (distractors + 1) <= seq_len / 2 positions, distractors < V/4 keys).
  explicit NoisyRecall(const NoisyRecallConfig& config);

  std::string describe() const override;
  int64_t vocab_size() const override { return c_.vocab_size; }
  int64_t seq_len() const override { return c_.seq_len; }
  void example(uint64_t seed, uint64_t index, int32_t* inputs, int32_t* targets) const override;

 private:
  NoisyRecallConfig c_;
};

}  // namespace hla::data
