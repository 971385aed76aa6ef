// Reductions on CUDA: sum and max over any set of dimensions (sum_to and sum_all in
// kernels/cpu/tensor/reduce.cpp call these through ops::sum).
//   The reduced dimensions are permuted to the end and made contiguous (one strided copy), so
//   each output element reduces one contiguous row [n_out, n_red]. Short rows take one warp
//   each, long rows one block each. Leading dimensions of a contiguous tensor (bias and norm
//   weight gradients: [B*T, D] summed over B*T) are reduced in place as the columns of
//   [n_red, n_out], without the copy: blocks of 32 columns, their rows split over gridDim.y,
//   the splits' partials summed by a second kernel. Sums accumulate in double in a fixed order
//   for given shapes (deterministic).
//   Output: a fresh contiguous tensor (keepdim or not). dtypes: f32, f64, bf16 (read as float:
//   a bf16 sum accumulates in double like the others and is rounded to bf16 only at the end;
//   a bf16 max is exact).
#include <algorithm>
#include <cfloat>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

constexpr int64_t kBlockRowMin = 2048;  // rows at least this long get a whole block

template <class C>
__device__ inline C lowest() {
  return sizeof(C) == 4 ? C(-FLT_MAX) : C(-DBL_MAX);
}

// ---- kernels

// One warp per row. is_max: max (in compute_t<S>), else sum (accumulated in double).
template <class S, bool is_max>
__global__ void reduce_rows_warp_kernel(S* __restrict__ out,         // [n_out]
                                        const S* __restrict__ rows,  // [n_out, n_red] contiguous
                                        int64_t n_out, int64_t n_red) {
  using C = compute_t<S>;
  const int64_t row = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= n_out) return;
  const S* r = rows + row * n_red;
  if constexpr (is_max) {
    C m = lowest<C>();
    for (int64_t j = lane; j < n_red; j += 32) {
      const C v = value_cast<C>(r[j]);
      m = v > m ? v : m;
    }
    m = warp_reduce(m, MaxOp{});
    if (lane == 0) out[row] = value_cast<S>(m);
  } else {
    double s = 0;
    for (int64_t j = lane; j < n_red; j += 32) s += value_cast<double>(r[j]);
    s = warp_reduce(s, SumOp{});
    if (lane == 0) out[row] = value_cast<S>(s);
  }
}

// One block per row.
template <class S, bool is_max>
__global__ void reduce_rows_block_kernel(S* __restrict__ out,         // [n_out]
                                         const S* __restrict__ rows,  // [n_out, n_red]
                                         int64_t n_red) {
  using C = compute_t<S>;
  __shared__ double shm_d[32];
  __shared__ C shm_c[32];
  const S* r = rows + blockIdx.x * n_red;
  if constexpr (is_max) {
    C m = lowest<C>();
    for (int64_t j = threadIdx.x; j < n_red; j += blockDim.x) {
      const C v = value_cast<C>(r[j]);
      m = v > m ? v : m;
    }
    m = block_reduce(m, MaxOp{}, lowest<C>(), shm_c);
    if (threadIdx.x == 0) out[blockIdx.x] = value_cast<S>(m);
  } else {
    double s = 0;
    for (int64_t j = threadIdx.x; j < n_red; j += blockDim.x) s += value_cast<double>(r[j]);
    s = block_reduce(s, SumOp{}, 0.0, shm_d);
    if (threadIdx.x == 0) out[blockIdx.x] = value_cast<S>(s);
  }
}

// Column partials of x [n_red, n_out] contiguous: block (bx, split) takes columns 32 bx .. +31
// (a lane each: coalesced rows) and rows [split * rows_per, +rows_per), warp w every
// kColWarps-th of them; the warps' results are combined in shared memory in warp order.
// partial [gridDim.y, n_out]: double sums, or maxima in compute_t<S>.
constexpr int kColWarps = 8;
template <class S, bool is_max>
using col_acc_t = std::conditional_t<is_max, compute_t<S>, double>;

template <class S, bool is_max>
__global__ void __launch_bounds__(32 * kColWarps)
    reduce_cols_partial_kernel(col_acc_t<S, is_max>* __restrict__ partial,
                               const S* __restrict__ x, int64_t n_red, int64_t n_out,
                               int64_t rows_per) {
  using A = col_acc_t<S, is_max>;
  __shared__ A shm[kColWarps][32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int64_t col = blockIdx.x * int64_t(32) + lane;
  const int64_t r0 = blockIdx.y * rows_per;
  const int64_t r1 = r0 + rows_per < n_red ? r0 + rows_per : n_red;
  A acc = is_max ? A(lowest<compute_t<S>>()) : A(0);
  if (col < n_out)
    for (int64_t r = r0 + w; r < r1; r += kColWarps) {
      const A v = value_cast<A>(x[r * n_out + col]);
      acc = is_max ? (v > acc ? v : acc) : acc + v;
    }
  shm[w][lane] = acc;
  __syncthreads();
  if (w != 0 || col >= n_out) return;
  for (int k = 1; k < kColWarps; ++k) {
    const A v = shm[k][lane];
    acc = is_max ? (v > acc ? v : acc) : acc + v;
  }
  partial[blockIdx.y * n_out + col] = acc;
}

// out[col] = the splits' partials of column col combined in split order.
template <class S, bool is_max>
__global__ void reduce_cols_final_kernel(S* __restrict__ out,
                                         const col_acc_t<S, is_max>* __restrict__ partial,
                                         int64_t splits, int64_t n_out) {
  using A = col_acc_t<S, is_max>;
  const int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (col >= n_out) return;
  A acc = partial[col];
  for (int64_t s = 1; s < splits; ++s) {
    const A v = partial[s * n_out + col];
    acc = is_max ? (v > acc ? v : acc) : acc + v;
  }
  out[col] = value_cast<S>(acc);
}

// ---- launchers

// Whether dims are the leading dimensions 0 .. k-1 (k < rank) of a contiguous x: reduced in place
// as the columns of [n_red, n_out].
bool leading_dims(const Tensor& x, const std::vector<int64_t>& dims, const char* op) {
  const int64_t rank = x.dim();
  if (dims.empty() || static_cast<int64_t>(dims.size()) >= rank || !x.is_contiguous()) return false;
  std::vector<bool> reduced(rank, false);
  for (int64_t d : dims) reduced[wrap_dim(d, rank, op)] = true;
  for (size_t i = 0; i < dims.size(); ++i)
    if (!reduced[i]) return false;
  return true;
}

template <class S, bool is_max>
void reduce_columns(S* out, const S* x, int64_t n_red, int64_t n_out, const char* op) {
  using A = col_acc_t<S, is_max>;
  // enough blocks to fill the GPU (~1024), each split at least 64 rows
  const int64_t col_blocks = (n_out + 31) / 32;
  const int64_t splits = std::max<int64_t>(
      1, std::min<int64_t>((n_red + 63) / 64, std::max<int64_t>(1, 1024 / col_blocks)));
  const int64_t rows_per = (n_red + splits - 1) / splits;
  HLA_CHECK(col_blocks < (int64_t(1) << 31), op << ": too many columns for one launch");
  Tensor partial = cuda_empty({splits * n_out}, sizeof(A) == 8 ? DType::f64 : DType::f32);
  reduce_cols_partial_kernel<S, is_max>
      <<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(splits)), 32 * kColWarps,
         0, stream()>>>(static_cast<A*>(partial.raw_data()), x, n_red, n_out, rows_per);
  CUDA_CHECK(cudaGetLastError());
  reduce_cols_final_kernel<S, is_max><<<grid_for(n_out), kThreads, 0, stream()>>>(
      out, static_cast<const A*>(partial.raw_data()), splits, n_out);
  CUDA_CHECK(cudaGetLastError());
}

struct ReducePlan {
  Shape out_shape;
  Tensor rows;  // [n_out, n_red] contiguous
  int64_t n_out = 1, n_red = 1;
};

ReducePlan plan_reduce(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim,
                       const char* op) {
  const int64_t rank = x.dim();
  std::vector<bool> reduced(rank, false);
  for (int64_t d : dims) {
    const int64_t w = wrap_dim(d, rank, op);
    if (reduced[w])
      throw Error(op, "each dimension once", "dimension " + std::to_string(w) + " twice");
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
  for (int64_t i = 0; i < rank; ++i)
    if (reduced[i]) {
      perm.push_back(i);
      p.n_red *= x.shape()[i];
    }
  p.rows = contiguous(x.permute(perm));
  return p;
}

template <bool is_max>
Tensor reduce_impl(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim,
                   const char* op) {
  require_cuda(x, op);
  if (leading_dims(x, dims, op) && x.numel() > 0) {
    int64_t n_red = 1;
    Shape out_shape;
    for (int64_t i = 0; i < x.dim(); ++i) {
      if (i < static_cast<int64_t>(dims.size())) {
        n_red *= x.shape()[i];
        if (keepdim) out_shape.push_back(1);
      } else {
        out_shape.push_back(x.shape()[i]);
      }
    }
    const int64_t n_out = x.numel() / n_red;
    return visit_cuda_storage(x.dtype(), op, [&](auto tag_) {
      using S = typename decltype(tag_)::type;
      Tensor out = cuda_empty(out_shape, x.dtype());
      reduce_columns<S, is_max>(out.data<S>(), x.data<S>(), n_red, n_out, op);
      return out;
    });
  }
  const ReducePlan p = plan_reduce(x, dims, keepdim, op);
  if (is_max && p.n_red == 0) throw Error(op, "a non-empty reduction", "zero elements to reduce");
  return visit_cuda_storage(x.dtype(), op, [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    Tensor out = cuda_empty(p.out_shape, x.dtype());
    if (p.n_out == 0) return out;
    if (p.n_red == 0) return cuda_zeros(p.out_shape, x.dtype());  // empty sum
    if (p.n_red >= kBlockRowMin && p.n_out <= (int64_t(1) << 31) - 1) {
      reduce_rows_block_kernel<S, is_max><<<static_cast<unsigned>(p.n_out), kThreads, 0,
                                            stream()>>>(out.data<S>(), p.rows.data<S>(), p.n_red);
    } else {
      const int64_t warps = kThreads / 32;
      const int64_t blocks = (p.n_out + warps - 1) / warps;
      HLA_CHECK(blocks < (int64_t(1) << 31), op << ": too many rows for one launch");
      reduce_rows_warp_kernel<S, is_max><<<static_cast<unsigned>(blocks), kThreads, 0,
                                           stream()>>>(out.data<S>(), p.rows.data<S>(), p.n_out,
                                                       p.n_red);
    }
    CUDA_CHECK(cudaGetLastError());
    return out;
  });
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce_impl<false>(x, dims, keepdim, "sum");
}
Tensor max(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce_impl<true>(x, dims, keepdim, "max");
}

}  // namespace hla::cuda
