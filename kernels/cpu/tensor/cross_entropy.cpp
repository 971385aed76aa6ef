// Cross-entropy over logits [N, C] with integer targets [N], mean over rows whose target is not
// ignore_index, on CPU. One pass per row computes the log-sum-exp; the softmax is never stored:
//   loss = (1/n) sum_r (lse_r - x_{r, t_r}),   dx_{r,c} = dloss/n * (exp(x_{r,c} - lse_r) - [c == t_r])
#include <algorithm>
#include <cmath>

#include "kernels/cpu/eigen.h"
#include "kernels/ops.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif
#include "tensor/dtype_dispatch.h"

namespace hla::ops {

namespace {
struct CeInputs {
  Tensor logits;
  std::vector<int64_t> targets;
  int64_t n = 0, c = 0, counted = 0;
};

CeInputs prepare(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                 const char* op) {
  require_cpu(logits, op);
  require_cpu(targets, op);
  check_rank(logits, 2, op, "logits", "[N, C]");
  check_rank(targets, 1, op, "targets", "[N]");
  CeInputs in;
  in.logits = logits.contiguous();
  in.n = logits.size(0);
  in.c = logits.size(1);
  if (targets.size(0) != in.n)
    throw Error(op, "targets [N] with N=" + std::to_string(in.n), to_string(targets.shape()));
  in.targets = check_targets(targets, in.c, ignore_index, op);
  for (int64_t t : in.targets) in.counted += t != ignore_index;
  return in;
}
}  // namespace

// On the CPU the targets are always read and checked (no sync to save), so `counted` is unused.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     Tensor* lse_out, [[maybe_unused]] int64_t counted) {
#ifdef HLA_WITH_CUDA
  if (logits.device() == Device::CUDA)
    return cuda::cross_entropy(logits, targets, ignore_index, lse_out, counted);
#endif
  const CeInputs in = prepare(logits, targets, ignore_index, "cross_entropy");
  return visit_floating(in.logits.dtype(), "cross_entropy", [&]<class T>() {
    Tensor lse = Tensor::empty({in.n}, in.logits.dtype());
    const T* px = in.logits.data<T>();
    T* pl = lse.data<T>();
    double total = 0;
#pragma omp parallel for reduction(+ : total) if (in.n * in.c > (1 << 15))
    for (int64_t r = 0; r < in.n; ++r) {
      const T* row = px + r * in.c;
      const T m = *std::max_element(row, row + in.c);
      // Eigen's exp is vectorised; the sum of exp(x - m) <= C terms, each <= 1.
      const Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> xr(row, in.c);
      const double s = static_cast<double>((xr - m).exp().sum());
      const double l = std::log(s) + m;
      pl[r] = static_cast<T>(l);
      if (in.targets[r] != ignore_index) total += l - row[in.targets[r]];
    }
    if (lse_out) *lse_out = lse;
    return Tensor::scalar(in.counted ? total / static_cast<double>(in.counted) : 0.0,
                          in.logits.dtype());
  });
}

Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                              const Tensor& lse, double dloss, [[maybe_unused]] int64_t counted) {
#ifdef HLA_WITH_CUDA
  if (logits.device() == Device::CUDA)
    return cuda::cross_entropy_backward(logits, targets, ignore_index, lse, dloss, counted);
#endif
  const CeInputs in = prepare(logits, targets, ignore_index, "cross_entropy_backward");
  return visit_floating(in.logits.dtype(), "cross_entropy_backward", [&]<class T>() {
    Tensor dx = Tensor::empty(in.logits.shape(), in.logits.dtype());
    const T* px = in.logits.data<T>();
    const T* pl = lse.contiguous().data<T>();
    T* pd = dx.data<T>();
    const double scale = in.counted ? dloss / static_cast<double>(in.counted) : 0.0;
#pragma omp parallel for if (in.n * in.c > (1 << 15))
    for (int64_t r = 0; r < in.n; ++r) {
      T* d = pd + r * in.c;
      if (in.targets[r] == ignore_index) {
        std::fill(d, d + in.c, T(0));
        continue;
      }
      const T* row = px + r * in.c;
      const double l = pl[r];
      const Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> xr(row, in.c);
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(d, in.c) =
          (xr - static_cast<T>(l)).exp() * static_cast<T>(scale);
      d[in.targets[r]] -= static_cast<T>(scale);
    }
    return dx;
  });
}

}  // namespace hla::ops
