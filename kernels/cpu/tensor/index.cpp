// Movement and indexing on CPU: concat, index_select / index_add, gather / scatter_add,
// slice_backward. The additive ones run sequentially, so their sums are deterministic.
#include <algorithm>

#include "kernels/ops.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif
#include "tensor/dtype_dispatch.h"

namespace hla::ops {

namespace {

// View of x as [outer, n_dim, inner] around `dim` (x contiguous).
struct Around {
  int64_t outer = 1, n = 1, inner = 1;
};
Around around(const Shape& s, int64_t dim) {
  Around a;
  for (int64_t i = 0; i < dim; ++i) a.outer *= s[i];
  a.n = s[dim];
  for (size_t i = dim + 1; i < s.size(); ++i) a.inner *= s[i];
  return a;
}

std::vector<int64_t> read_index(const Tensor& index, int64_t bound, const char* op) {
  require_cpu(index, op);
  std::vector<int64_t> idx = visit_index(index.dtype(), op, [&]<class I>() {
    const std::vector<I> v = index.to_vector<I>();
    return std::vector<int64_t>(v.begin(), v.end());
  });
  for (int64_t i : idx)
    if (i < 0 || i >= bound)
      throw Error(op, "indices in [0, " + std::to_string(bound) + ")", std::to_string(i),
                  "token ids must be below the vocabulary size");
  return idx;
}

}  // namespace

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  if (xs.empty()) throw Error("concat", "at least one tensor", "none");
#ifdef HLA_WITH_CUDA
  if (xs[0].device() == Device::CUDA) return cuda::concat(xs, dim);
#endif
  const Tensor& first = xs[0];
  require_cpu(first, "concat");
  dim = wrap_dim(dim, first.dim(), "concat");
  Shape out_shape = first.shape();
  out_shape[dim] = 0;
  for (const Tensor& x : xs) {
    require_cpu(x, "concat");
    check_same_dtype(first, x, "concat");
    Shape a = x.shape(), b = first.shape();
    if (a.size() != b.size()) throw Error("concat", "tensors of equal rank", to_string(a));
    a[dim] = b[dim] = 0;
    if (a != b)
      throw Error("concat", "equal sizes except on dim " + std::to_string(dim),
                  to_string(x.shape()) + " vs " + to_string(first.shape()));
    out_shape[dim] += x.shape()[dim];
  }
  Tensor out = Tensor::empty(out_shape, first.dtype());
  int64_t at = 0;
  for (const Tensor& x : xs) {
    out.slice(dim, at, at + x.shape()[dim]).copy_(x);
    at += x.shape()[dim];
  }
  return out;
}

Tensor index_select(const Tensor& x_in, int64_t dim, const Tensor& index) {
#ifdef HLA_WITH_CUDA
  if (x_in.device() == Device::CUDA) return cuda::index_select(x_in, dim, index);
#endif
  require_cpu(x_in, "index_select");
  dim = wrap_dim(dim, x_in.dim(), "index_select");
  check_rank(index, 1, "index_select", "index");
  const Tensor x = x_in.contiguous();
  const std::vector<int64_t> idx = read_index(index, x.shape()[dim], "index_select");
  Shape out_shape = x.shape();
  out_shape[dim] = static_cast<int64_t>(idx.size());
  const Around a = around(x.shape(), dim);
  return visit_dtype(x.dtype(), [&]<class T>() {
    Tensor out = Tensor::empty(out_shape, x.dtype());
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const int64_t m = static_cast<int64_t>(idx.size());
#pragma omp parallel for if (a.outer * m * a.inner > (1 << 16))
    for (int64_t o = 0; o < a.outer; ++o)
      for (int64_t j = 0; j < m; ++j)
        std::copy_n(px + (o * a.n + idx[j]) * a.inner, a.inner, po + (o * m + j) * a.inner);
    return out;
  });
}

Tensor index_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src_in) {
#ifdef HLA_WITH_CUDA
  if (src_in.device() == Device::CUDA) return cuda::index_add(shape, dim, index, src_in);
#endif
  require_cpu(src_in, "index_add");
  dim = wrap_dim(dim, static_cast<int64_t>(shape.size()), "index_add");
  const Tensor src = src_in.contiguous();
  const std::vector<int64_t> idx = read_index(index, shape[dim], "index_add");
  const Around a = around(shape, dim);
  const int64_t m = static_cast<int64_t>(idx.size());
  HLA_CHECK(src.numel() == a.outer * m * a.inner, "index_add: src does not match index");
  return visit_floating(src.dtype(), "index_add", [&]<class T>() {
    Tensor out = Tensor::zeros(shape, src.dtype());
    const T* ps = src.data<T>();
    T* po = out.data<T>();
    for (int64_t o = 0; o < a.outer; ++o)
      for (int64_t j = 0; j < m; ++j) {
        T* dst = po + (o * a.n + idx[j]) * a.inner;
        const T* s = ps + (o * m + j) * a.inner;
        for (int64_t i = 0; i < a.inner; ++i) dst[i] += s[i];
      }
    return out;
  });
}

Tensor gather(const Tensor& x_in, int64_t dim, const Tensor& index_in) {
#ifdef HLA_WITH_CUDA
  if (x_in.device() == Device::CUDA) return cuda::gather(x_in, dim, index_in);
#endif
  require_cpu(x_in, "gather");
  dim = wrap_dim(dim, x_in.dim(), "gather");
  check_rank(index_in, x_in.dim(), "gather", "index");
  const Tensor x = x_in.contiguous();
  const Tensor index = index_in.contiguous();
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d != dim && index.shape()[d] != x.shape()[d])
      throw Error("gather", "index sizes equal to x's except on dim " + std::to_string(dim),
                  to_string(index.shape()) + " vs " + to_string(x.shape()));
  const std::vector<int64_t> idx = read_index(index, x.shape()[dim], "gather");
  const Around ax = around(x.shape(), dim), ai = around(index.shape(), dim);
  return visit_dtype(x.dtype(), [&]<class T>() {
    Tensor out = Tensor::empty(index.shape(), x.dtype());
    const T* px = x.data<T>();
    T* po = out.data<T>();
    for (int64_t o = 0; o < ai.outer; ++o)
      for (int64_t j = 0; j < ai.n; ++j)
        for (int64_t i = 0; i < ai.inner; ++i) {
          const int64_t pos = (o * ai.n + j) * ai.inner + i;
          po[pos] = px[(o * ax.n + idx[pos]) * ax.inner + i];
        }
    return out;
  });
}

Tensor scatter_add(const Shape& shape, int64_t dim, const Tensor& index_in, const Tensor& src_in) {
#ifdef HLA_WITH_CUDA
  if (src_in.device() == Device::CUDA) return cuda::scatter_add(shape, dim, index_in, src_in);
#endif
  require_cpu(src_in, "scatter_add");
  dim = wrap_dim(dim, static_cast<int64_t>(shape.size()), "scatter_add");
  const Tensor src = src_in.contiguous();
  const Tensor index = index_in.contiguous();
  HLA_CHECK(index.shape() == src.shape(), "scatter_add: index and src shapes differ");
  bool fits = src.dim() == static_cast<int64_t>(shape.size());
  for (int64_t d = 0; fits && d < src.dim(); ++d) fits = d == dim || src.shape()[d] == shape[d];
  if (!fits)
    throw Error("scatter_add",
                "index sizes equal to the output's " + to_string(shape) + " except on dim " +
                    std::to_string(dim),
                to_string(src.shape()));
  const std::vector<int64_t> idx = read_index(index, shape[dim], "scatter_add");
  const Around ao = around(shape, dim), ai = around(index.shape(), dim);
  return visit_floating(src.dtype(), "scatter_add", [&]<class T>() {
    Tensor out = Tensor::zeros(shape, src.dtype());
    const T* ps = src.data<T>();
    T* po = out.data<T>();
    for (int64_t o = 0; o < ai.outer; ++o)
      for (int64_t j = 0; j < ai.n; ++j)
        for (int64_t i = 0; i < ai.inner; ++i) {
          const int64_t pos = (o * ai.n + j) * ai.inner + i;
          po[(o * ao.n + idx[pos]) * ao.inner + i] += ps[pos];
        }
    return out;
  });
}

Tensor slice_backward(const Tensor& src, const Shape& shape, int64_t dim, int64_t start,
                      int64_t step) {
#ifdef HLA_WITH_CUDA
  if (src.device() == Device::CUDA) return cuda::slice_backward(src, shape, dim, start, step);
#endif
  require_cpu(src, "slice_backward");
  Tensor out = Tensor::zeros(shape, src.dtype());
  const int64_t n = src.shape()[dim];
  out.slice(dim, start, start + (n - 1) * step + 1, step).copy_(src);
  return out;
}

}  // namespace hla::ops
