// The HGRN / HGRN2 forget gate on CUDA (kernels/ops.h, ops::forget_gate): for x [..., D] and a
// lower bound lb [D] (or none: 0),
//   s = sigmoid(x),  f = lb + (1 - lb) s,  log_f = log f  (logsigmoid(x), exactly, where lb = 0),
//   one_minus_f = (1 - lb) sigmoid(-x)
//   dx  = dlog_f (1 - s)(1 - lb / f) - d_one_minus_f (1 - lb) s (1 - s)
//   dlb = sum over the leading dims of (dlog_f / f - d_one_minus_f)(1 - s)
// One elementwise kernel each way; dlb's terms go to a compute-type buffer that cuda::sum
// reduces. dtypes: x f32, f64, bf16 (computed in compute_t, each output rounded once); lb any
// floating dtype (read in compute_t; dlb returned in lb's dtype).
#include <numeric>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

// I: the index type, uint32_t when every index fits (a 32-bit i % D is several times cheaper).
template <class S, class I>
__global__ void forget_gate_fwd_kernel(S* __restrict__ log_f, S* __restrict__ one_minus_f,
                                       const S* __restrict__ x,              // [n]
                                       const compute_t<S>* __restrict__ lb,  // [D] or null
                                       I n, I D) {
  using C = compute_t<S>;
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < n; i += I(gridDim.x) * blockDim.x) {
    const C xi = value_cast<C>(x[i]), b = lb ? lb[i % D] : C(0);
    log_f[i] =
        value_cast<S>(b != C(0) ? log(b + (C(1) - b) * sigmoid_dev(xi)) : log_sigmoid_dev(xi));
    one_minus_f[i] = value_cast<S>((C(1) - b) * sigmoid_dev(-xi));
  }
}

template <class S, class I>
__global__ void forget_gate_bwd_kernel(S* __restrict__ dx,                    // [n]
                                       compute_t<S>* __restrict__ dlb_terms,  // [n] or null
                                       const S* __restrict__ x,               // [n]
                                       const compute_t<S>* __restrict__ lb,   // [D] or null
                                       const S* __restrict__ dlog_f,          // [n] or null
                                       const S* __restrict__ d_one_minus_f,   // [n] or null
                                       I n, I D) {
  using C = compute_t<S>;
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < n; i += I(gridDim.x) * blockDim.x) {
    const C xi = value_cast<C>(x[i]), b = lb ? lb[i % D] : C(0);
    const C gl = dlog_f ? value_cast<C>(dlog_f[i]) : C(0);
    const C go = d_one_minus_f ? value_cast<C>(d_one_minus_f[i]) : C(0);
    const C s = sigmoid_dev(xi), f = b + (C(1) - b) * s;
    const C ratio = b != C(0) ? b / f : C(0);
    dx[i] = value_cast<S>(gl * (C(1) - s) * (C(1) - ratio) - go * (C(1) - b) * s * (C(1) - s));
    if (dlb_terms) dlb_terms[i] = (gl / f - go) * (C(1) - s);
  }
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

// A gradient of one output: contiguous in x's dtype and shape, or undefined.
Tensor grad_of(const Tensor& g, const Tensor& x, const char* op) {
  if (!g.defined()) return Tensor();
  require_cuda(g, op, "gradient");
  check_shape(g, x.shape(), op, "gradient");
  check_same_dtype(x, g, op);
  return contiguous(g);
}

DType compute_dtype_of(DType d) {
  return d == DType::f64 ? DType::f64 : DType::f32;
}

}  // namespace

void forget_gate(const Tensor& x_in, const Tensor& lb_in, Tensor* log_f, Tensor* one_minus_f) {
  const char* op = "forget_gate";
  require_cuda(x_in, op, "x");
  if (x_in.dim() < 1) throw Error(op, "gate logits x [..., D]", to_string(x_in.shape()));
  const Tensor x = contiguous(x_in);
  const Tensor lb = bound_of(x, lb_in, compute_dtype_of(x.dtype()), op);
  visit_cuda_storage(x.dtype(), op, [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    using C = compute_t<S>;
    Tensor lf = cuda_empty(x.shape(), x.dtype()), om = cuda_empty(x.shape(), x.dtype());
    const int64_t n = x.numel(), D = x.size(x.dim() - 1);
    if (n > 0) {
      const C* bound = lb.defined() ? lb.data<C>() : nullptr;
      if (n < (int64_t(1) << 31))
        forget_gate_fwd_kernel<S, uint32_t><<<grid_for(n), kThreads, 0, stream()>>>(
            lf.data<S>(), om.data<S>(), x.data<S>(), bound, uint32_t(n), uint32_t(D));
      else
        forget_gate_fwd_kernel<S, int64_t><<<grid_for(n), kThreads, 0, stream()>>>(
            lf.data<S>(), om.data<S>(), x.data<S>(), bound, n, D);
      CUDA_CHECK(cudaGetLastError());
    }
    *log_f = lf;
    *one_minus_f = om;
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
  const Tensor gl = grad_of(dlog_f_in, x, op), go = grad_of(d_one_minus_f_in, x, op);
  visit_cuda_storage(x.dtype(), op, [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    using C = compute_t<S>;
    Tensor dxt = cuda_empty(x.shape(), x.dtype());
    const bool want_dlb = dlb && lb.defined();
    Tensor terms = want_dlb ? cuda_empty(x.shape(), compute) : Tensor();
    const int64_t n = x.numel(), D = x.size(x.dim() - 1);
    if (n > 0) {
      C* term_out = want_dlb ? terms.data<C>() : nullptr;
      const C* bound = lb.defined() ? lb.data<C>() : nullptr;
      const S* g_log = gl.defined() ? gl.data<S>() : nullptr;
      const S* g_omf = go.defined() ? go.data<S>() : nullptr;
      if (n < (int64_t(1) << 31))
        forget_gate_bwd_kernel<S, uint32_t><<<grid_for(n), kThreads, 0, stream()>>>(
            dxt.data<S>(), term_out, x.data<S>(), bound, g_log, g_omf, uint32_t(n), uint32_t(D));
      else
        forget_gate_bwd_kernel<S, int64_t><<<grid_for(n), kThreads, 0, stream()>>>(
            dxt.data<S>(), term_out, x.data<S>(), bound, g_log, g_omf, n, D);
      CUDA_CHECK(cudaGetLastError());
    }
    if (dx) *dx = dxt;
    if (!want_dlb) return;
    std::vector<int64_t> leading(x.dim() - 1);
    std::iota(leading.begin(), leading.end(), int64_t(0));
    const Tensor summed = leading.empty() ? terms : sum(terms, leading, false);
    *dlb = summed.to(lb_in.dtype());
  });
}

}  // namespace hla::cuda
