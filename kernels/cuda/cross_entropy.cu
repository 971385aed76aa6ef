// Cross-entropy on CUDA: logits [N, C] (C up to the 32000+ of a vocabulary), integer targets [N]
// (i32/i64, on either device), mean over rows whose target is not ignore_index. The softmax is
// never stored:
//   loss = (1/n) sum_r (lse_r - x_{r,t_r}),   dx_{r,c} = dloss/n (exp(x_{r,c} - lse_r) - [c ==
//   t_r])
// Forward: one block per row, one pass over its logits keeping each thread's running maximum m
// and sum of e^{x - m} (rescaled when m grows; fla's and FlashAttention's online softmax), the
// threads' pairs combined in a fixed order, then lse [N] and the row's loss (f64 scratch [N]);
// one block sums the row losses in a fixed order (deterministic). The loss is a 0-dim CUDA
// tensor. Backward: a block per row (grid-stride over rows), threads over the row's logits; dx
// is fresh (overwritten), rows with ignore_index get 0. Rows of whole 16-byte packs (C a
// multiple of 8 bf16, 4 f32, 2 f64) are read and written a pack at a time.
// Targets are read on the host once per call to check their range (a sync, like the CPU path),
// unless the caller passes their count (it has checked them: check_targets).
// dtypes: f32, f64, bf16. bf16 logits are read as float (maximum and each thread's sum of
// exponentials, every term <= 1, in float, e^x on the multifunction unit for float; the block's
// sum and the row losses in double); the loss and lse are f32 for bf16 logits (compute_t: a
// bf16 loss would lose 8 bits of the value logged and compared), dx is bf16 like the logits.
#include <cmath>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

// ---- kernels

// e^x: __expf (ex2.approx, relative error ~1e-6 at the |x| < 30 that matter next to a
// maximum) for float, exp for double.
__device__ inline float exp_of(float x) { return __expf(x); }
__device__ inline double exp_of(double x) { return exp(x); }

// A running (maximum m, sum of e^{x - m}) taking the values of v[0..n).
template <class A>
struct OnlineSum {
  A m, s;
  template <int n>
  __device__ void add(const A (&v)[n]) {
    A vm = v[0];
#pragma unroll
    for (int e = 1; e < n; ++e) vm = v[e] > vm ? v[e] : vm;
    if (vm > m) {
      s *= exp_of(m - vm);  // 0 on the first values: m = -inf
      m = vm;
    }
#pragma unroll
    for (int e = 0; e < n; ++e) s += exp_of(v[e] - m);
  }
};

// The values of logits pack i (kPacked) or element i as compute_t<S>.
template <class S, bool kPacked>
struct RowValues {
  static constexpr int kN = kPacked ? Pack<S>::kSize : 1;
  __device__ static void load(compute_t<S> (&v)[kN], const S* row, int64_t i) {
    if constexpr (kPacked) {
      const Pack<S> p = reinterpret_cast<const Pack<S>*>(row)[i];
#pragma unroll
      for (int e = 0; e < kN; ++e) v[e] = value_cast<compute_t<S>>(p.v[e]);
    } else {
      v[0] = value_cast<compute_t<S>>(row[i]);
    }
  }
};

template <class S, bool kPacked>
__global__ void ce_fwd_kernel(compute_t<S>* __restrict__ lse,   // [N] overwritten
                              double* __restrict__ row_loss,    // [N] overwritten
                              const S* __restrict__ x,          // [N, C] contiguous
                              const int64_t* __restrict__ tgt,  // [N]
                              int64_t C, int64_t ignore_index) {
  using A = compute_t<S>;
  using R = RowValues<S, kPacked>;
  __shared__ A shm_m[32];
  __shared__ double shm_s[32];
  const int64_t r = blockIdx.x;
  const S* xr = x + r * C;
  OnlineSum<A> os{-INFINITY, A(0)};
  for (int64_t i = threadIdx.x; i < C / R::kN; i += blockDim.x) {
    A v[R::kN];
    R::load(v, xr, i);
    os.add(v);
  }
  // the threads' pairs: the block's maximum, then each thread's sum rescaled to it, in double
  const A m = block_reduce(os.m, MaxOp{}, A(-INFINITY), shm_m);
  const double part = os.s > A(0) ? static_cast<double>(os.s) * exp(static_cast<double>(os.m - m)) : 0.0;
  const double sum = block_reduce(part, SumOp{}, 0.0, shm_s);
  if (threadIdx.x == 0) {
    const double l = ::log(sum) + static_cast<double>(m);
    lse[r] = static_cast<A>(l);
    const int64_t t = tgt[r];
    row_loss[r] = t == ignore_index ? 0.0 : l - value_cast<double>(xr[t]);
  }
}

template <class L>
__global__ void ce_mean_kernel(L* __restrict__ loss,                 // [1] overwritten
                               const double* __restrict__ row_loss,  // [N]
                               int64_t N, double inv_count) {
  __shared__ double shm_d[32];
  double s = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) s += row_loss[i];
  s = block_reduce(s, SumOp{}, 0.0, shm_d);
  if (threadIdx.x == 0) loss[0] = static_cast<L>(s * inv_count);
}

template <class S, bool kPacked>
__global__ void ce_bwd_kernel(S* __restrict__ dx,                     // [N, C] overwritten
                              const S* __restrict__ x,                // [N, C]
                              const compute_t<S>* __restrict__ lse,  // [N]
                              const int64_t* __restrict__ tgt,        // [N]
                              int64_t N, int64_t C, int64_t ignore_index, compute_t<S> scale) {
  using A = compute_t<S>;
  using R = RowValues<S, kPacked>;
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
    const int64_t t = tgt[r];
    const A l = lse[r], k = t == ignore_index ? A(0) : scale;
    const S* xr = x + r * C;
    S* dr = dx + r * C;
    for (int64_t i = threadIdx.x; i < C / R::kN; i += blockDim.x) {
      A v[R::kN];
      R::load(v, xr, i);
      Pack<S> p;
#pragma unroll
      for (int e = 0; e < R::kN; ++e) {
        A d = k * exp_of(v[e] - l);
        if (i * R::kN + e == t) d -= k;
        p.v[e] = value_cast<S>(d);
      }
      if constexpr (kPacked)
        reinterpret_cast<Pack<S>*>(dr)[i] = p;
      else
        dr[i] = p.v[0];
    }
  }
}

// ---- launchers

struct CeInputs {
  Tensor logits;   // [N, C] contiguous, cuda
  Tensor targets;  // [N] i64, cuda
  int64_t n = 0, c = 0, counted = 0;
};

// counted < 0: the targets are read, checked and counted on the host (check_targets; a
// sync). counted >= 0: the caller has checked them; they are converted to i64 on the device.
CeInputs prepare(const Tensor& logits, const Tensor& targets, int64_t ignore_index, int64_t counted,
                 const char* op) {
  require_cuda(logits, op, "logits");
  check_defined(targets, op, "targets");
  check_rank(logits, 2, op, "logits", "[N, C]");
  check_rank(targets, 1, op, "targets", "[N]");
  visit_cuda_storage(logits.dtype(), op, [&](auto) {});
  CeInputs in;
  in.logits = contiguous(logits);
  in.n = logits.size(0);
  in.c = logits.size(1);
  if (targets.size(0) != in.n)
    throw Error(op, "targets [N] with N=" + std::to_string(in.n), to_string(targets.shape()));
  if (in.n > INT32_MAX) throw Error(op, "fewer than 2^31 rows", std::to_string(in.n));
  if (in.n > 0 && in.c == 0) throw Error(op, "at least one class (C > 0)", "C = 0");
  if (targets.dtype() != DType::i64 && targets.dtype() != DType::i32)
    throw Error(op, "targets of dtype i32 or i64", dtype_name(targets.dtype()),
                "convert with .to(DType::i64)");
  if (counted < 0) {
    const std::vector<int64_t> t = check_targets(targets, in.c, ignore_index, op);
    for (int64_t v : t) in.counted += v != ignore_index;
  } else {
    in.counted = counted;
  }
  in.targets = contiguous(targets.to(Device::CUDA).to(DType::i64));
  return in;
}

// Calls f(std::true_type{}) when every row is whole 16-byte packs of S (C a multiple of the pack,
// the logits aligned), else f(std::false_type{}).
template <class S, class F>
void with_packed_rows(const CeInputs& in, F&& f) {
  if (in.c % Pack<S>::kSize == 0 && packable({&in.logits})) return f(std::true_type{});
  f(std::false_type{});
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     Tensor* lse_out, int64_t counted) {
  const CeInputs in = prepare(logits, targets, ignore_index, counted, "cross_entropy");
  return visit_cuda_storage(in.logits.dtype(), "cross_entropy", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    using L = compute_t<S>;  // lse and loss
    Tensor lse = cuda_empty({in.n}, dtype_of<L>());
    Tensor loss = cuda_zeros({}, dtype_of<L>());
    if (in.n > 0) {
      Tensor row_loss = cuda_empty({in.n}, DType::f64);
      with_packed_rows<S>(in, [&](auto packed) {
        ce_fwd_kernel<S, decltype(packed)::value>
            <<<static_cast<unsigned>(in.n), kThreads, 0, stream()>>>(
                lse.data<L>(), row_loss.data<double>(), in.logits.data<S>(),
                in.targets.data<int64_t>(), in.c, ignore_index);
      });
      CUDA_CHECK(cudaGetLastError());
      const double inv = in.counted ? 1.0 / static_cast<double>(in.counted) : 0.0;
      ce_mean_kernel<L><<<1, 1024, 0, stream()>>>(loss.data<L>(), row_loss.data<double>(),
                                                  in.n, inv);
      CUDA_CHECK(cudaGetLastError());
    }
    if (lse_out) *lse_out = lse;
    return loss;
  });
}

Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                              const Tensor& lse_in, double dloss, int64_t counted) {
  const CeInputs in = prepare(logits, targets, ignore_index, counted, "cross_entropy_backward");
  require_cuda(lse_in, "cross_entropy_backward", "lse");
  check_shape(lse_in, {in.n}, "cross_entropy_backward", "lse", "[N]");
  const Tensor lse = contiguous(lse_in);
  return visit_cuda_storage(in.logits.dtype(), "cross_entropy_backward", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    using L = compute_t<S>;
    check_dtype(lse, dtype_of<L>(), "cross_entropy_backward", "lse (from the forward)");
    Tensor dx = cuda_empty(in.logits.shape(), in.logits.dtype());
    const int64_t total = in.n * in.c;
    if (total == 0) return dx;
    const double scale = in.counted ? dloss / static_cast<double>(in.counted) : 0.0;
    const unsigned rows = static_cast<unsigned>(in.n < (1 << 20) ? in.n : (1 << 20));
    with_packed_rows<S>(in, [&](auto packed) {
      ce_bwd_kernel<S, decltype(packed)::value><<<rows, kThreads, 0, stream()>>>(
          dx.data<S>(), in.logits.data<S>(), lse.data<L>(), in.targets.data<int64_t>(), in.n,
          in.c, ignore_index, static_cast<L>(scale));
    });
    CUDA_CHECK(cudaGetLastError());
    return dx;
  });
}

}  // namespace hla::cuda
