// The language-model head and its loss in one node: mean cross-entropy of the logits x W^T
// against targets, over chunks of rows, so that the [N, V] logits and their gradient never
// exist whole (at the 340M layouts with B = 8, T = 2048 and a 32000 vocabulary each is 1 GiB in
// bf16). The loss is linear in its upstream gradient g, so the forward forms the gradients for
// g = 1 chunk by chunk while the chunk's logits are at hand:
//   mean = sum_c sum_{counted rows r of c} (lse_r - logits_{r,t_r}) / n,   n = counted rows
//   dlogits_c = (softmax(logits_c) - onehot(t_c)) / n   (cross_entropy_backward, dloss = n_c / n)
//   dx_c = dlogits_c W,   dW = sum_c dlogits_c^T x_c   (ops::matmul_acc into f32, f64 for f64)
// and the backward scales them by g. The node keeps those two gradients, not x, W or logits.
// A W of another dtype than x (the f32 master weight under bf16 compute) is cast to x's dtype
// for the products; dW's f32 (f64) sum is returned in W's dtype, so an f32 W gets it unrounded.
#include <algorithm>
#include <string>

#include "autograd/fused.h"
#include "autograd/node.h"
#include "kernels/ops.h"
#include "tensor/error.h"

namespace hla {

namespace {

constexpr int64_t kChunkEntries = int64_t(1) << 26;  // logits of one chunk: 128 MiB in bf16

struct LinearCrossEntropyNode : Node {
  Tensor dx, dw;  // the inputs' gradients for an upstream gradient of 1
  const char* name() const override { return "linear_cross_entropy"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    if (!g[0].defined()) return {Tensor(), Tensor()};
    const double s = g[0].item();
    auto scaled = [&](const Tensor& t) {
      return !t.defined() || s == 1.0 ? t : ops::mul_scalar(t, s);
    };
    return {scaled(dx), scaled(dw)};
  }
  void release() override { dx = dw = Tensor(); }
};

// Counted rows (target != ignore_index) of each chunk of `rows` rows. The targets are read on
// the host and checked against the vocabulary once here, so the chunks' cross-entropy calls
// take their counts and read nothing on the host.
std::vector<int64_t> counted_rows(const Tensor& targets, int64_t vocab, int64_t ignore_index,
                                  int64_t rows) {
  const std::vector<int64_t> t =
      check_targets(targets, vocab, ignore_index, "linear_cross_entropy");
  std::vector<int64_t> counts((t.size() + rows - 1) / rows, 0);
  for (size_t i = 0; i < t.size(); ++i) counts[i / rows] += t[i] != ignore_index;
  return counts;
}

}  // namespace

Var linear_cross_entropy(const Var& x, const Var& W, const Tensor& targets, int64_t ignore_index,
                         int64_t chunk_rows) {
  const char* op = "linear_cross_entropy";
  if (x.dim() != 2) throw Error(op, "x [N, F]", to_string(x.shape()));
  if (W.dim() != 2 || W.size(1) != x.size(1))
    throw Error(op, "W [V, F] with F = " + std::to_string(x.size(1)), to_string(W.shape()),
                "W is the head's weight, one row per vocabulary entry");
  if (targets.dim() != 1 || targets.size(0) != x.size(0))
    throw Error(op, "targets [N] with N = " + std::to_string(x.size(0)),
                to_string(targets.shape()));
  if (!is_floating(x.dtype()) || !is_floating(W.dtype()))
    throw Error(op, "floating x and W",
                std::string(dtype_name(x.dtype())) + " and " + dtype_name(W.dtype()));
  if (x.device() != W.device() || x.device() != targets.device())
    throw Error(op, "x, W and targets on one device",
                std::string("x on ") + device_name(x.device()) + ", W on " +
                    device_name(W.device()) + ", targets on " + device_name(targets.device()));
  if (chunk_rows < 0)
    throw Error(op, "chunk_rows >= 0 (0: chosen by the op)", std::to_string(chunk_rows));
  const int64_t N = x.size(0), F = x.size(1), V = W.size(0);
  // The default chunk: about kChunkEntries logits, in whole 128-row GEMM tiles when that many fit.
  int64_t rows = chunk_rows > 0 ? chunk_rows : kChunkEntries / std::max<int64_t>(V, 1);
  if (chunk_rows == 0 && rows > 128) rows -= rows % 128;
  rows = std::max<int64_t>(1, std::min<int64_t>(N, rows));
  const std::vector<int64_t> counts = counted_rows(targets, V, ignore_index, rows);
  const Tensor ids = targets.to(DType::i64).contiguous();  // once, on the targets' device
  int64_t n = 0;
  for (int64_t c : counts) n += c;

  auto node = std::make_shared<LinearCrossEntropyNode>();
  const bool grad = should_record({x, W});
  const bool want_dx = grad && x.requires_grad(), want_dw = grad && W.requires_grad();
  const DType acc = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  const Tensor xd = x.data(), Wd = W.data().to(x.dtype()), Wt = Wd.transpose(0, 1);
  Tensor loss, dw;
  std::vector<Tensor> dx_parts;
  for (int64_t c = 0, r0 = 0; r0 < N; ++c, r0 += rows) {
    const int64_t r1 = std::min(N, r0 + rows), nc = counts[static_cast<size_t>(c)];
    const Tensor xc = xd.slice(0, r0, r1), tc = ids.slice(0, r0, r1);
    if (nc == 0) {  // no loss and no gradient from these rows
      if (want_dx) dx_parts.push_back(Tensor::zeros({r1 - r0, F}, x.dtype(), x.device()));
      continue;
    }
    const Tensor logits = ops::matmul(xc, Wt);
    Tensor lse;
    const Tensor part = ops::mul_scalar(ops::cross_entropy(logits, tc, ignore_index, &lse, nc),
                                        static_cast<double>(nc) / static_cast<double>(n));
    loss = loss.defined() ? ops::binary(ops::Binary::Add, loss, part) : part;
    if (!want_dx && !want_dw) continue;
    const Tensor dlogits =
        ops::cross_entropy_backward(logits, tc, ignore_index, lse,
                                    static_cast<double>(nc) / static_cast<double>(n), nc);
    if (want_dx) dx_parts.push_back(ops::matmul(dlogits, Wd));
    if (want_dw) {
      if (!dw.defined()) dw = Tensor::zeros({V, F}, acc, x.device());
      ops::matmul_acc(dw, dlogits.transpose(0, 1), xc);
    }
  }
  if (!loss.defined())  // every row ignored: 0, as cross_entropy
    loss = Tensor::zeros({}, acc, x.device());
  if (want_dx) node->dx = dx_parts.size() == 1 ? dx_parts[0] : ops::concat(dx_parts, 0);
  if (want_dw)
    node->dw = dw.defined() ? dw.to(W.dtype()) : Tensor::zeros({V, F}, W.dtype(), W.device());
  // Wd, a cast copy of W, is dropped here: the node keeps only the gradients.
  // x and W enter as edges: the backward reads neither.
  return record1(node, {without_values(x), without_values(W)}, loss);
}

}  // namespace hla
