// Calling a templated lambda with the C++ type of a runtime DType.
//
//   visit_dtype(t.dtype(), [&]<class T>() { fill(t.data<T>(), ...); });
//   visit_floating(t.dtype(), "exp", [&]<class T>() { ... });   // f32 / f64 only
//   visit_floating_or_bf16(t.dtype(), "adamw", [&]<class T>() { ... });   // and bf16
//
// convert<To>(from) converts between any two element types: to bf16 rounded to nearest (from f64
// in one rounding, bf16(double); integers through float), from bf16 through float (exact).
#pragma once

#include <string>

#include "tensor/dtype.h"
#include "tensor/error.h"

namespace hla {

template <class To, class From>
inline To convert(From x) {
  if constexpr (std::is_same_v<To, From>) {
    return x;
  } else if constexpr (std::is_same_v<To, bf16>) {
    if constexpr (std::is_same_v<From, double>)
      return bf16(x);
    else
      return bf16(static_cast<float>(x));
  } else if constexpr (std::is_same_v<From, bf16>) {
    return static_cast<To>(static_cast<float>(x));
  } else {
    return static_cast<To>(x);
  }
}

template <class F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    case DType::bf16: return f.template operator()<bf16>();
    case DType::i32: return f.template operator()<int32_t>();
    case DType::i64: return f.template operator()<int64_t>();
  }
  throw Error("visit_dtype: unknown dtype");
}

// The CPU compute types: f32 and f64. Anything else throws hla::Error naming `op`.
template <class F>
decltype(auto) visit_floating(DType t, const char* op, F&& f) {
  if (t == DType::f32) return f.template operator()<float>();
  if (t == DType::f64) return f.template operator()<double>();
  throw Error(op, "a f32 or f64 tensor on CPU", dtype_name(t),
              t == DType::bf16 ? "bf16 is a storage type on CPU: call .to(DType::f32) first"
                               : "integer tensors hold indices; convert with .to(DType::f32)");
}

// The floating types with bf16 as well, for loops that read each element through convert
// (bf16 as storage: a CPU optimizer's double arithmetic, a kernel tier that takes bf16).
template <class F>
decltype(auto) visit_floating_or_bf16(DType t, const char* op, F&& f) {
  if (t == DType::bf16) return f.template operator()<bf16>();
  return visit_floating(t, op, f);
}

template <class F>
decltype(auto) visit_index(DType t, const char* op, F&& f) {
  if (t == DType::i32) return f.template operator()<int32_t>();
  if (t == DType::i64) return f.template operator()<int64_t>();
  throw Error(op, "an index tensor of dtype i32 or i64", dtype_name(t),
              "convert with .to(DType::i64)");
}

}  // namespace hla
