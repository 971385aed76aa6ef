// Overflow-free sigmoid and log-sigmoid for the CPU kernels (f32 / f64):
//   sigmoid(x) = 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below;
//   logsigmoid(x) = min(x, 0) - log1p(e^-|x|).
#pragma once

#include <cmath>

namespace hla::ops {

template <class T>
T stable_sigmoid(T x) {
  return x >= 0 ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x));
}

template <class T>
T stable_log_sigmoid(T x) {
  return (x < T(0) ? x : T(0)) - std::log1p(std::exp(-std::abs(x)));
}

}  // namespace hla::ops
