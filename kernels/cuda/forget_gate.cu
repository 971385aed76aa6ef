// The HGRN / HGRN2 forget gate on CUDA (kernels/ops.h, ops::forget_gate): for x [..., D] and a
// lower bound lb [D] (or none: 0),
//   s = sigmoid(x),  f = lb + (1 - lb) s,  log_f = log f  (logsigmoid(x), exactly, where lb = 0),
//   one_minus_f = (1 - lb) sigmoid(-x)
//   dx  = dlog_f (1 - s)(1 - lb / f) - d_one_minus_f (1 - lb) s (1 - s)
//   dlb = sum over the leading dims of (dlog_f / f - d_one_minus_f)(1 - s)
// One elementwise kernel each way, on 16-byte packs where the rows are whole packs (contiguous
// x, D a multiple of the pack), else an element a thread; both compute an element through
// GateForward / GateBackward, where s and 1 - s = sigmoid(-x) come from one e = e^{-|x|} (the
// values of sigmoid_dev and log_sigmoid_dev in f32 and f64; bf16's from e^{-|x|} on the
// multifunction unit). dlb's terms go to a compute-type buffer that cuda::sum reduces. dtypes:
// x f32, f64, bf16 (computed in compute_t, each output rounded once); lb any floating dtype
// (read in compute_t; dlb returned in lb's dtype).
#include <numeric>
#include <type_traits>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

// sigmoid(x) and sigmoid(-x) from one exponential e = e^{-|x|}: the values of sigmoid_dev(x)
// and sigmoid_dev(-x), operation for operation, for f32 and f64; for bf16 storage (results
// rounded to 8 significant bits) e on the multifunction unit and one reciprocal, as
// sigmoid_of (common.cuh).
template <class S>
struct Sigmoids {
  using C = compute_t<S>;
  C e, s, s_neg;
  __device__ explicit Sigmoids(C x) {
    C one_over, e_over;
    if constexpr (std::is_same_v<S, bf16_dev>) {
      e = __expf(-fabsf(x));
      one_over = __frcp_rn(1.f + e);
      e_over = e * one_over;
    } else {
      e = exp(-fabs(x));
      one_over = C(1) / (C(1) + e);
      e_over = e / (C(1) + e);
    }
    s = x >= C(0) ? one_over : e_over;
    s_neg = x >= C(0) ? e_over : one_over;
  }
};

// One element of the forward, from x and its bound b (0: none); log_f is logsigmoid(x) (the
// expression of log_sigmoid_dev) where b = 0. Both kernels of each direction compute through
// these, so the element and pack paths agree bit for bit.
template <class S>
struct GateForward {
  using C = compute_t<S>;
  C log_f, one_minus_f;
  __device__ GateForward(C x, C b) {
    const Sigmoids<S> sg(x);
    log_f = b != C(0) ? log(b + (C(1) - b) * sg.s) : (x < C(0) ? x : C(0)) - log1p(sg.e);
    one_minus_f = (C(1) - b) * sg.s_neg;
  }
};
// One element of the backward, from x, b and the outputs' gradients gl, go: dx, and the term
// of dlb (read only when there is a bound). 1 / f once (a reciprocal for bf16).
template <class S>
struct GateBackward {
  using C = compute_t<S>;
  C dx, dlb_term;
  __device__ GateBackward(C x, C b, C gl, C go) {
    const Sigmoids<S> sg(x);
    const C s = sg.s, one_minus_s = sg.s_neg, f = b + (C(1) - b) * s;
    C inv_f;
    if constexpr (std::is_same_v<S, bf16_dev>)
      inv_f = __frcp_rn(f);
    else
      inv_f = C(1) / f;
    const C ratio = b != C(0) ? b * inv_f : C(0);
    dx = gl * one_minus_s * (C(1) - ratio) - go * (C(1) - b) * s * one_minus_s;
    dlb_term = (gl * inv_f - go) * one_minus_s;
  }
};

// P values of type T stored together (16-byte loads and stores, not P scalar ones): a pack's
// log_f (L: S, or float for bf16 S), its dlog_f, its terms of dlb.
template <class T, int P>
struct alignas(16) Lanes {
  T v[P];
};

// I: the index type, uint32_t when every index fits (a 32-bit i % D is several times cheaper).
// L: log_f's storage (and dlog_f's), S or float for bf16 S.
template <class S, class L, class I>
__global__ void forget_gate_fwd_kernel(L* __restrict__ log_f, S* __restrict__ one_minus_f,
                                       const S* __restrict__ x,              // [n]
                                       const compute_t<S>* __restrict__ lb,  // [D] or null
                                       I n, I D) {
  using C = compute_t<S>;
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < n; i += I(gridDim.x) * blockDim.x) {
    const GateForward<S> y(value_cast<C>(x[i]), lb ? lb[i % D] : C(0));
    log_f[i] = value_cast<L>(y.log_f);
    one_minus_f[i] = value_cast<S>(y.one_minus_f);
  }
}

// The forward on packs: x, log_f, one_minus_f as n_packs packs, the pack at i covering columns
// (i * kSize) % D .. + kSize - 1 of lb.
template <class S, class L, class I>
__global__ void forget_gate_fwd_pack_kernel(Lanes<L, Pack<S>::kSize>* __restrict__ log_f,
                                            Pack<S>* __restrict__ one_minus_f,
                                            const Pack<S>* __restrict__ x,
                                            const compute_t<S>* __restrict__ lb, I n_packs, I D) {
  using C = compute_t<S>;
  constexpr int P = Pack<S>::kSize;
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < n_packs;
       i += I(gridDim.x) * blockDim.x) {
    const Pack<S> px = x[i];
    const I col = i * P % D;
    Lanes<L, P> lf;
    Pack<S> om;
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const GateForward<S> y(value_cast<C>(px.v[k]), lb ? lb[col + k] : C(0));
      lf.v[k] = value_cast<L>(y.log_f);
      om.v[k] = value_cast<S>(y.one_minus_f);
    }
    log_f[i] = lf;
    one_minus_f[i] = om;
  }
}

template <class S, class L, class I>
__global__ void forget_gate_bwd_kernel(S* __restrict__ dx,                    // [n]
                                       compute_t<S>* __restrict__ dlb_terms,  // [n] or null
                                       const S* __restrict__ x,               // [n]
                                       const compute_t<S>* __restrict__ lb,   // [D] or null
                                       const L* __restrict__ dlog_f,          // [n] or null
                                       const S* __restrict__ d_one_minus_f,   // [n] or null
                                       I n, I D) {
  using C = compute_t<S>;
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < n; i += I(gridDim.x) * blockDim.x) {
    const GateBackward<S> g(value_cast<C>(x[i]), lb ? lb[i % D] : C(0),
                            dlog_f ? value_cast<C>(dlog_f[i]) : C(0),
                            d_one_minus_f ? value_cast<C>(d_one_minus_f[i]) : C(0));
    dx[i] = value_cast<S>(g.dx);
    if (dlb_terms) dlb_terms[i] = g.dlb_term;
  }
}

// The backward on packs (as the forward's); dlb_terms stays one compute value an element.
template <class S, class L, class I>
__global__ void forget_gate_bwd_pack_kernel(Pack<S>* __restrict__ dx,
                                            compute_t<S>* __restrict__ dlb_terms,  // [n] or null
                                            const Pack<S>* __restrict__ x,
                                            const compute_t<S>* __restrict__ lb,
                                            const Lanes<L, Pack<S>::kSize>* __restrict__ dlog_f,
                                            const Pack<S>* __restrict__ d_one_minus_f, I n_packs,
                                            I D) {
  using C = compute_t<S>;
  constexpr int P = Pack<S>::kSize;
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < n_packs;
       i += I(gridDim.x) * blockDim.x) {
    const Pack<S> px = x[i];
    Lanes<L, P> pl;
    Pack<S> po, pd;
    if (dlog_f) pl = dlog_f[i];
    if (d_one_minus_f) po = d_one_minus_f[i];
    const I col = i * P % D;
    Lanes<C, P> terms;
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const GateBackward<S> g(value_cast<C>(px.v[k]), lb ? lb[col + k] : C(0),
                              dlog_f ? value_cast<C>(pl.v[k]) : C(0),
                              d_one_minus_f ? value_cast<C>(po.v[k]) : C(0));
      pd.v[k] = value_cast<S>(g.dx);
      terms.v[k] = g.dlb_term;
    }
    dx[i] = pd;
    if (dlb_terms) reinterpret_cast<Lanes<C, P>*>(dlb_terms)[i] = terms;
  }
}

// Calls f(I{}) with the index type of n elements: uint32_t below 2^31, else int64_t.
template <class F>
void with_index_type(int64_t n, F&& f) {
  if (n < (int64_t(1) << 31)) return f(uint32_t{});
  f(int64_t{});
}

// lb as a contiguous [D] tensor of x's compute dtype; undefined stays undefined.
Tensor bound_of(const Tensor& x, const Tensor& lb, DType compute, const char* op) {
  if (!lb.defined()) return Tensor();
  require_cuda(lb, op, "lb");
  const int64_t D = x.size(x.dim() - 1);
  if (lb.dim() != 1 || lb.size(0) != D)
    throw Error(op, "lower bound [" + std::to_string(D) + "] (the gate's last dim)",
                to_string(lb.shape()));
  return contiguous(lb.to(compute));
}

// A gradient of one output: contiguous in its output's dtype and x's shape, or undefined.
Tensor grad_of(const Tensor& g, const Tensor& x, DType dtype, const char* op) {
  if (!g.defined()) return Tensor();
  require_cuda(g, op, "gradient");
  check_shape(g, x.shape(), op, "gradient");
  if (g.dtype() != dtype)
    throw Error(op, std::string("a gradient of dtype ") + dtype_name(dtype) + " like its output",
                dtype_name(g.dtype()));
  return contiguous(g);
}

DType compute_dtype_of(DType d) {
  return d == DType::f64 ? DType::f64 : DType::f32;
}

// Calls f(TypeTag<L>{}) for log_f's storage: S itself, or float for bf16 S.
template <class S, class F>
void with_log_f_type(DType log_f_dtype, DType x_dtype, F&& f) {
  if (log_f_dtype == x_dtype) return f(TypeTag<S>{});
  if constexpr (std::is_same_v<S, bf16_dev>) {
    if (log_f_dtype == DType::f32) return f(TypeTag<float>{});
  }
  throw Error("forget_gate", std::string("log_f of x's dtype ") + dtype_name(x_dtype) +
                                 " (or f32 for bf16 x)",
              dtype_name(log_f_dtype));
}

}  // namespace

void forget_gate(const Tensor& x_in, const Tensor& lb_in, Tensor* log_f, Tensor* one_minus_f,
                 DType log_f_dtype) {
  const char* op = "forget_gate";
  require_cuda(x_in, op, "x");
  if (x_in.dim() < 1) throw Error(op, "gate logits x [..., D]", to_string(x_in.shape()));
  const Tensor x = contiguous(x_in);
  const Tensor lb = bound_of(x, lb_in, compute_dtype_of(x.dtype()), op);
  visit_cuda_storage(x.dtype(), op, [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    using C = compute_t<S>;
    with_log_f_type<S>(log_f_dtype, x.dtype(), [&](auto ltag) {
      using L = typename decltype(ltag)::type;
      Tensor lf = cuda_empty(x.shape(), log_f_dtype), om = cuda_empty(x.shape(), x.dtype());
      const int64_t n = x.numel(), D = x.size(x.dim() - 1);
      constexpr int P = Pack<S>::kSize;
      if (n > 0) {
        const C* bound = lb.defined() ? lb.data<C>() : nullptr;
        with_index_type(n, [&](auto index) {
          using I = decltype(index);
          if (D % P == 0 && packable({&x, &lf, &om}))
            forget_gate_fwd_pack_kernel<S, L, I><<<grid_for(n / P), kThreads, 0, stream()>>>(
                reinterpret_cast<Lanes<L, P>*>(lf.data<L>()),
                reinterpret_cast<Pack<S>*>(om.data<S>()),
                reinterpret_cast<const Pack<S>*>(x.data<S>()), bound, I(n / P), I(D));
          else
            forget_gate_fwd_kernel<S, L, I><<<grid_for(n), kThreads, 0, stream()>>>(
                lf.data<L>(), om.data<S>(), x.data<S>(), bound, I(n), I(D));
        });
        CUDA_CHECK(cudaGetLastError());
      }
      *log_f = lf;
      *one_minus_f = om;
    });
  });
}

void forget_gate_backward(const Tensor& x_in, const Tensor& lb_in, const Tensor& dlog_f_in,
                          const Tensor& d_one_minus_f_in, Tensor* dx, Tensor* dlb) {
  const char* op = "forget_gate_backward";
  require_cuda(x_in, op, "x");
  if (x_in.dim() < 1) throw Error(op, "gate logits x [..., D]", to_string(x_in.shape()));
  const Tensor x = contiguous(x_in);
  const DType compute = compute_dtype_of(x.dtype());
  const Tensor lb = bound_of(x, lb_in, compute, op);
  // dlog_f in log_f's dtype (x's, or f32 for bf16 x), d_one_minus_f in x's
  const DType log_f_dtype = dlog_f_in.defined() ? dlog_f_in.dtype() : x.dtype();
  const Tensor gl = grad_of(dlog_f_in, x, log_f_dtype, op);
  const Tensor go = grad_of(d_one_minus_f_in, x, x.dtype(), op);
  visit_cuda_storage(x.dtype(), op, [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    using C = compute_t<S>;
    with_log_f_type<S>(log_f_dtype, x.dtype(), [&](auto ltag) {
      using L = typename decltype(ltag)::type;
      Tensor dxt = cuda_empty(x.shape(), x.dtype());
      const bool want_dlb = dlb && lb.defined();
      Tensor terms = want_dlb ? cuda_empty(x.shape(), compute) : Tensor();
      const int64_t n = x.numel(), D = x.size(x.dim() - 1);
      if (n > 0) {
        C* term_out = want_dlb ? terms.data<C>() : nullptr;
        const C* bound = lb.defined() ? lb.data<C>() : nullptr;
        const L* g_log = gl.defined() ? gl.data<L>() : nullptr;
        const S* g_omf = go.defined() ? go.data<S>() : nullptr;
        constexpr int P = Pack<S>::kSize;
        with_index_type(n, [&](auto index) {
          using I = decltype(index);
          if (D % P == 0 && packable({&x, &dxt, &gl, &go}))
            forget_gate_bwd_pack_kernel<S, L, I><<<grid_for(n / P), kThreads, 0, stream()>>>(
                reinterpret_cast<Pack<S>*>(dxt.data<S>()), term_out,
                reinterpret_cast<const Pack<S>*>(x.data<S>()), bound,
                reinterpret_cast<const Lanes<L, P>*>(g_log),
                reinterpret_cast<const Pack<S>*>(g_omf), I(n / P), I(D));
          else
            forget_gate_bwd_kernel<S, L, I><<<grid_for(n), kThreads, 0, stream()>>>(
                dxt.data<S>(), term_out, x.data<S>(), bound, g_log, g_omf, I(n), I(D));
        });
        CUDA_CHECK(cudaGetLastError());
      }
      if (dx) *dx = dxt;
      if (!want_dlb) return;
      std::vector<int64_t> leading(x.dim() - 1);
      std::iota(leading.begin(), leading.end(), int64_t(0));
      const Tensor summed = leading.empty() ? terms : sum(terms, leading, false);
      *dlb = summed.to(lb_in.dtype());
    });
  });
}

}  // namespace hla::cuda
