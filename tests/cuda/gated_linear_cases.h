// The problems of the gated-linear CUDA tests (test_gated_linear.cpp: recurrent kernel;
// test_gated_linear_chunk.cpp: f32 chunk kernels; test_gated_linear_mma.cpp: bf16 tensor-core
// kernels): the gate kinds' names, which of them take a gate tensor, log gates of strong or weak
// decay, one problem's tensors and kernel arguments, and the gate cases the tests run.
#pragma once

#include <cmath>
#include <vector>

#include "kernels/recurrence.h"
#include "tensor/random.h"
#include "tensor/tensor.h"
#include "tests/cuda/cuda_test_helpers.h"

namespace hla::cuda_test {

inline const char* gate_name(kernels::GateKind gate) {
  switch (gate) {
    case kernels::GateKind::PerKey:
      return "gla";
    case kernels::GateKind::ScalarPerHead:
      return "simple_gla";
    case kernels::GateKind::FixedPerHead:
      return "retention";
    case kernels::GateKind::None:
      return "linear";
  }
  return "?";
}

inline bool has_gate(kernels::GateKind gate) {
  return gate == kernels::GateKind::PerKey || gate == kernels::GateKind::ScalarPerHead;
}

enum class Decay { Strong, Weak };

// Log gates: strong logsigmoid(x), x ~ N(0,1) (fla's strongest test decay, applied per key);
// weak logsigmoid(x) / 16, x ~ N(4,1).
inline Tensor log_gates(const Shape& shape, Generator& gen, DType dt, Decay decay) {
  const bool strong = decay == Decay::Strong;
  std::vector<double> g =
      Tensor::randn(shape, gen, DType::f64, strong ? 0.0 : 4.0).to_vector<double>();
  for (double& e : g) e = -std::log1p(std::exp(-e)) / (strong ? 1.0 : 16.0);
  return Tensor::from_values(g, shape, dt);
}

// One problem on the CPU; h0 and dhT undefined without states.
struct Case {
  Tensor q, k, v, g, h0, dout, dhT;
};

// The kernels' arguments for the problem c (its tensors on the device the kernel runs on).
template <class S>
kernels::GatedLinearArgs<S> args_of(const Case& c, kernels::GateKind gate, double scale) {
  kernels::GatedLinearArgs<S> a;
  a.d = {c.q.size(0), c.q.size(1), c.q.size(2), c.q.size(3), c.v.size(3)};
  a.gate = gate;
  a.q = c.q.data<S>();
  a.k = c.k.data<S>();
  a.v = c.v.data<S>();
  a.g = ptr_or_null<S>(c.g);
  a.h0 = ptr_or_null<S>(c.h0);
  a.scale = scale;
  return a;
}

// The gate kinds and decays every gated-linear kernel test runs.
struct GateCase {
  kernels::GateKind gate;
  Decay decay;  // unused without a gate tensor
  const char* decay_name;
};
inline const GateCase kGateCases[] = {
    {kernels::GateKind::PerKey, Decay::Strong, "strong"},
    {kernels::GateKind::PerKey, Decay::Weak, "weak"},
    {kernels::GateKind::ScalarPerHead, Decay::Strong, "strong"},
    {kernels::GateKind::ScalarPerHead, Decay::Weak, "weak"},
    {kernels::GateKind::FixedPerHead, Decay::Weak, "fixed"},
    {kernels::GateKind::None, Decay::Weak, "none"},
};

}  // namespace hla::cuda_test
