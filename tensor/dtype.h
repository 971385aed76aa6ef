// DType: the element types a Tensor can hold, and bf16 as a storage type.
//
//   f32, f64     compute types on CPU (f64 exists so gradients can be checked by finite
//                differences); f32 and bf16 on CUDA
//   bf16         brain float: the top 16 bits of an f32 (8-bit exponent, 7-bit mantissa);
//                converted with round-to-nearest-even, from f64 too in one rounding (not
//                through f32, whose rounding could land on a bf16 midpoint)
//   i32, i64     indices and token ids
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace hla {

enum class DType : uint8_t { f32, f64, bf16, i32, i64 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
  }
  return 0;
}
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "?";
}
inline bool is_floating(DType t) { return t == DType::f32 || t == DType::f64 || t == DType::bf16; }
// Parses "f32", "float32", "f64", "float64", "bf16", "i32", "i64"; throws hla::Error otherwise.
DType parse_dtype(const std::string& name);

struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  explicit bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays a (quiet) NaN
      bits = static_cast<uint16_t>((u >> 16) | 0x40u);
      return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    bits = static_cast<uint16_t>(u >> 16);
  }
  // x rounded once to the nearest bf16 (ties to even), as CUDA's __double2bfloat16: x narrowed
  // to float rounding to odd (toward zero, the last bit set when inexact), then rounded to bf16;
  // rounding to odd keeps the sticky information that a plain float rounding would lose.
  explicit bf16(double x) : bf16(to_odd_float(x)) {}
  explicit operator float() const {
    const uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }

 private:
  static float to_odd_float(double x) {
    float f = static_cast<float>(x);
    const double d = f;
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((x > 0.0 && d > x) || (x < 0.0 && d < x)) --u;  // toward zero (sign-magnitude bits)
    if (d != x && x == x) u |= 1u;                       // inexact (not NaN): round to odd
    std::memcpy(&f, &u, 4);
    return f;
  }
};

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::f32; }
template <>
constexpr DType dtype_of<double>() { return DType::f64; }
template <>
constexpr DType dtype_of<bf16>() { return DType::bf16; }
template <>
constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <>
constexpr DType dtype_of<int64_t>() { return DType::i64; }

}  // namespace hla
