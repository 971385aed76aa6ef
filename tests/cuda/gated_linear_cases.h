// The problems of the gated-linear CUDA tests (test_gated_linear.cpp: recurrent kernel;
// test_gated_linear_chunk.cpp: f32 chunk kernels; test_gated_linear_mma.cpp: bf16 tensor-core
// kernels): the gate kinds' names, which of them take a gate tensor, log gates of strong or weak
// decay, and one problem's tensors.
#pragma once

#include <cmath>
#include <vector>

#include "kernels/recurrence.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

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

}  // namespace hla::cuda_test
