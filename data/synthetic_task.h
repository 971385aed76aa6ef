// defines: SyntheticTask, the interface of the synthetic memory probes (MQAR, selective copying,
// noisy recall), and make_synthetic_task, which builds one from a spec string.
//
// A task is an endless, deterministic stream of examples generated on the fly: example `index`
// under `seed` is a pure function of (task parameters, seed, index), independent of the batch
// size and of what was generated before. Training draws batch(seed, step * B, B); evaluation
// uses another seed. Each example is [T] inputs and [T] targets, with kIgnoreIndex wherever no
// loss (and no accuracy) is taken, so loss and accuracy count only the positions the task is
// about.
//
// Spec strings: "NAME" or "NAME:key=value,key=value,...", e.g.
//   "mqar:vocab_size=8192,seq_len=256,pairs=16"
//   "selective_copy:seq_len=512,tokens=16"
//   "noisy_recall:seq_len=256,distance=128,distractors=4"
// Unknown names or keys throw hla::Error listing the accepted ones; describe() returns the full
// spec with every parameter, which make_synthetic_task accepts back.
//
//   auto task = make_synthetic_task("mqar:seq_len=64,pairs=4");
//   TokenBatch batch = task->batch(/*seed=*/0, /*first=*/step * 32, /*B=*/32);
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/token_batch.h"
#include "tensor/random.h"

namespace hla::data {

class SyntheticTask {
 public:
  virtual ~SyntheticTask() = default;
  virtual std::string describe() const = 0;  // the full spec string
  virtual int64_t vocab_size() const = 0;    // ids are in [0, vocab_size())
  virtual int64_t seq_len() const = 0;       // T

  // Example `index` under `seed`: inputs[0, T) and targets[0, T).
  virtual void example(uint64_t seed, uint64_t index, int32_t* inputs, int32_t* targets) const = 0;

  // Examples first, ..., first + B - 1 as a [B, T] batch.
  TokenBatch batch(uint64_t seed, uint64_t first, int64_t B) const;
};

// The generator of one example: seeded by a hash of (seed, index), so examples are independent
// streams (consecutive indices do not share shifted SplitMix64 sequences).
Generator example_generator(uint64_t seed, uint64_t index);

// n distinct integers drawn uniformly from [lo, hi), in random order (sparse Fisher-Yates: O(n)
// whatever the range). Requires 0 <= n <= hi - lo.
std::vector<int32_t> draw_distinct(Generator& gen, int64_t lo, int64_t hi, int64_t n);

// Builds a task from a spec string (see above).
std::unique_ptr<SyntheticTask> make_synthetic_task(const std::string& spec);

}  // namespace hla::data
