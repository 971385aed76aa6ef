// defines: backward_micro_batch, gradient accumulation over micro-batches.
//
// A batch of n equal micro-batches (same number of scored positions each) has the mean loss
//   L = (1/n) * sum_k L_k,
// so its gradient is the sum of the micro-batch gradients of L_k / n. Leaf gradients already
// accumulate across backward() calls (autograd/var.h), so each micro-batch runs
//   backward_micro_batch(loss_k, n)
// and one optimizer step follows the n-th; the result equals one backward on the full batch up
// to rounding, with 1/n of the activation memory.
#pragma once

#include <cstdint>

#include "autograd/var.h"

namespace hla::optim {

// loss: a one-element Var; num_micro_batches >= 1.
inline void backward_micro_batch(const Var& loss, int64_t num_micro_batches) {
  loss.backward(
      Tensor::full(loss.shape(), 1.0 / double(num_micro_batches), loss.dtype(), loss.device()));
}

}  // namespace hla::optim
