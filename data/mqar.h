// defines: Mqar, multi-query associative recall as in the Zoology benchmark (Arora et al. 2023,
// "Zoology: Measuring and Improving Recall in Efficient Language Models", arXiv 2312.04927;
// zoology/data/associative_recall.py, multiquery_ar).
//
// What it measures: whether a model can store D key-value associations in its state and
// retrieve each one when its key reappears later, in any order. Softmax attention solves it at
// any T; a fixed-size recurrent state has to hold D pairs at once, so accuracy as a function of
// (D, state size) is the standard recall-capacity probe for linear attention and hybrids.
//
// Vocabulary (V = vocab_size): keys in [1, V/2), values in [V/2, V), filler anywhere in [0, V).
// Example of length T (even), D = pairs, 4*D <= T:
//
//   position:  0  1  2  3 ...  2D-2 2D-1 | 2D   2D+1  2D+2  2D+3  ...          T-1
//   input:     k0 v0 k1 v1 ... kD-1 vD-1 | slot 0      slot 1      ... slot S-1
//
//   The kv block holds D distinct keys, each followed by its value (D distinct values). After it
//   come S = (T - 2D)/2 slots of two positions. D slots, drawn without replacement with
//   P(slot g) proportional to (g + 1)^(a - 1) (a power law, a = power_a = 0.01 as in Zoology, so
//   most queries come soon after the kv block and a few come late), each get one key, in random
//   order: input[2D + 2g] = k_i. Every other position after the block is filler drawn uniformly
//   from [0, V) (the value is never shown after its query).
//   target[2D + 2g] = v_i (predict the value right after reading the query key); every other
//   target is kIgnoreIndex. So each example has exactly D scored positions.
//
// "Distance" of a query: its slot g (2g positions after the kv block); the key itself sits
// 2D + 2g - 2i positions earlier.
//
// Usual grid (Zoology): T in 64..512, D in 4..64, V = 8192.
#pragma once

#include "data/synthetic_task.h"

namespace hla::data {

struct MqarConfig {
  int64_t vocab_size = 8192;
  int64_t seq_len = 256;
  int64_t pairs = 16;
  double power_a = 0.01;  // query slot g has weight (g + 1)^(power_a - 1)
};

class Mqar final : public SyntheticTask {
 public:
  // Throws hla::Error unless T is even, 4*D <= T, D < V/2 - 1 keys fit, and 0 < power_a <= 1.
  explicit Mqar(const MqarConfig& config);

  std::string describe() const override;
  int64_t vocab_size() const override { return c_.vocab_size; }
  int64_t seq_len() const override { return c_.seq_len; }
  void example(uint64_t seed, uint64_t index, int32_t* inputs, int32_t* targets) const override;

  const MqarConfig& config() const { return c_; }

 private:
  MqarConfig c_;
  std::vector<double> slot_weight_;  // [S], the unnormalised power law
};

}  // namespace hla::data
