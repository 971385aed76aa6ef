// defines: the two ways of cutting a TokenSource into TokenBatches of [B, T].
//
// RandomWindows (training): each row is a window w of T+1 consecutive tokens starting at an
//   offset drawn uniformly from [0, N - T - 1]; inputs = w[0, T), targets = w[1, T+1). The
//   offsets come from one hla::Generator, so the seed fixes the whole sequence of batches on
//   every machine, and state()/set_state() resume it from a checkpoint. Each row is one
//   hyperslab (or pread) of T+1 tokens: the corpus is never loaded whole.
//
// SequentialWindows (evaluation): window k starts at token k*T and predicts tokens
//   k*T+1 .. k*T+T, so every token but the first is predicted exactly once. The last window may
//   be short; its missing positions hold input 0 and target kIgnoreIndex.
//
// Both keep a reference to the source, which must outlive them.
//
//   auto train = open_token_source("corpus.h5", "train");
//   RandomWindows windows(*train, /*B=*/8, /*T=*/256, /*seed=*/1);
//   TokenBatch batch = windows.next();   // batch.inputs: [8, 256]
//
//   auto val = open_token_source("corpus.h5", "val");
//   SequentialWindows eval(*val, 8, 256);
//   for (int64_t i = 0; i < eval.num_batches(); ++i) { TokenBatch b = eval.batch(i); ... }
#pragma once

#include "data/token_batch.h"
#include "data/token_source.h"
#include "tensor/random.h"

namespace hla::data {

class RandomWindows {
 public:
  // Throws hla::Error unless B, T > 0 and the source holds at least T + 1 tokens.
  RandomWindows(const TokenSource& source, int64_t B, int64_t T, uint64_t seed);

  TokenBatch next();

  Generator::State state() const { return gen_.state(); }
  void set_state(const Generator::State& s) { gen_.set_state(s); }

 private:
  const TokenSource& source_;
  int64_t B_, T_;
  Generator gen_;
};

class SequentialWindows {
 public:
  // Throws hla::Error unless B, T > 0 and the source holds at least 2 tokens.
  SequentialWindows(const TokenSource& source, int64_t B, int64_t T);

  int64_t num_windows() const;  // ceil((N - 1) / T)
  int64_t num_batches() const;  // ceil(num_windows() / B)
  // Windows [i*B, min((i+1)*B, num_windows())): the last batch may have fewer than B rows.
  TokenBatch batch(int64_t i) const;

 private:
  const TokenSource& source_;
  int64_t B_, T_;
};

}  // namespace hla::data
