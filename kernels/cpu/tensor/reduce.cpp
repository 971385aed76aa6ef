// Reductions on CPU: sum and max over any set of dimensions, and sum_to (the backward of
// broadcasting). The reduced dimensions are permuted to the end and each output element reduces
// one contiguous row; sums accumulate in double.
#include <algorithm>
#include <limits>

#include "kernels/ops.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif
#include "tensor/dtype_dispatch.h"

namespace hla::ops {

namespace {

struct ReducePlan {
  Shape out_shape;       // keepdim or not, as asked
  Tensor rows;           // x permuted and made contiguous as [n_out, n_red]
  int64_t n_out = 1, n_red = 1;
};

ReducePlan plan_reduce(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim,
                       const char* op) {
  const int64_t rank = x.dim();
  std::vector<bool> reduced(rank, false);
  for (int64_t d : dims) {
    const int64_t w = wrap_dim(d, rank, op);
    if (reduced[w]) throw Error(op, "each dimension once", "dimension " + std::to_string(w) + " twice");
    reduced[w] = true;
  }
  ReducePlan p;
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < rank; ++i)
    if (!reduced[i]) {
      perm.push_back(i);
      p.out_shape.push_back(x.shape()[i]);
      p.n_out *= x.shape()[i];
    } else if (keepdim) {
      p.out_shape.push_back(1);
    }
  if (!keepdim) {
    p.out_shape.clear();
    for (int64_t i = 0; i < rank; ++i)
      if (!reduced[i]) p.out_shape.push_back(x.shape()[i]);
  }
  for (int64_t i = 0; i < rank; ++i)
    if (reduced[i]) {
      perm.push_back(i);
      p.n_red *= x.shape()[i];
    }
  p.rows = x.permute(perm).contiguous();
  return p;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
#ifdef HLA_WITH_CUDA
  if (x.device() == Device::CUDA) return cuda::sum(x, dims, keepdim);
#endif
  require_cpu(x, "sum");
  const ReducePlan p = plan_reduce(x, dims, keepdim, "sum");
  return visit_floating(x.dtype(), "sum", [&]<class T>() {
    Tensor out = Tensor::empty(p.out_shape, x.dtype());
    const T* in = p.rows.data<T>();
    T* o = out.data<T>();
#pragma omp parallel for if (p.n_out * p.n_red > (1 << 16))
    for (int64_t i = 0; i < p.n_out; ++i) {
      double acc = 0;
      const T* row = in + i * p.n_red;
      for (int64_t j = 0; j < p.n_red; ++j) acc += row[j];
      o[i] = static_cast<T>(acc);
    }
    return out;
  });
}

Tensor max(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
#ifdef HLA_WITH_CUDA
  if (x.device() == Device::CUDA) return cuda::max(x, dims, keepdim);
#endif
  require_cpu(x, "max");
  const ReducePlan p = plan_reduce(x, dims, keepdim, "max");
  if (p.n_red == 0) throw Error("max", "a non-empty reduction", "zero elements to reduce");
  return visit_floating(x.dtype(), "max", [&]<class T>() {
    Tensor out = Tensor::empty(p.out_shape, x.dtype());
    const T* in = p.rows.data<T>();
    T* o = out.data<T>();
    for (int64_t i = 0; i < p.n_out; ++i) {
      const T* row = in + i * p.n_red;
      o[i] = *std::max_element(row, row + p.n_red);
    }
    return out;
  });
}

Tensor sum_all(const Tensor& x) {
  std::vector<int64_t> dims(x.dim());
  for (int64_t i = 0; i < x.dim(); ++i) dims[i] = i;
  return sum(x, dims, false);
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  if (lead < 0)
    throw Error("sum_to", "a target of rank <= " + std::to_string(x.dim()), to_string(shape));
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < x.dim(); ++i) {
    if (i < lead) {
      dims.push_back(i);
    } else if (shape[i - lead] == 1 && x.shape()[i] != 1) {
      dims.push_back(i);
    } else if (shape[i - lead] != x.shape()[i]) {
      throw Error("sum_to", "a shape that " + to_string(x.shape()) + " broadcasts from",
                  to_string(shape));
    }
  }
  return sum(x, dims, true).reshape(shape);
}

}  // namespace hla::ops
