// defines: RunData, the batches a run trains and evaluates on, from data.task (a synthetic
// task) or data.path (a token file), with the determinism resume relies on:
//
//   synthetic task   training micro-batch k of step s holds examples
//                      first = (s * grad_accum + k) * micro_B, ..., first + micro_B - 1
//                    of the stream seeded by train.seed: a pure function of the step, so no
//                    state needs saving. Validation batch i is examples i*B ... of the stream
//                    seeded by train.seed + 1 (never seen in training).
//   token file       training windows come from RandomWindows(train split, micro_B, T, seed),
//                    whose generator state is saved in checkpoints; validation batch i is
//                    SequentialWindows(val split, B, T).batch(i), the start of the val split.
#pragma once

#include <memory>

#include "data/synthetic_task.h"
#include "data/token_source.h"
#include "data/token_windows.h"
#include "experiments/run/config.h"

namespace hla::run {

class RunData {
 public:
  // Opens the task or files of config.data. Throws hla::Error naming the data.* key on a bad
  // task spec, a missing file, or a seq_len that disagrees with train.seq_len.
  explicit RunData(const RunConfig& config);
  ~RunData();

  bool synthetic() const { return task_ != nullptr; }
  int64_t vocab_size() const;  // of the task or the token file
  std::string describe() const;

  // Micro-batch `micro` (of grad_accum) of optimizer step `step`: [micro_B, T].
  data::TokenBatch train_batch(int64_t step, int64_t micro);
  // How many validation batches evaluation uses (train.eval_batches, fewer if val is short).
  int64_t num_val_batches() const;
  data::TokenBatch val_batch(int64_t i) const;

  Generator::State rng_state() const;
  void set_rng_state(const Generator::State& state);

 private:
  RunConfig config_;
  int64_t micro_batch_;
  std::unique_ptr<data::SyntheticTask> task_;
  std::unique_ptr<data::TokenSource> train_source_, val_source_;
  std::unique_ptr<data::RandomWindows> train_windows_;
  std::unique_ptr<data::SequentialWindows> val_windows_;
};

}  // namespace hla::run
