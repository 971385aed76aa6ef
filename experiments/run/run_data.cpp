#include "experiments/run/run_data.h"

#include <algorithm>

#include "tensor/error.h"

namespace hla::run {

namespace {
// Adds seq_len = T to a task spec that does not set it ("mqar:pairs=8" ->
// "mqar:pairs=8,seq_len=64").
std::string with_seq_len(const std::string& spec, int64_t T) {
  if (spec.find("seq_len=") != std::string::npos) return spec;
  const std::string extra = "seq_len=" + std::to_string(T);
  return spec + (spec.find(':') == std::string::npos ? ":" : ",") + extra;
}
}  // namespace

RunData::RunData(const RunConfig& config)
    : config_(config), micro_batch_(config.train.batch_size / config.train.grad_accum) {
  const TrainConfig& t = config.train;
  const DataConfig& d = config.data;
  if (!d.task.empty()) {
    try {
      task_ = data::make_synthetic_task(with_seq_len(d.task, t.seq_len));
    } catch (const Error& e) {
      throw Error("config", "data.task to be a valid synthetic task spec", "'" + d.task + "'",
                  e.what());
    }
    if (task_->seq_len() != t.seq_len)
      throw Error("config",
                  "the seq_len of data.task to equal train.seq_len = " + std::to_string(t.seq_len),
                  std::to_string(task_->seq_len()),
                  "drop seq_len from the task spec: it defaults to train.seq_len");
    return;
  }
  const data::TokenFileFormat format = data::parse_token_file_format(d.format);
  train_source_ = data::open_token_source(d.path, d.train_split, format, d.bin_vocab_size);
  val_source_ = data::open_token_source(d.val_path.empty() ? d.path : d.val_path, d.val_split,
                                        format, d.bin_vocab_size);
  if (val_source_->vocab_size() != train_source_->vocab_size())
    throw Error("config",
                "data.val_path with the vocabulary of data.path (" +
                    std::to_string(train_source_->vocab_size()) + ")",
                std::to_string(val_source_->vocab_size()));
  train_windows_ = std::make_unique<data::RandomWindows>(*train_source_, micro_batch_, t.seq_len,
                                                         static_cast<uint64_t>(t.seed));
  if (val_source_->size() >= 2)
    val_windows_ = std::make_unique<data::SequentialWindows>(*val_source_, t.batch_size, t.seq_len);
}

RunData::~RunData() = default;

int64_t RunData::vocab_size() const {
  return task_ ? task_->vocab_size() : train_source_->vocab_size();
}

std::string RunData::describe() const {
  return task_ ? task_->describe() : train_source_->describe();
}

data::TokenBatch RunData::train_batch(int64_t step, int64_t micro) {
  if (task_) {
    const uint64_t first =
        static_cast<uint64_t>((step * config_.train.grad_accum + micro) * micro_batch_);
    return task_->batch(static_cast<uint64_t>(config_.train.seed), first, micro_batch_);
  }
  return train_windows_->next();
}

int64_t RunData::num_val_batches() const {
  if (task_) return config_.train.eval_batches;
  return val_windows_ ? std::min(config_.train.eval_batches, val_windows_->num_batches()) : 0;
}

data::TokenBatch RunData::val_batch(int64_t i) const {
  const int64_t B = config_.train.batch_size;
  if (task_)
    return task_->batch(static_cast<uint64_t>(config_.train.seed) + 1, static_cast<uint64_t>(i * B),
                        B);
  return val_windows_->batch(i);
}

Generator::State RunData::rng_state() const {
  return train_windows_ ? train_windows_->state() : Generator::State{0, false, 0.0};
}

void RunData::set_rng_state(const Generator::State& state) {
  if (train_windows_) train_windows_->set_state(state);
}

}  // namespace hla::run
