// GLA's log decay on CUDA (kernels/ops.h, ops::gla_gate): g = max(logsigmoid(x) / normalizer,
// floor), and from g alone dx = dg (-expm1(normalizer g)) / normalizer (= dg sigmoid(-x) /
// normalizer) where g is above the floor as g's dtype stores it, 0 where clamped. One
// elementwise kernel each way, on 16-byte packs when aligned (the tail an element a thread);
// dtypes f32, f64, bf16 (computed in compute_t, each output rounded once), and bf16 x with an
// f32 g (the mixed-precision models' gates: computed in float, g never rounded to bf16).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace hla::cuda {

namespace {

// One element each way (the scalar and pack kernels compute through these, bit for bit alike),
// S the storage of g: a bf16 g (rounded to 8 significant bits) takes e^-|x| from the
// multifunction unit.
template <class S>
__device__ inline compute_t<S> gate_value(compute_t<S> x, compute_t<S> normalizer,
                                          compute_t<S> floor) {
  const compute_t<S> v = log_sigmoid_of<S>(x) / normalizer;
  return v > floor ? v : floor;
}
template <class S>
__device__ inline compute_t<S> gate_grad(compute_t<S> g, compute_t<S> dg, compute_t<S> normalizer,
                                         compute_t<S> stored_floor) {
  using C = compute_t<S>;
  return g > stored_floor ? dg * -expm1(normalizer * g) / normalizer : C(0);
}

// X: the storage of x and dx, G: of g and dg (X, or f32 for bf16 X), computed in compute_t<G>.
template <class X, class G>
__global__ void gla_gate_fwd_kernel(G* __restrict__ g, const X* __restrict__ x, int64_t n,
                                    compute_t<G> normalizer, compute_t<G> floor) {
  using C = compute_t<G>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    g[i] = value_cast<G>(gate_value<G>(value_cast<C>(x[i]), normalizer, floor));
}

// stored_floor: the floor rounded to G, as a clamped g holds it.
template <class X, class G>
__global__ void gla_gate_bwd_kernel(X* __restrict__ dx, const G* __restrict__ g,
                                    const G* __restrict__ dg, int64_t n, compute_t<G> normalizer,
                                    compute_t<G> stored_floor) {
  using C = compute_t<G>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = value_cast<X>(
        gate_grad<G>(value_cast<C>(g[i]), value_cast<C>(dg[i]), normalizer, stored_floor));
}

// The same over n_packs 16-byte packs (Pack<S>) when x and g share S; the scalar kernels take
// the tail.
template <class S>
__global__ void gla_gate_fwd_pack_kernel(Pack<S>* __restrict__ g, const Pack<S>* __restrict__ x,
                                         int64_t n_packs, compute_t<S> normalizer,
                                         compute_t<S> floor) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n_packs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Pack<S> px = x[i];
    Pack<S> pg;
#pragma unroll
    for (int k = 0; k < Pack<S>::kSize; ++k)
      pg.v[k] = value_cast<S>(gate_value<S>(value_cast<C>(px.v[k]), normalizer, floor));
    g[i] = pg;
  }
}
template <class S>
__global__ void gla_gate_bwd_pack_kernel(Pack<S>* __restrict__ dx, const Pack<S>* __restrict__ g,
                                         const Pack<S>* __restrict__ dg, int64_t n_packs,
                                         compute_t<S> normalizer, compute_t<S> stored_floor) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n_packs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Pack<S> pg = g[i], pd = dg[i];
    Pack<S> px;
#pragma unroll
    for (int k = 0; k < Pack<S>::kSize; ++k)
      px.v[k] = value_cast<S>(gate_grad<S>(value_cast<C>(pg.v[k]), value_cast<C>(pd.v[k]),
                                           normalizer, stored_floor));
    dx[i] = px;
  }
}

}  // namespace

Tensor gla_gate(const Tensor& x_in, double normalizer, double floor, DType out) {
  require_cuda(x_in, "gla_gate", "x");
  const Tensor x = contiguous(x_in);
  const int64_t n = x.numel();
  if (out != x.dtype()) {  // bf16 x, f32 g (ops::gla_gate checked the pair)
    Tensor g = cuda_empty(x.shape(), out);
    if (n > 0)
      gla_gate_fwd_kernel<bf16_dev, float><<<grid_for(n), kThreads, 0, stream()>>>(
          g.data<float>(), x.data<bf16_dev>(), n, static_cast<float>(normalizer),
          static_cast<float>(floor));
    CUDA_CHECK(cudaGetLastError());
    return g;
  }
  return visit_cuda_storage(x.dtype(), "gla_gate", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    using C = compute_t<S>;
    Tensor g = cuda_empty(x.shape(), x.dtype());
    const int64_t done = packed_elements<S>(n, {&x, &g});
    if (n == 0) return g;
    constexpr int P = Pack<S>::kSize;
    if (done > 0)
      gla_gate_fwd_pack_kernel<S><<<grid_for(done / P), kThreads, 0, stream()>>>(
          packs<S>(g), packs<S>(x), done / P, static_cast<C>(normalizer), static_cast<C>(floor));
    if (done < n)
      gla_gate_fwd_kernel<S, S><<<grid_for(n - done), kThreads, 0, stream()>>>(
          g.data<S>() + done, x.data<S>() + done, n - done, static_cast<C>(normalizer),
          static_cast<C>(floor));
    CUDA_CHECK(cudaGetLastError());
    return g;
  });
}

Tensor gla_gate_backward(const Tensor& g_in, const Tensor& dg_in, double normalizer, double floor,
                         DType dx_dtype) {
  require_cuda(g_in, "gla_gate_backward", "g");
  require_cuda(dg_in, "gla_gate_backward", "dg");
  check_shape(dg_in, g_in.shape(), "gla_gate_backward", "dg");
  check_same_dtype(g_in, dg_in, "gla_gate_backward");
  const Tensor g = contiguous(g_in), dg = contiguous(dg_in);
  const int64_t n = g.numel();
  if (dx_dtype != g.dtype()) {  // f32 g, bf16 dx (ops::gla_gate_backward checked the pair)
    Tensor dx = cuda_empty(g.shape(), dx_dtype);
    if (n > 0)
      gla_gate_bwd_kernel<bf16_dev, float><<<grid_for(n), kThreads, 0, stream()>>>(
          dx.data<bf16_dev>(), g.data<float>(), dg.data<float>(), n,
          static_cast<float>(normalizer), static_cast<float>(floor));
    CUDA_CHECK(cudaGetLastError());
    return dx;
  }
  return visit_cuda_storage(g.dtype(), "gla_gate_backward", [&](auto tag_) {
    using S = typename decltype(tag_)::type;
    using C = compute_t<S>;
    Tensor dx = cuda_empty(g.shape(), g.dtype());
    const int64_t done = packed_elements<S>(n, {&g, &dg, &dx});
    if (n == 0) return dx;
    const C stored_floor = value_cast<C>(value_cast<S>(static_cast<C>(floor)));
    constexpr int P = Pack<S>::kSize;
    if (done > 0)
      gla_gate_bwd_pack_kernel<S><<<grid_for(done / P), kThreads, 0, stream()>>>(
          packs<S>(dx), packs<S>(g), packs<S>(dg), done / P, static_cast<C>(normalizer),
          stored_floor);
    if (done < n)
      gla_gate_bwd_kernel<S, S><<<grid_for(n - done), kThreads, 0, stream()>>>(
          dx.data<S>() + done, g.data<S>() + done, dg.data<S>() + done, n - done,
          static_cast<C>(normalizer), stored_floor);
    CUDA_CHECK(cudaGetLastError());
    return dx;
  });
}

}  // namespace hla::cuda
