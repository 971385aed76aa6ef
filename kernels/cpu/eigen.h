// Eigen, as every CPU kernel includes it, and the project's row-major matrix type (Eigen's
// default is column-major; hla's tensors are row-major).
//
// GCC 12 reports false (maybe-)uninitialized warnings inside its own AVX-512 intrinsics headers
// when Eigen code is inlined (GCC bug 105593, fixed in GCC 13); the pragma covers the include.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Dense>
#pragma GCC diagnostic pop

namespace hla::kernels {

template <class S>
using RowMajorMatrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace hla::kernels
