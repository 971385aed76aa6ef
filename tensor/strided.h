// Walking strided tensors element by element: the innermost dimension is a tight loop, the outer
// dimensions a counter. Used by copies, fills and the generic (broadcasting) elementwise kernels.
//
//   strided_apply2(shape, dst, dst_strides, src, src_strides, [](float& d, const double& s) {...});
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "tensor/shape.h"

namespace hla {

// Calls row(offsets, n, inner_strides) once per innermost row of `shape`, where offsets[i] is
// operand i's element offset at the row start.
template <size_t N, class Row>
void for_each_row(const Shape& shape, const std::array<const Shape*, N>& strides, Row&& row) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  for (int64_t d : shape)
    if (d == 0) return;
  std::array<int64_t, N> off{}, inner{};
  if (rank == 0) {
    row(off, int64_t{1}, inner);
    return;
  }
  for (size_t i = 0; i < N; ++i) inner[i] = (*strides[i])[rank - 1];
  const int64_t n = shape[rank - 1];
  std::vector<int64_t> idx(rank - 1, 0);
  while (true) {
    row(off, n, inner);
    int64_t d = rank - 2;
    for (; d >= 0; --d) {
      for (size_t i = 0; i < N; ++i) off[i] += (*strides[i])[d];
      if (++idx[d] < shape[d]) break;
      for (size_t i = 0; i < N; ++i) off[i] -= (*strides[i])[d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

template <class A, class F>
void strided_apply1(const Shape& shape, A* a, const Shape& sa, F&& f) {
  for_each_row<1>(shape, {&sa}, [&](const auto& off, int64_t n, const auto& st) {
    A* pa = a + off[0];
    for (int64_t i = 0; i < n; ++i) f(pa[i * st[0]]);
  });
}

template <class A, class B, class F>
void strided_apply2(const Shape& shape, A* a, const Shape& sa, B* b, const Shape& sb, F&& f) {
  for_each_row<2>(shape, {&sa, &sb}, [&](const auto& off, int64_t n, const auto& st) {
    A* pa = a + off[0];
    B* pb = b + off[1];
    for (int64_t i = 0; i < n; ++i) f(pa[i * st[0]], pb[i * st[1]]);
  });
}

template <class A, class B, class C, class F>
void strided_apply3(const Shape& shape, A* a, const Shape& sa, B* b, const Shape& sb, C* c,
                    const Shape& sc, F&& f) {
  for_each_row<3>(shape, {&sa, &sb, &sc}, [&](const auto& off, int64_t n, const auto& st) {
    A* pa = a + off[0];
    B* pb = b + off[1];
    C* pc = c + off[2];
    for (int64_t i = 0; i < n; ++i) f(pa[i * st[0]], pb[i * st[1]], pc[i * st[2]]);
  });
}

}  // namespace hla
