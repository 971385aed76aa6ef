// defines: RandomWindows, SequentialWindows (see token_windows.h).
#include "data/token_windows.h"

#include <algorithm>
#include <string>

#include "tensor/error.h"

namespace hla::data {

namespace {

void check_shape(const std::string& op, const TokenSource& source, int64_t B, int64_t T,
                 int64_t min_tokens) {
  if (B <= 0 || T <= 0) {
    throw Error(op, "batch size B > 0 and sequence length T > 0",
                "B=" + std::to_string(B) + ", T=" + std::to_string(T));
  }
  if (source.size() < min_tokens) {
    throw Error(op + " " + source.describe(), "at least " + std::to_string(min_tokens) + " tokens",
                std::to_string(source.size()), "use a shorter sequence length or a larger corpus");
  }
}

// Row b of the batch from a window of valid + 1 tokens (valid <= T): positions t < valid get
// input window[t] and target window[t + 1]; the rest are padding (input 0, no target).
void fill_row(TokenBatch& batch, int64_t b, const std::vector<int32_t>& window, int64_t valid) {
  const int64_t T = batch.T;
  for (int64_t t = 0; t < T; ++t) {
    batch.inputs[b * T + t] = t < valid ? window[t] : 0;
    batch.targets[b * T + t] = t < valid ? window[t + 1] : kIgnoreIndex;
  }
}

}  // namespace

// ---- training

RandomWindows::RandomWindows(const TokenSource& source, int64_t B, int64_t T, uint64_t seed)
    : source_(source), B_(B), T_(T), gen_(seed) {
  check_shape("random windows", source, B, T, T + 1);
}

TokenBatch RandomWindows::next() {
  TokenBatch batch{B_, T_, std::vector<int32_t>(B_ * T_), std::vector<int32_t>(B_ * T_)};
  std::vector<int32_t> window(T_ + 1);
  const uint64_t num_starts = static_cast<uint64_t>(source_.size() - T_);
  for (int64_t b = 0; b < B_; ++b) {
    const int64_t start = static_cast<int64_t>(gen_.below(num_starts));
    source_.read(start, T_ + 1, window.data());
    fill_row(batch, b, window, T_);
  }
  return batch;
}

// ---- evaluation

SequentialWindows::SequentialWindows(const TokenSource& source, int64_t B, int64_t T)
    : source_(source), B_(B), T_(T) {
  check_shape("sequential windows", source, B, T, 2);
}

int64_t SequentialWindows::num_windows() const {
  return (source_.size() - 1 + T_ - 1) / T_;
}

int64_t SequentialWindows::num_batches() const {
  return (num_windows() + B_ - 1) / B_;
}

TokenBatch SequentialWindows::batch(int64_t i) const {
  if (i < 0 || i >= num_batches()) {
    throw Error("sequential windows " + source_.describe(),
                "a batch index in [0, " + std::to_string(num_batches()) + ")", std::to_string(i));
  }
  const int64_t first = i * B_;
  const int64_t rows = std::min(B_, num_windows() - first);
  TokenBatch batch{rows, T_, std::vector<int32_t>(rows * T_), std::vector<int32_t>(rows * T_)};
  std::vector<int32_t> window(T_ + 1);
  for (int64_t b = 0; b < rows; ++b) {
    const int64_t start = (first + b) * T_;
    const int64_t count = std::min(T_ + 1, source_.size() - start);
    source_.read(start, count, window.data());
    fill_row(batch, b, window, count - 1);
  }
  return batch;
}

}  // namespace hla::data
