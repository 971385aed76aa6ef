// Helpers of the [cuda] tests: skip visibly without a GPU, move tensors, compare by name.
//
// Every TEST_CASE starts with HLA_REQUIRE_GPU() (tests/helpers/require_gpu.h): on a machine
// without a visible GPU (CPU-only CI) the test passes with a "no CUDA device: skipping" warning.
// Tolerances (relative RMS, tests/helpers/close.h) used across these files:
//   kF32 = 1e-5: f32 GPU vs f32 CPU (different summation orders and libm, ~1e-7 observed scale)
//   kF64 = 1e-12: f64 GPU vs f64 CPU
//   kTF32 = 5e-3: f32 matmul in TF32 mode (10-bit mantissa products), labelled where used
#pragma once

#include <catch2/catch.hpp>

#include "kernels/ops.h"
#include "tensor/storage.h"
#include "tensor/tensor.h"
#include "tests/helpers/close.h"
#include "tests/helpers/require_gpu.h"

namespace hla::cuda_test {

constexpr double kF32 = 1e-5;
constexpr double kF64 = 1e-12;
constexpr double kTF32 = 5e-3;

inline double tol(DType dt) { return dt == DType::f64 ? kF64 : kF32; }
inline Tensor gpu(const Tensor& t) { return t.to(Device::CUDA); }
inline std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }

// A defined tensor's data as a kernel argument, null for an undefined (optional) one.
template <class S>
const S* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<S>() : nullptr;
}
template <class S>
S* mut_or_null(Tensor& t) {
  return t.defined() ? t.data<S>() : nullptr;
}

}  // namespace hla::cuda_test
