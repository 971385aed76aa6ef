// Elementwise kernels on CPU: unary maps, scalar maps, broadcasting binary ops, where, add_.
// Contiguous operands of equal shape take a flat (vectorisable, OpenMP) loop; anything else
// walks the strides (tensor/strided.h).
#include <cmath>

#include "kernels/ops.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif
#include "tensor/dtype_dispatch.h"
#include "tensor/strided.h"

namespace hla::ops {

void require_cpu(const Tensor& t, const char* op) {
  check_defined(t, op, "input");
  if (t.device() != Device::CPU)
    throw Error(op, "a tensor on a device this op is implemented for",
                std::string("a ") + device_name(t.device()) + " tensor",
                std::string("no ") + device_name(t.device()) + " implementation for " + op +
                    " in this build");
}

namespace {

constexpr int64_t kParallelMin = 1 << 15;  // below this, threads cost more than they save

// out[i] = f(x[i]) for any layout of x; out is a fresh contiguous tensor.
template <class T, class F>
Tensor map_unary(const Tensor& x, F f) {
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  T* po = out.data<T>();
  const int64_t n = x.numel();
  if (x.is_contiguous()) {
    const T* px = x.data<T>();
#pragma omp parallel for if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) po[i] = f(px[i]);
  } else {
    strided_apply2(x.shape(), po, out.strides(), x.data<T>(), x.strides(),
                   [&](T& o, const T& v) { o = f(v); });
  }
  return out;
}

template <class T>
T unary_value(Unary op, T x) {
  switch (op) {
    case Unary::Neg: return -x;
    case Unary::Exp: return std::exp(x);
    case Unary::Log: return std::log(x);
    case Unary::Sqrt: return std::sqrt(x);
    case Unary::Rsqrt: return T(1) / std::sqrt(x);
    case Unary::Sigmoid:  // stable on both tails
      return x >= 0 ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x));
    case Unary::Tanh: return std::tanh(x);
    case Unary::Abs: return std::abs(x);
    case Unary::Relu: return x > 0 ? x : T(0);
    case Unary::Log1p: return std::log1p(x);
    case Unary::Step: return x > 0 ? T(1) : T(0);
    case Unary::Sign: return x > 0 ? T(1) : (x < 0 ? T(-1) : T(0));
    case Unary::Square: return x * x;
    case Unary::Reciprocal: return T(1) / x;
    case Unary::Sin: return std::sin(x);
    case Unary::Cos: return std::cos(x);
    case Unary::Silu:
      return x * unary_value(Unary::Sigmoid, x);
    case Unary::Softplus:  // max(x, 0) + log1p(e^-|x|): no overflow on either tail
      return (x > 0 ? x : T(0)) + std::log1p(std::exp(-std::abs(x)));
    case Unary::LogSigmoid:
      return (x < 0 ? x : T(0)) - std::log1p(std::exp(-std::abs(x)));
  }
  return x;
}

template <class T>
T binary_value(Binary op, T a, T b) {
  switch (op) {
    case Binary::Add: return a + b;
    case Binary::Sub: return a - b;
    case Binary::Mul: return a * b;
    case Binary::Div: return a / b;
    case Binary::Maximum: return a > b ? a : b;
    case Binary::Minimum: return a < b ? a : b;
    case Binary::Eq: return a == b ? T(1) : T(0);
    case Binary::Gt: return a > b ? T(1) : T(0);
    case Binary::Ge: return a >= b ? T(1) : T(0);
    case Binary::SiluBackward: {
      const T s = unary_value(Unary::Sigmoid, a);
      return b * s * (T(1) + a * (T(1) - s));
    }
  }
  return a;
}

}  // namespace

Tensor unary(Unary op, const Tensor& x) {
#ifdef HLA_WITH_CUDA
  if (x.device() == Device::CUDA) return cuda::unary(op, x);
#endif
  require_cpu(x, "unary");
  return visit_floating(x.dtype(), "unary", [&]<class T>() {
    // The switch sits outside the loop so each op's loop vectorises on its own.
    switch (op) {
#define HLA_UNARY_CASE(name) \
  case Unary::name: return map_unary<T>(x, [](T v) { return unary_value<T>(Unary::name, v); });
      // clang-format off
      HLA_UNARY_CASE(Neg) HLA_UNARY_CASE(Exp) HLA_UNARY_CASE(Log) HLA_UNARY_CASE(Sqrt)
      HLA_UNARY_CASE(Rsqrt) HLA_UNARY_CASE(Sigmoid) HLA_UNARY_CASE(Tanh) HLA_UNARY_CASE(Abs)
      HLA_UNARY_CASE(Relu) HLA_UNARY_CASE(Log1p) HLA_UNARY_CASE(Step) HLA_UNARY_CASE(Sign)
      HLA_UNARY_CASE(Square) HLA_UNARY_CASE(Reciprocal) HLA_UNARY_CASE(Sin) HLA_UNARY_CASE(Cos)
      HLA_UNARY_CASE(Silu) HLA_UNARY_CASE(Softplus) HLA_UNARY_CASE(LogSigmoid)
      // clang-format on
#undef HLA_UNARY_CASE
    }
    throw Error("unary: unknown op");
  });
}

Tensor pow_scalar(const Tensor& x, double p) {
#ifdef HLA_WITH_CUDA
  if (x.device() == Device::CUDA) return cuda::pow_scalar(x, p);
#endif
  require_cpu(x, "pow");
  return visit_floating(x.dtype(), "pow", [&]<class T>() {
    const T e = static_cast<T>(p);
    return map_unary<T>(x, [e](T v) { return std::pow(v, e); });
  });
}
Tensor add_scalar(const Tensor& x, double s) {
#ifdef HLA_WITH_CUDA
  if (x.device() == Device::CUDA) return cuda::add_scalar(x, s);
#endif
  require_cpu(x, "add_scalar");
  return visit_floating(x.dtype(), "add_scalar", [&]<class T>() {
    const T c = static_cast<T>(s);
    return map_unary<T>(x, [c](T v) { return v + c; });
  });
}
Tensor mul_scalar(const Tensor& x, double s) {
#ifdef HLA_WITH_CUDA
  if (x.device() == Device::CUDA) return cuda::mul_scalar(x, s);
#endif
  require_cpu(x, "mul_scalar");
  return visit_floating(x.dtype(), "mul_scalar", [&]<class T>() {
    const T c = static_cast<T>(s);
    return map_unary<T>(x, [c](T v) { return v * c; });
  });
}

Tensor binary(Binary op, const Tensor& a, const Tensor& b) {
#ifdef HLA_WITH_CUDA
  if (a.device() == Device::CUDA || b.device() == Device::CUDA) return cuda::binary(op, a, b);
#endif
  require_cpu(a, "binary");
  require_cpu(b, "binary");
  check_same_dtype(a, b, "binary");
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), "binary");
  return visit_floating(a.dtype(), "binary", [&]<class T>() {
    Tensor out = Tensor::empty(shape, a.dtype());
    T* po = out.data<T>();
    const int64_t n = out.numel();
    if (a.shape() == shape && b.shape() == shape && a.is_contiguous() && b.is_contiguous()) {
      const T* pa = a.data<T>();
      const T* pb = b.data<T>();
      switch (op) {
#define HLA_BINARY_CASE(name)                                                          \
  case Binary::name:                                                                   \
    _Pragma("omp parallel for if (n > kParallelMin)") for (int64_t i = 0; i < n; ++i) \
        po[i] = binary_value<T>(Binary::name, pa[i], pb[i]);                           \
    return out;
        HLA_BINARY_CASE(Add) HLA_BINARY_CASE(Sub) HLA_BINARY_CASE(Mul) HLA_BINARY_CASE(Div)
        HLA_BINARY_CASE(Maximum) HLA_BINARY_CASE(Minimum) HLA_BINARY_CASE(Eq)
        HLA_BINARY_CASE(Gt) HLA_BINARY_CASE(Ge) HLA_BINARY_CASE(SiluBackward)
#undef HLA_BINARY_CASE
      }
    }
    const Tensor ea = a.expand(shape), eb = b.expand(shape);
    strided_apply3(shape, po, out.strides(), ea.data<T>(), ea.strides(), eb.data<T>(),
                   eb.strides(),
                   [op](T& o, const T& x, const T& y) { o = binary_value<T>(op, x, y); });
    return out;
  });
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
#ifdef HLA_WITH_CUDA
  if (cond.device() == Device::CUDA || a.device() == Device::CUDA || b.device() == Device::CUDA) return cuda::where(cond, a, b);
#endif
  require_cpu(cond, "where");
  require_cpu(a, "where");
  require_cpu(b, "where");
  check_same_dtype(a, b, "where");
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"),
                                       b.shape(), "where");
  const Tensor c = cond.to(a.dtype()).expand(shape);
  const Tensor ea = a.expand(shape), eb = b.expand(shape);
  return visit_floating(a.dtype(), "where", [&]<class T>() {
    // out = b, then overwrite where cond holds: two strided passes, no 4-operand walker needed.
    Tensor out = Tensor::empty(shape, a.dtype());
    out.copy_(eb);
    T* po = out.data<T>();
    strided_apply3(shape, po, out.strides(), c.data<T>(), c.strides(), ea.data<T>(), ea.strides(),
                   [](T& o, const T& m, const T& x) {
                     if (m != T(0)) o = x;
                   });
    return out;
  });
}

void add_(Tensor& a, const Tensor& b) {
#ifdef HLA_WITH_CUDA
  if (a.device() == Device::CUDA || b.device() == Device::CUDA) {
    cuda::add_(a, b);
    return;
  }
#endif
  require_cpu(a, "add_");
  require_cpu(b, "add_");
  check_same_dtype(a, b, "add_");
  HLA_CHECK(a.is_contiguous(), "add_ needs a contiguous destination");
  const Tensor eb = b.expand(a.shape());
  visit_floating(a.dtype(), "add_", [&]<class T>() {
    T* pa = a.data<T>();
    if (eb.is_contiguous()) {
      const T* pb = eb.data<T>();
      const int64_t n = a.numel();
#pragma omp parallel for if (n > kParallelMin)
      for (int64_t i = 0; i < n; ++i) pa[i] += pb[i];
    } else {
      strided_apply2(a.shape(), pa, a.strides(), eb.data<T>(), eb.strides(),
                     [](T& x, const T& y) { x += y; });
    }
  });
}

}  // namespace hla::ops
