// Shape and strides: the dimension vocabulary of every tensor.
//
// Shapes are row-major: the last dimension is contiguous. A stride of 0 is a broadcast
// dimension (expand). Layout letters used across the project (spec/recurrences.md section 0):
//   B batch, T time, H heads, K key head dim, V value head dim, D channel width.
//   activations [B,T,H,K] / [B,T,H,V]; recurrent states [B,H,K,V]; log gates g <= 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hla {

using Shape = std::vector<int64_t>;

int64_t numel(const Shape& s);
Shape contiguous_strides(const Shape& s);
std::string to_string(const Shape& s);  // "[2, 3, 4]"
// Wraps a possibly negative dimension index into [0, rank); throws hla::Error for `op` if out
// of range.
int64_t wrap_dim(int64_t dim, int64_t rank, const char* op);
// NumPy broadcasting of two shapes; throws hla::Error naming `op` if incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace hla
