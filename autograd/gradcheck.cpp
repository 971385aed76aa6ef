#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/grad_mode.h"
#include "autograd/primitives.h"
#include "kernels/ops.h"

namespace hla {

namespace {

// Multi-index of flat row-major position `flat` in `shape`.
std::vector<int64_t> unravel(int64_t flat, const Shape& shape) {
  std::vector<int64_t> idx(shape.size());
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = shape[d] ? flat % shape[d] : 0;
    flat = shape[d] ? flat / shape[d] : 0;
  }
  return idx;
}

double* element(Tensor& t, const std::vector<int64_t>& idx) {
  int64_t off = 0;
  for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * t.strides()[d];
  return t.data<double>() + off;
}

}  // namespace

GradcheckResult gradcheck(const std::function<Var(const std::vector<Var>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  std::vector<Tensor> xs = inputs;
  for (const Tensor& t : xs) {
    check_dtype(t, DType::f64, "gradcheck", "every input");
    for (int64_t d = 0; d < t.dim(); ++d)
      if (t.strides()[d] == 0 && t.shape()[d] > 1)
        throw Error("gradcheck", "inputs without broadcast (stride-0) dimensions",
                    "strides " + to_string(t.strides()), "pass .contiguous()");
  }
  std::vector<Var> vars;
  for (const Tensor& t : xs) vars.emplace_back(t, true);

  // Analytic: L = sum(f(x) * w).
  Var out = f(vars);
  Generator gen(opt.seed);
  const Tensor w = Tensor::randn(out.shape(), gen, DType::f64);
  Var loss = sum(out * Var(w));
  loss.backward();

  auto scalar_loss = [&]() {
    NoGradGuard ng;
    std::vector<Var> vs;
    for (const Tensor& t : xs) vs.emplace_back(t, false);
    return ops::sum_all(ops::binary(ops::Binary::Mul, f(vs).data(), w)).item();
  };

  GradcheckResult r;
  r.worst_error = -1e300;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor analytic = vars[i].grad().defined() ? vars[i].grad()
                                                     : Tensor::zeros(xs[i].shape(), DType::f64);
    for (int64_t e = 0; e < xs[i].numel(); ++e) {
      const std::vector<int64_t> idx = unravel(e, xs[i].shape());
      double* p = element(xs[i], idx);
      const double orig = *p;
      *p = orig + opt.eps;
      const double lp = scalar_loss();
      *p = orig - opt.eps;
      const double lm = scalar_loss();
      *p = orig;
      const double numeric = (lp - lm) / (2 * opt.eps);
      const double a = analytic.at(idx);
      const double err = std::abs(a - numeric) - opt.rtol * std::abs(numeric);
      if (err > r.worst_error) {
        r.worst_error = err;
        std::ostringstream os;
        os << "input " << i << " " << to_string(idx) << ": analytic " << a << " numeric "
           << numeric;
        r.report = os.str();
      }
      if (!std::isfinite(a) || err > opt.atol) r.ok = false;
    }
  }
  return r;
}

}  // namespace hla
