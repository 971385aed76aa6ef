// Reductions on CUDA: sum and max over any set of dimensions (sum_to and sum_all in
// kernels/cpu/tensor/reduce.cpp call these through ops::sum).
//   The reduced dimensions are permuted to the end and made contiguous (one strided copy), so
//   each output element reduces one contiguous row [n_out, n_red]. Short rows take one warp
//   each, long rows one block each. Sums accumulate in double in a fixed order (deterministic).
//   Output: a fresh contiguous tensor (keepdim or not). dtypes: f32, f64, bf16 (read as float:
//   a bf16 sum accumulates in double like the others and is rounded to bf16 only at the end;
//   a bf16 max is exact).
#include <cfloat>

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

// ---- launchers

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
