// Helpers for testing recurrence kernels on flat row-major buffers [B,T,...]: central finite
// differences of a scalar loss, and cutting / joining sequences along time (state-carry tests).
#pragma once

#include <cstdint>
#include <vector>

namespace hla::test {

// dL/dx for every element of x by central differences: each element is perturbed in place by
// +-eps, loss() evaluated, and restored. In f64 with eps = 1e-5 the truncation error is ~eps^2
// and the round-off ~1e-16/eps, both far below a 1e-7 tolerance.
template <class Loss>
std::vector<double> central_differences(std::vector<double>& x, Loss&& loss, double eps = 1e-5) {
  std::vector<double> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + eps;
    const double up = loss();
    x[i] = x0 - eps;
    const double down = loss();
    x[i] = x0;
    grad[i] = (up - down) / (2 * eps);
  }
  return grad;
}

// x [B,T,inner] -> steps [t0, t1) of every batch row, [B,t1-t0,inner].
template <class S>
std::vector<S> time_slice(const std::vector<S>& x, int64_t B, int64_t T, int64_t inner,
                          int64_t t0, int64_t t1) {
  std::vector<S> out;
  for (int64_t b = 0; b < B; ++b)
    out.insert(out.end(), x.begin() + (b * T + t0) * inner, x.begin() + (b * T + t1) * inner);
  return out;
}

// [B,T1,...] and [B,T2,...] joined along time.
template <class S>
std::vector<S> time_concat(const std::vector<S>& x1, const std::vector<S>& x2, int64_t B) {
  std::vector<S> out;
  const int64_t n1 = static_cast<int64_t>(x1.size()) / B, n2 = static_cast<int64_t>(x2.size()) / B;
  for (int64_t b = 0; b < B; ++b) {
    out.insert(out.end(), x1.begin() + b * n1, x1.begin() + (b + 1) * n1);
    out.insert(out.end(), x2.begin() + b * n2, x2.begin() + (b + 1) * n2);
  }
  return out;
}

}  // namespace hla::test
