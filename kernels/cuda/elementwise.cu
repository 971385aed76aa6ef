// Elementwise kernels on CUDA: strided copies (contiguous(), copy_strided), unary maps, scalar
// maps, broadcasting binary ops, where, and add_ (in place).
//   Layouts: every input is any strided view (broadcast strides of 0 included), read through an
//   Indexer; outputs are fresh contiguous tensors, except add_ (overwrites a, which must be
//   contiguous) and copy_strided (overwrites the view dst).
//   dtypes: f32, f64, bf16 (storage S, computed in compute_t<S>: float for bf16, rounded once
//   on the store). One thread per output element, grid-stride loop; contiguous 16-byte aligned
//   operands of one shape take the pack kernels instead (16 bytes per load and store, the tail
//   on the scalar kernel), and so does a binary op whose b repeats over a's rows (a bias).
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

using ops::Binary;
using ops::Unary;

namespace {

// Scalar maps share the unary kernel under codes past the last Unary.
constexpr int kPowScalar = 100, kAddScalar = 101, kMulScalar = 102;

// S: the storage type (bf16's sigmoid is sigmoid_of's, common.cuh), T its compute type.
template <class S, class T = compute_t<S>>
__device__ inline T unary_value(int op, T x, T c) {
  switch (op) {
    case int(Unary::Neg): return -x;
    case int(Unary::Exp): return exp(x);
    case int(Unary::Log): return log(x);
    case int(Unary::Sqrt): return sqrt(x);
    case int(Unary::Rsqrt): return T(1) / sqrt(x);
    case int(Unary::Sigmoid): return sigmoid_of<S>(x);
    case int(Unary::Tanh): return tanh(x);
    case int(Unary::Abs): return fabs(x);
    case int(Unary::Relu): return x > T(0) ? x : T(0);
    case int(Unary::Log1p): return log1p(x);
    case int(Unary::Step): return x > T(0) ? T(1) : T(0);
    case int(Unary::Sign): return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
    case int(Unary::Square): return x * x;
    case int(Unary::Reciprocal): return T(1) / x;
    case int(Unary::Sin): return sin(x);
    case int(Unary::Cos): return cos(x);
    case int(Unary::Silu):
      return x * sigmoid_of<S>(x);
    case int(Unary::Softplus):
      return (x > T(0) ? x : T(0)) + log1p(exp(-fabs(x)));
    case int(Unary::LogSigmoid):
      return log_sigmoid_dev(x);
    case kPowScalar: return pow(x, c);
    case kAddScalar: return x + c;
    case kMulScalar: return x * c;
  }
  return x;
}

template <class S, class T = compute_t<S>>
__device__ inline T binary_value(int op, T a, T b) {
  switch (op) {
    case int(Binary::Add): return a + b;
    case int(Binary::Sub): return a - b;
    case int(Binary::Mul): return a * b;
    case int(Binary::Div): return a / b;
    case int(Binary::Maximum): return a > b ? a : b;
    case int(Binary::Minimum): return a < b ? a : b;
    case int(Binary::Eq): return a == b ? T(1) : T(0);
    case int(Binary::Gt): return a > b ? T(1) : T(0);
    case int(Binary::Ge): return a >= b ? T(1) : T(0);
    case int(Binary::SiluBackward): {
      const T sg = sigmoid_of<S>(a);
      return b * sg * (T(1) + a * (T(1) - sg));
    }
  }
  return a;
}

// ---- kernels

// dst[dix(i)] = src[six(i)] for i < n. Elements are raw 1/2/4/8-byte words (T), no conversion.
template <class T>
__global__ void copy_strided_kernel(T* __restrict__ dst,        // view, any strides
                                    Indexer dix,
                                    const T* __restrict__ src,  // view, any strides
                                    Indexer six, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[dix.offset(i)] = src[six.offset(i)];
}

template <class S>
__global__ void unary_kernel(int op, compute_t<S> c,
                             S* __restrict__ out,      // [n] contiguous
                             const S* __restrict__ x,  // any strides
                             Indexer xi, int64_t n) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = value_cast<S>(unary_value<S>(op, value_cast<C>(x[xi.offset(i)]), c));
}

template <class S>
__global__ void binary_kernel(int op,
                              S* __restrict__ out,      // [n] contiguous, the broadcast shape
                              const S* __restrict__ a,  // expanded view
                              Indexer ai,
                              const S* __restrict__ b,  // expanded view
                              Indexer bi, int64_t n) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = value_cast<S>(binary_value<S>(op, value_cast<C>(a[ai.offset(i)]),
                                           value_cast<C>(b[bi.offset(i)])));
}

// a and b are selected as stored (no rounding); only the mask is read as a number.
template <class S>
__global__ void where_kernel(S* __restrict__ out,      // [n] contiguous
                             const S* __restrict__ c,  // expanded view, same dtype as a
                             Indexer ci,
                             const S* __restrict__ a, Indexer ai,
                             const S* __restrict__ b, Indexer bi, int64_t n) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = value_cast<C>(c[ci.offset(i)]) != C(0) ? a[ai.offset(i)] : b[bi.offset(i)];
}

template <class S>
__global__ void add_inplace_kernel(S* __restrict__ a,        // [n] contiguous, accumulated into
                                   const S* __restrict__ b,  // expanded to a's shape
                                   Indexer bi, int64_t n) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    a[i] = value_cast<S>(value_cast<C>(a[i]) + value_cast<C>(b[bi.offset(i)]));
}

// The same maps over contiguous operands, 16 bytes (Pack<S>, common.cuh) per load and store:
// n_packs whole packs; the caller runs the scalar kernel over the tail.

template <class S>
__global__ void unary_pack_kernel(int op, compute_t<S> c, Pack<S>* __restrict__ out,
                                  const Pack<S>* __restrict__ x, int64_t n_packs) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n_packs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Pack<S> px = x[i];
    Pack<S> po;
#pragma unroll
    for (int k = 0; k < Pack<S>::kSize; ++k)
      po.v[k] = value_cast<S>(unary_value<S>(op, value_cast<C>(px.v[k]), c));
    out[i] = po;
  }
}

template <class S>
__global__ void binary_pack_kernel(int op, Pack<S>* __restrict__ out, const Pack<S>* __restrict__ a,
                                   const Pack<S>* __restrict__ b, int64_t n_packs) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n_packs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Pack<S> pa = a[i], pb = b[i];
    Pack<S> po;
#pragma unroll
    for (int k = 0; k < Pack<S>::kSize; ++k)
      po.v[k] = value_cast<S>(binary_value<S>(op, value_cast<C>(pa.v[k]), value_cast<C>(pb.v[k])));
    out[i] = po;
  }
}

// out = a op b for a contiguous a [rows, D] and b [D] repeated over the rows (a bias):
// row_packs = D / kSize packs of b a row.
template <class S>
__global__ void binary_rows_pack_kernel(int op, Pack<S>* __restrict__ out,
                                        const Pack<S>* __restrict__ a,
                                        const Pack<S>* __restrict__ b, int64_t n_packs,
                                        int64_t row_packs) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n_packs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Pack<S> pa = a[i], pb = b[i % row_packs];
    Pack<S> po;
#pragma unroll
    for (int k = 0; k < Pack<S>::kSize; ++k)
      po.v[k] = value_cast<S>(binary_value<S>(op, value_cast<C>(pa.v[k]), value_cast<C>(pb.v[k])));
    out[i] = po;
  }
}

template <class S>
__global__ void add_inplace_pack_kernel(Pack<S>* __restrict__ a, const Pack<S>* __restrict__ b,
                                        int64_t n_packs) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n_packs;
       i += int64_t(gridDim.x) * blockDim.x) {
    Pack<S> pa = a[i];
    const Pack<S> pb = b[i];
#pragma unroll
    for (int k = 0; k < Pack<S>::kSize; ++k)
      pa.v[k] = value_cast<S>(value_cast<C>(pa.v[k]) + value_cast<C>(pb.v[k]));
    a[i] = pa;
  }
}

// ---- launchers

template <class T>
void launch_copy(Tensor& dst, const Tensor& src, const char* op) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  copy_strided_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(
      static_cast<T*>(dst.raw_data()), make_indexer(dst, op),
      static_cast<const T*>(src.raw_data()), make_indexer(src, op), n);
  CUDA_CHECK(cudaGetLastError());
}

Tensor unary_impl(int op, double c, const Tensor& x, const char* name) {
  require_cuda(x, name);
  return visit_cuda_storage(x.dtype(), name, [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    Tensor out = cuda_empty(x.shape(), x.dtype());
    const int64_t n = x.numel();
    if (n == 0) return out;
    const compute_t<S> cc = static_cast<compute_t<S>>(c);
    int64_t done = 0;  // elements taken by the pack kernel
    if (packable({&x})) {
      const int64_t packs = n / Pack<S>::kSize;
      done = packs * Pack<S>::kSize;
      if (packs > 0)
        unary_pack_kernel<S><<<grid_for(packs), kThreads, 0, stream()>>>(
            op, cc, reinterpret_cast<Pack<S>*>(out.data<S>()),
            reinterpret_cast<const Pack<S>*>(x.data<S>()), packs);
    }
    if (done < n)
      unary_kernel<S><<<grid_for(n - done), kThreads, 0, stream()>>>(
          op, cc, out.data<S>() + done, x.data<S>() + (done ? done : 0),
          done ? Indexer{} : make_indexer(x, name), n - done);
    CUDA_CHECK(cudaGetLastError());
    return out;
  });
}

}  // namespace

void copy_strided(Tensor& dst, const Tensor& src) {
  require_cuda(dst, "copy_strided", "destination");
  require_cuda(src, "copy_strided", "source");
  check_same_dtype(dst, src, "copy_strided");
  check_shape(src, dst.shape(), "copy_strided", "source");
  // Raw words of the element size: any dtype moves without conversion.
  switch (dtype_size(dst.dtype())) {
    case 2: return launch_copy<uint16_t>(dst, src, "copy_strided");
    case 4: return launch_copy<uint32_t>(dst, src, "copy_strided");
    case 8: return launch_copy<uint64_t>(dst, src, "copy_strided");
  }
  HLA_CHECK(false, "copy_strided: unexpected element size");
}

Tensor contiguous(const Tensor& x) {
  require_cuda(x, "contiguous");
  if (x.is_contiguous()) return x;
  Tensor out = cuda_empty(x.shape(), x.dtype());
  copy_strided(out, x);
  return out;
}

Tensor unary(Unary op, const Tensor& x) { return unary_impl(int(op), 0.0, x, "unary"); }
Tensor pow_scalar(const Tensor& x, double p) { return unary_impl(kPowScalar, p, x, "pow"); }
Tensor add_scalar(const Tensor& x, double s) { return unary_impl(kAddScalar, s, x, "add_scalar"); }
Tensor mul_scalar(const Tensor& x, double s) { return unary_impl(kMulScalar, s, x, "mul_scalar"); }

// A 0-dim CPU tensor next to CUDA operands is a scalar and moves over (as in PyTorch; e.g. the
// `zero` of autograd's where rule). Any other CPU operand is a device mix and throws.
Tensor scalar_to_cuda(const Tensor& t) {
  return t.defined() && t.device() == Device::CPU && t.dim() == 0 ? t.to(Device::CUDA) : t;
}

// Whether b is repeated over the leading dims of `shape`, a's own shape (a bias added to rows):
// b's shape, leading 1s dropped, is the trailing dims of `shape`.
bool repeats_over_rows(const Tensor& a, const Tensor& b, const Shape& shape) {
  if (a.shape() != shape) return false;
  Shape bs = b.shape();
  while (!bs.empty() && bs.front() == 1) bs.erase(bs.begin());
  return bs.size() <= shape.size() && std::equal(bs.begin(), bs.end(), shape.end() - bs.size());
}

Tensor binary(Binary op, const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = scalar_to_cuda(a_in), b = scalar_to_cuda(b_in);
  require_cuda(a, "binary", "a");
  require_cuda(b, "binary", "b");
  check_same_dtype(a, b, "binary");
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), "binary");
  const Tensor ea = a.expand(shape), eb = b.expand(shape);
  return visit_cuda_storage(a.dtype(), "binary", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    Tensor out = cuda_empty(shape, a.dtype());
    const int64_t n = out.numel();
    if (n == 0) return out;
    int64_t done = 0;  // elements taken by a pack kernel (contiguous operands)
    constexpr int P = Pack<S>::kSize;
    if (a.shape() == shape && b.shape() == shape && packable({&a, &b})) {
      const int64_t packs = n / P;
      done = packs * P;
      if (packs > 0)
        binary_pack_kernel<S><<<grid_for(packs), kThreads, 0, stream()>>>(
            int(op), reinterpret_cast<Pack<S>*>(out.data<S>()),
            reinterpret_cast<const Pack<S>*>(a.data<S>()),
            reinterpret_cast<const Pack<S>*>(b.data<S>()), packs);
    } else if (repeats_over_rows(a, b, shape) && b.numel() % P == 0 && packable({&a, &b})) {
      done = n;  // whole rows of whole packs
      binary_rows_pack_kernel<S><<<grid_for(n / P), kThreads, 0, stream()>>>(
          int(op), reinterpret_cast<Pack<S>*>(out.data<S>()),
          reinterpret_cast<const Pack<S>*>(a.data<S>()),
          reinterpret_cast<const Pack<S>*>(b.data<S>()), n / P, b.numel() / P);
    }
    if (done < n)
      binary_kernel<S><<<grid_for(n - done), kThreads, 0, stream()>>>(
          int(op), out.data<S>() + done, ea.data<S>() + done,
          done ? Indexer{} : make_indexer(ea, "binary"), eb.data<S>() + done,
          done ? Indexer{} : make_indexer(eb, "binary"), n - done);
    CUDA_CHECK(cudaGetLastError());
    return out;
  });
}

Tensor where(const Tensor& cond_in, const Tensor& a_in, const Tensor& b_in) {
  const Tensor cond = scalar_to_cuda(cond_in), a = scalar_to_cuda(a_in), b = scalar_to_cuda(b_in);
  require_cuda(cond, "where", "cond");
  require_cuda(a, "where", "a");
  require_cuda(b, "where", "b");
  check_same_dtype(a, b, "where");
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"),
                                       b.shape(), "where");
  // A mask of another dtype is converted once, on the device (0/1 masks convert exactly).
  const Tensor c = (cond.dtype() == a.dtype() ? cond : cond.to(a.dtype())).expand(shape);
  const Tensor ea = a.expand(shape), eb = b.expand(shape);
  return visit_cuda_storage(a.dtype(), "where", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    Tensor out = cuda_empty(shape, a.dtype());
    const int64_t n = out.numel();
    if (n == 0) return out;
    where_kernel<S><<<grid_for(n), kThreads, 0, stream()>>>(
        out.data<S>(), c.data<S>(), make_indexer(c, "where"), ea.data<S>(),
        make_indexer(ea, "where"), eb.data<S>(), make_indexer(eb, "where"), n);
    CUDA_CHECK(cudaGetLastError());
    return out;
  });
}

void add_(Tensor& a, const Tensor& b) {
  require_cuda(a, "add_", "a");
  require_cuda(b, "add_", "b");
  check_same_dtype(a, b, "add_");
  HLA_CHECK(a.is_contiguous(), "add_ needs a contiguous destination");
  const Tensor eb = b.expand(a.shape());
  visit_cuda_storage(a.dtype(), "add_", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    const int64_t n = a.numel();
    if (n == 0) return;
    int64_t done = 0;  // elements taken by the pack kernel
    if (b.shape() == a.shape() && packable({&a, &b})) {
      const int64_t packs = n / Pack<S>::kSize;
      done = packs * Pack<S>::kSize;
      if (packs > 0)
        add_inplace_pack_kernel<S><<<grid_for(packs), kThreads, 0, stream()>>>(
            reinterpret_cast<Pack<S>*>(a.data<S>()), reinterpret_cast<const Pack<S>*>(b.data<S>()),
            packs);
    }
    if (done < n)
      add_inplace_kernel<S><<<grid_for(n - done), kThreads, 0, stream()>>>(
          a.data<S>() + done, eb.data<S>() + done, done ? Indexer{} : make_indexer(eb, "add_"),
          n - done);
    CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace hla::cuda
