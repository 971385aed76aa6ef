// dtype conversion on CUDA: dst = src converted element by element, for two tensors of one shape
// on the GPU, any strides on both sides (dst may be a view; src may be broadcast).
//   Values convert as the host's hla::convert does (tensor/dtype_dispatch.h), through value_cast
//   (common.cuh): bf16 through float, float -> bf16 rounded to nearest, ties to even
//   (__float2bfloat16_rn), f64 -> bf16 in one rounding (__double2bfloat16), floats -> integers
//   truncate toward zero.
//   Every pair of f32, f64, bf16, i32, i64 is one instantiation of one elementwise kernel, and
//   of a packed one for contiguous, 16-byte-aligned tensors (8 elements a thread in 16-byte
//   loads and stores: the casts of the weights and their gradients under mixed precision).
// Tensor::to(DType) of a GPU tensor lands here through the storage backend (tensor/storage.h).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

// Calls f(TypeTag<T>{}) for the element type of any dtype.
template <class F>
void visit_any_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f32: return f(TypeTag<float>{});
    case DType::f64: return f(TypeTag<double>{});
    case DType::bf16: return f(TypeTag<bf16_dev>{});
    case DType::i32: return f(TypeTag<int32_t>{});
    case DType::i64: return f(TypeTag<int64_t>{});
  }
  HLA_CHECK(false, "convert_dtype: unknown dtype");
}

// ---- kernels

template <class D, class S>
__global__ void convert_kernel(D* __restrict__ dst,        // view, any strides
                               Indexer dix,
                               const S* __restrict__ src,  // view, any strides
                               Indexer six, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[dix.offset(i)] = value_cast<D>(src[six.offset(i)]);
}

constexpr int kGroup = 8;  // elements a thread of the packed kernel: whole packs of every dtype

// dst[j] = src[j] for j < kGroup * groups, dst and src contiguous and 16-byte aligned.
template <class D, class S>
__global__ void convert_pack_kernel(Pack<D>* __restrict__ dst, const Pack<S>* __restrict__ src,
                                    int64_t groups) {
  constexpr int kIn = kGroup / Pack<S>::kSize, kOut = kGroup / Pack<D>::kSize;
  static_assert(kIn * Pack<S>::kSize == kGroup && kOut * Pack<D>::kSize == kGroup,
                "a group is whole packs");
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < groups;
       i += int64_t(gridDim.x) * blockDim.x) {
    Pack<S> in[kIn];
    Pack<D> out[kOut];
#pragma unroll
    for (int p = 0; p < kIn; ++p) in[p] = src[i * kIn + p];
#pragma unroll
    for (int e = 0; e < kGroup; ++e)
      out[e / Pack<D>::kSize].v[e % Pack<D>::kSize] =
          value_cast<D>(in[e / Pack<S>::kSize].v[e % Pack<S>::kSize]);
#pragma unroll
    for (int p = 0; p < kOut; ++p) dst[i * kOut + p] = out[p];
  }
}

}  // namespace

// ---- launcher

void convert_dtype(Tensor& dst, const Tensor& src) {
  require_cuda(dst, "convert_dtype", "destination");
  require_cuda(src, "convert_dtype", "source");
  check_shape(src, dst.shape(), "convert_dtype", "source");
  const int64_t n = dst.numel();
  if (n == 0) return;
  // contiguous, aligned tensors: the packed kernel, then the elementwise one on the tail
  const int64_t groups = packable({&dst, &src}) ? n / kGroup : 0, done = groups * kGroup;
  const Indexer dix = done ? Indexer{} : make_indexer(dst, "convert_dtype");
  const Indexer six = done ? Indexer{} : make_indexer(src, "convert_dtype");
  visit_any_dtype(dst.dtype(), [&](auto dtag_) {
    using D = typename decltype(dtag_)::type;
    visit_any_dtype(src.dtype(), [&](auto stag_) {
      using S = typename decltype(stag_)::type;
      D* d = static_cast<D*>(dst.raw_data());
      const S* s = static_cast<const S*>(src.raw_data());
      if (groups > 0)
        convert_pack_kernel<D, S><<<grid_for(groups), kThreads, 0, stream()>>>(
            reinterpret_cast<Pack<D>*>(d), reinterpret_cast<const Pack<S>*>(s), groups);
      if (done < n)
        convert_kernel<D, S><<<grid_for(n - done), kThreads, 0, stream()>>>(d + done, dix,
                                                                            s + done, six, n - done);
      CUDA_CHECK(cudaGetLastError());
    });
  });
}

}  // namespace hla::cuda
