// Movement and indexing on CUDA: concat, slice_backward, index_select / index_add and
// gather / scatter_add.
//   x viewed as [outer, n, inner] around `dim` (contiguous); the index_select / index_add index
//   [m] (i32/i64, either device) is range-checked on the host (one small copy and a sync, like
//   the CPU path).
//   index_select: out [outer, m, inner] = x[:, index, :]; any dtype (moved as raw words).
//   index_add:    out [outer, n, inner] = 0, then out[:, index[j], :] += src[:, j, :]. Each output
//                 element sums its sources in increasing j (a CSR list built on the host): no
//                 atomics, bitwise deterministic and equal to the CPU's sequential order.
//   gather:       index [outer, m, inner] (x's rank, x's sizes except on dim; i32/i64 on cuda:
//                 a CPU index is a device mismatch, not a silent copy), out = index's shape,
//                 out[o, j, i] = x[o, index[o, j, i], i]; any dtype (raw words). One thread per
//                 output element.
//   scatter_add:  index (on cuda) and src [outer, m, inner], out [outer, n, inner] = 0, then
//                 out[o, index[o, j, i], i] += src[o, j, i]. One thread per column (o, i) walks j
//                 upwards and owns every output element of that column: no atomics, and each
//                 element sums its sources in the CPU's order (bitwise equal, run to run). Its
//                 parallelism is the outer * inner columns (the gather backward of a cross-entropy
//                 style pick, dim last with m = 1, has one column per row).
//   The gather / scatter_add index is range-checked on the device: the position of the first bad
//   entry (an integer atomicMin, order-independent) comes back in one 8-byte copy and a sync.
//   concat / slice_backward: strided copies into slices of a fresh output (elementwise.cu).
// All outputs are fresh. dtypes: index_select, gather any; index_add, scatter_add f32, f64, bf16
// (bf16 sources are summed in float and each output rounded to bf16 once: index_add keeps the
// sum in a register, scatter_add in an f32 buffer converted at the end).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

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

// ---- kernels

template <class W>
__global__ void index_select_kernel(W* __restrict__ out,              // [outer, m, inner]
                                    const W* __restrict__ x,          // [outer, n, inner]
                                    const int64_t* __restrict__ idx,  // [m], in [0, n)
                                    int64_t outer, int64_t n, int64_t m, int64_t inner) {
  const int64_t total = outer * m * inner;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < total;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = p % inner, oj = p / inner, j = oj % m, o = oj / m;
    out[p] = x[(o * n + idx[j]) * inner + i];
  }
}

template <class S>
__global__ void index_add_kernel(S* __restrict__ out,                  // [outer, n, inner]
                                 const S* __restrict__ src,            // [outer, m, inner]
                                 const int64_t* __restrict__ row_ptr,  // [n + 1] CSR offsets
                                 const int64_t* __restrict__ cols,     // [m] source j, ascending per row
                                 int64_t outer, int64_t n, int64_t m, int64_t inner) {
  using C = compute_t<S>;
  const int64_t total = outer * n * inner;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < total;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = p % inner, or_ = p / inner, r = or_ % n, o = or_ / n;
    C acc = C(0);
    for (int64_t q = row_ptr[r]; q < row_ptr[r + 1]; ++q)
      acc += value_cast<C>(src[(o * m + cols[q]) * inner + i]);
    out[p] = value_cast<S>(acc);
  }
}

template <class W, class I>
__global__ void gather_kernel(W* __restrict__ out,        // [outer, m, inner]
                              const W* __restrict__ x,    // [outer, n, inner]
                              const I* __restrict__ idx,  // [outer, m, inner], in [0, n)
                              int64_t outer, int64_t n, int64_t m, int64_t inner) {
  const int64_t total = outer * m * inner;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < total;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = p % inner, o = p / inner / m;
    out[p] = x[(o * n + static_cast<int64_t>(idx[p])) * inner + i];
  }
}

// out is the accumulator, of compute_t<S> (a bf16 src sums into an f32 buffer).
template <class S, class I>
__global__ void scatter_add_kernel(compute_t<S>* __restrict__ out,  // [outer, n, inner], zeroed
                                   const S* __restrict__ src,       // [outer, m, inner]
                                   const I* __restrict__ idx,       // [outer, m, inner], in [0, n)
                                   int64_t outer, int64_t n, int64_t m, int64_t inner) {
  using C = compute_t<S>;
  const int64_t columns = outer * inner;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < columns;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = p % inner, o = p / inner;
    for (int64_t j = 0; j < m; ++j) {
      const int64_t q = (o * m + j) * inner + i;
      out[(o * n + static_cast<int64_t>(idx[q])) * inner + i] += value_cast<C>(src[q]);
    }
  }
}

// first[0] = min over p of the positions whose index lies outside [0, bound) (untouched if none).
template <class I>
__global__ void first_out_of_range_kernel(const I* __restrict__ idx, int64_t total, int64_t bound,
                                          unsigned long long* __restrict__ first) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < total;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = static_cast<int64_t>(idx[p]);
    if (v < 0 || v >= bound) atomicMin(first, static_cast<unsigned long long>(p));
  }
}

// ---- launchers

std::vector<int64_t> read_index(const Tensor& index, int64_t bound, const char* op) {
  check_defined(index, op, "index");
  check_rank(index, 1, op, "index");
  std::vector<int64_t> idx;
  if (index.dtype() == DType::i64) {
    idx = index.to_vector<int64_t>();
  } else if (index.dtype() == DType::i32) {
    const std::vector<int32_t> v = index.to_vector<int32_t>();
    idx.assign(v.begin(), v.end());
  } else {
    throw Error(op, "an index tensor of dtype i32 or i64", dtype_name(index.dtype()),
                "convert with .to(DType::i64)");
  }
  for (int64_t i : idx)
    if (i < 0 || i >= bound)
      throw Error(op, "indices in [0, " + std::to_string(bound) + ")", std::to_string(i),
                  "token ids must be below the vocabulary size");
  return idx;
}

template <class W>
void launch_select(Tensor& out, const Tensor& x, const Tensor& idx, const Around& a, int64_t m) {
  const int64_t total = a.outer * m * a.inner;
  if (total == 0) return;
  index_select_kernel<W><<<grid_for(total), kThreads, 0, stream()>>>(
      static_cast<W*>(out.raw_data()), static_cast<const W*>(x.raw_data()),
      idx.data<int64_t>(), a.outer, a.n, m, a.inner);
  CUDA_CHECK(cudaGetLastError());
}

// Calls f(TypeTag<I>{}) for the index element type of an i32 / i64 index tensor.
template <class F>
decltype(auto) visit_index_cuda(DType t, const char* op, F&& f) {
  if (t == DType::i64) return f(TypeTag<int64_t>{});
  if (t == DType::i32) return f(TypeTag<int32_t>{});
  throw Error(op, "an index tensor of dtype i32 or i64", dtype_name(t),
              "convert with .to(DType::i64)");
}

// The cuda index (i32 or i64) as a contiguous tensor of its own dtype, every entry checked to lie
// in [0, bound); throws like the CPU path, naming the first bad entry.
Tensor device_index(const Tensor& index, int64_t bound, const char* op) {
  require_cuda(index, op, "index");
  const Tensor idx = contiguous(index);
  const int64_t total = idx.numel();
  return visit_index_cuda(idx.dtype(), op, [&](auto tag_) {
    using I = typename decltype(tag_)::type;
    if (total == 0) return idx;
    Tensor first = cuda_empty({1}, DType::i64);
    CUDA_CHECK(cudaMemsetAsync(first.raw_data(), 0xff, sizeof(int64_t), stream()));  // -1: none
    first_out_of_range_kernel<I><<<grid_for(total), kThreads, 0, stream()>>>(
        idx.data<I>(), total, bound, static_cast<unsigned long long*>(first.raw_data()));
    CUDA_CHECK(cudaGetLastError());
    const int64_t pos = first.to_vector<int64_t>()[0];
    if (pos >= 0) {
      const int64_t bad = idx.reshape({total}).slice(0, pos, pos + 1).to_vector<int64_t>()[0];
      throw Error(op, "indices in [0, " + std::to_string(bound) + ")", std::to_string(bad),
                  "token ids must be below the vocabulary size");
    }
    return idx;
  });
}

template <class W>
void launch_gather(Tensor& out, const Tensor& x, const Tensor& idx, const Around& ax, int64_t m) {
  const int64_t total = ax.outer * m * ax.inner;
  if (total == 0) return;
  visit_index_cuda(idx.dtype(), "gather", [&](auto tag_) {
    using I = typename decltype(tag_)::type;
    gather_kernel<W, I><<<grid_for(total), kThreads, 0, stream()>>>(
        static_cast<W*>(out.raw_data()), static_cast<const W*>(x.raw_data()), idx.data<I>(),
        ax.outer, ax.n, m, ax.inner);
    CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  if (xs.empty()) throw Error("concat", "at least one tensor", "none");
  const Tensor& first = xs[0];
  require_cuda(first, "concat");
  dim = wrap_dim(dim, first.dim(), "concat");
  Shape out_shape = first.shape();
  out_shape[dim] = 0;
  for (const Tensor& x : xs) {
    require_cuda(x, "concat");
    check_same_dtype(first, x, "concat");
    Shape a = x.shape(), b = first.shape();
    if (a.size() != b.size()) throw Error("concat", "tensors of equal rank", to_string(a));
    a[dim] = b[dim] = 0;
    if (a != b)
      throw Error("concat", "equal sizes except on dim " + std::to_string(dim),
                  to_string(x.shape()) + " vs " + to_string(first.shape()));
    out_shape[dim] += x.shape()[dim];
  }
  Tensor out = cuda_empty(out_shape, first.dtype());
  int64_t at = 0;
  for (const Tensor& x : xs) {
    Tensor view = out.slice(dim, at, at + x.shape()[dim]);
    copy_strided(view, x);
    at += x.shape()[dim];
  }
  return out;
}

Tensor slice_backward(const Tensor& src, const Shape& shape, int64_t dim, int64_t start,
                      int64_t step) {
  require_cuda(src, "slice_backward");
  Tensor out = cuda_zeros(shape, src.dtype());
  dim = wrap_dim(dim, static_cast<int64_t>(shape.size()), "slice_backward");
  const int64_t n = src.shape()[dim];
  if (n == 0) return out;
  Tensor view = out.slice(dim, start, start + (n - 1) * step + 1, step);
  copy_strided(view, src);
  return out;
}

Tensor index_select(const Tensor& x_in, int64_t dim, const Tensor& index) {
  require_cuda(x_in, "index_select");
  dim = wrap_dim(dim, x_in.dim(), "index_select");
  const Tensor x = contiguous(x_in);
  const std::vector<int64_t> idx = read_index(index, x.shape()[dim], "index_select");
  const int64_t m = static_cast<int64_t>(idx.size());
  Shape out_shape = x.shape();
  out_shape[dim] = m;
  const Around a = around(x.shape(), dim);
  Tensor out = cuda_empty(out_shape, x.dtype());
  if (m == 0) return out;
  const Tensor d_idx = Tensor::from_vector<int64_t>(idx, {m}).to(Device::CUDA);
  switch (dtype_size(x.dtype())) {
    case 2: launch_select<uint16_t>(out, x, d_idx, a, m); break;
    case 4: launch_select<uint32_t>(out, x, d_idx, a, m); break;
    case 8: launch_select<uint64_t>(out, x, d_idx, a, m); break;
    default: HLA_CHECK(false, "index_select: unexpected element size");
  }
  return out;
}

Tensor index_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src_in) {
  require_cuda(src_in, "index_add", "src");
  dim = wrap_dim(dim, static_cast<int64_t>(shape.size()), "index_add");
  const Tensor src = contiguous(src_in);
  const std::vector<int64_t> idx = read_index(index, shape[dim], "index_add");
  const Around a = around(shape, dim);
  const int64_t m = static_cast<int64_t>(idx.size());
  HLA_CHECK(src.numel() == a.outer * m * a.inner, "index_add: src does not match index");
  return visit_cuda_storage(src.dtype(), "index_add", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    Tensor out = cuda_empty(shape, src.dtype());
    const int64_t total = a.outer * a.n * a.inner;
    if (total == 0) return out;
    // CSR of sources per destination row, ascending j (counting sort): [row_ptr (n+1) | cols (m)].
    std::vector<int64_t> csr(a.n + 1 + m, 0);
    for (int64_t j : idx) ++csr[j + 1];
    for (int64_t r = 0; r < a.n; ++r) csr[r + 1] += csr[r];
    std::vector<int64_t> fill(csr.begin(), csr.begin() + a.n);
    for (int64_t j = 0; j < m; ++j) csr[a.n + 1 + fill[idx[j]]++] = j;
    const Tensor d_csr =
        Tensor::from_vector<int64_t>(csr, {static_cast<int64_t>(csr.size())}).to(Device::CUDA);
    const int64_t* row_ptr = d_csr.data<int64_t>();
    index_add_kernel<S><<<grid_for(total), kThreads, 0, stream()>>>(
        out.data<S>(), src.data<S>(), row_ptr, row_ptr + a.n + 1, a.outer, a.n, m, a.inner);
    CUDA_CHECK(cudaGetLastError());
    return out;
  });
}

Tensor gather(const Tensor& x_in, int64_t dim, const Tensor& index_in) {
  require_cuda(x_in, "gather");
  dim = wrap_dim(dim, x_in.dim(), "gather");
  check_rank(index_in, x_in.dim(), "gather", "index");
  const Tensor x = contiguous(x_in);
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d != dim && index_in.shape()[d] != x.shape()[d])
      throw Error("gather", "index sizes equal to x's except on dim " + std::to_string(dim),
                  to_string(index_in.shape()) + " vs " + to_string(x.shape()));
  const Tensor idx = device_index(index_in, x.shape()[dim], "gather");
  const Around ax = around(x.shape(), dim);
  const int64_t m = idx.shape()[dim];
  Tensor out = cuda_empty(idx.shape(), x.dtype());
  switch (dtype_size(x.dtype())) {
    case 2: launch_gather<uint16_t>(out, x, idx, ax, m); break;
    case 4: launch_gather<uint32_t>(out, x, idx, ax, m); break;
    case 8: launch_gather<uint64_t>(out, x, idx, ax, m); break;
    default: HLA_CHECK(false, "gather: unexpected element size");
  }
  return out;
}

Tensor scatter_add(const Shape& shape, int64_t dim, const Tensor& index_in, const Tensor& src_in) {
  require_cuda(src_in, "scatter_add", "src");
  const int64_t rank = static_cast<int64_t>(shape.size());
  dim = wrap_dim(dim, rank, "scatter_add");
  const Tensor src = contiguous(src_in);
  check_defined(index_in, "scatter_add", "index");
  HLA_CHECK(index_in.shape() == src.shape(), "scatter_add: index and src shapes differ");
  // Every write must land inside the output: index's sizes are the output's except on dim.
  bool fits = src.dim() == rank;
  for (int64_t d = 0; fits && d < rank; ++d) fits = d == dim || src.shape()[d] == shape[d];
  if (!fits)
    throw Error("scatter_add",
                "index sizes equal to the output's " + to_string(shape) + " except on dim " +
                    std::to_string(dim),
                to_string(src.shape()));
  const Tensor idx = device_index(index_in, shape[dim], "scatter_add");
  const Around ao = around(shape, dim);
  const int64_t m = src.shape()[dim];
  return visit_cuda_storage(src.dtype(), "scatter_add", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    using C = compute_t<S>;
    Tensor acc = cuda_zeros(shape, dtype_of<C>());
    const int64_t columns = ao.outer * ao.inner;
    if (columns == 0 || m == 0) return acc.to(src.dtype());
    visit_index_cuda(idx.dtype(), "scatter_add", [&](auto itag_) {
      using I = typename decltype(itag_)::type;
      scatter_add_kernel<S, I><<<grid_for(columns), kThreads, 0, stream()>>>(
          acc.data<C>(), src.data<S>(), idx.data<I>(), ao.outer, ao.n, m, ao.inner);
      CUDA_CHECK(cudaGetLastError());
    });
    return acc.to(src.dtype());  // a no-op for f32 / f64
  });
}

}  // namespace hla::cuda
