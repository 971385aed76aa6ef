// GLA's log decay on CUDA (kernels/ops.h, ops::gla_gate): g = max(logsigmoid(x) / normalizer,
// floor), and from g alone dx = dg (-expm1(normalizer g)) / normalizer (= dg sigmoid(-x) /
// normalizer) where g is above the floor as g's dtype stores it, 0 where clamped. One
// elementwise kernel each way; dtypes f32, f64, bf16 (computed in compute_t, each output rounded
// once).
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

// stored_floor: the floor rounded to S, as a clamped g holds it.
template <class S>
__global__ void gla_gate_bwd_kernel(S* __restrict__ dx, const S* __restrict__ g,
                                    const S* __restrict__ dg, int64_t n, compute_t<S> normalizer,
                                    compute_t<S> stored_floor) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const C gi = value_cast<C>(g[i]);
    dx[i] = value_cast<S>(gi > stored_floor ? value_cast<C>(dg[i]) * -expm1(normalizer * gi) / normalizer
                                            : C(0));
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

Tensor gla_gate_backward(const Tensor& g_in, const Tensor& dg_in, double normalizer, double floor) {
  require_cuda(g_in, "gla_gate_backward", "g");
  require_cuda(dg_in, "gla_gate_backward", "dg");
  check_shape(dg_in, g_in.shape(), "gla_gate_backward", "dg");
  check_same_dtype(g_in, dg_in, "gla_gate_backward");
  const Tensor g = contiguous(g_in), dg = contiguous(dg_in);
  return visit_cuda_storage(g.dtype(), "gla_gate_backward", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    using C = compute_t<S>;
    Tensor dx = cuda_empty(g.shape(), g.dtype());
    const int64_t n = g.numel();
    if (n == 0) return dx;
    const C stored_floor = value_cast<C>(value_cast<S>(static_cast<C>(floor)));
    gla_gate_bwd_kernel<S>
        <<<grid_for(n), kThreads, 0, stream()>>>(dx.data<S>(), g.data<S>(), dg.data<S>(), n,
                                                 static_cast<C>(normalizer), stored_floor);
    CUDA_CHECK(cudaGetLastError());
    return dx;
  });
}

}  // namespace hla::cuda
