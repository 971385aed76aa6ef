// GLA's log decay on CUDA (kernels/ops.h, ops::gla_gate): g = max(logsigmoid(x) / normalizer,
// floor), dx = dg sigmoid(-x) / normalizer where unclamped, 0 where clamped. One elementwise
// kernel each way; dtypes f32, f64, bf16 (computed in compute_t, each output rounded once).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

template <class S>
__global__ void gla_gate_fwd_kernel(S* __restrict__ g, const S* __restrict__ x, int64_t n,
                                    compute_t<S> normalizer, compute_t<S> floor) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const C v = log_sigmoid_dev(value_cast<C>(x[i])) / normalizer;
    g[i] = value_cast<S>(v > floor ? v : floor);
  }
}

template <class S>
__global__ void gla_gate_bwd_kernel(S* __restrict__ dx, const S* __restrict__ x,
                                    const S* __restrict__ dg, int64_t n, compute_t<S> normalizer,
                                    compute_t<S> floor) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const C xi = value_cast<C>(x[i]), v = log_sigmoid_dev(xi) / normalizer;
    dx[i] = value_cast<S>(v > floor ? value_cast<C>(dg[i]) * sigmoid_dev(-xi) / normalizer : C(0));
  }
}

}  // namespace

Tensor gla_gate(const Tensor& x_in, double normalizer, double floor) {
  require_cuda(x_in, "gla_gate", "x");
  const Tensor x = contiguous(x_in);
  return visit_cuda_storage(x.dtype(), "gla_gate", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    using C = compute_t<S>;
    Tensor g = cuda_empty(x.shape(), x.dtype());
    const int64_t n = x.numel();
    if (n == 0) return g;
    gla_gate_fwd_kernel<S><<<grid_for(n), kThreads, 0, stream()>>>(
        g.data<S>(), x.data<S>(), n, static_cast<C>(normalizer), static_cast<C>(floor));
    CUDA_CHECK(cudaGetLastError());
    return g;
  });
}

Tensor gla_gate_backward(const Tensor& x_in, const Tensor& dg_in, double normalizer, double floor) {
  require_cuda(x_in, "gla_gate_backward", "x");
  require_cuda(dg_in, "gla_gate_backward", "dg");
  check_shape(dg_in, x_in.shape(), "gla_gate_backward", "dg");
  check_same_dtype(x_in, dg_in, "gla_gate_backward");
  const Tensor x = contiguous(x_in), dg = contiguous(dg_in);
  return visit_cuda_storage(x.dtype(), "gla_gate_backward", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    using C = compute_t<S>;
    Tensor dx = cuda_empty(x.shape(), x.dtype());
    const int64_t n = x.numel();
    if (n == 0) return dx;
    gla_gate_bwd_kernel<S>
        <<<grid_for(n), kThreads, 0, stream()>>>(dx.data<S>(), x.data<S>(), dg.data<S>(), n,
                                                 static_cast<C>(normalizer), static_cast<C>(floor));
    CUDA_CHECK(cudaGetLastError());
    return dx;
  });
}

}  // namespace hla::cuda
