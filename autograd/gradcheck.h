// gradcheck: compares autograd's gradient with central finite differences in f64.
//
//   auto r = gradcheck([](const std::vector<Var>& x) { return exp(x[0]) * x[1]; },
//                      {Tensor::randn({3, 4}, gen, DType::f64), Tensor::randn({4}, gen, DType::f64)});
//   REQUIRE(r.ok);   // r.report names the worst element: input, index, analytic vs numeric
//
// The scalar checked is L = sum(f(x) * w) with a fixed random w, so every output element
// contributes. Inputs must be f64; they may be non-contiguous views (perturbed in place through
// their strides), but not broadcast (stride-0) views. An element passes when
// |analytic - numeric| <= atol + rtol * |numeric|.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/var.h"

namespace hla {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-6;
  uint64_t seed = 1234;  // for the output weights w
};

struct GradcheckResult {
  bool ok = true;
  double worst_error = 0;  // |analytic - numeric| - rtol |numeric| of the worst element
  std::string report;      // "input 1 [0, 2]: analytic 0.51 numeric 0.49"
};

GradcheckResult gradcheck(const std::function<Var(const std::vector<Var>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& opt = {});

}  // namespace hla
