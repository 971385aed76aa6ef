// hgrn: the elementwise gated recurrence h_t = exp(g_t) * h_{t-1} + x_t as a Function node over
// the kernel tiers of kernels/recurrence.h. Inputs: x, g, [h0]; outputs: o, hT.
// Shapes: x, g, o [B,T,D]; h0, hT [B,D]. Inputs on the CPU run the CPU tiers; inputs on cuda run
// the GPU tiers of kernels/cuda/recurrence_cuda.h (recurrent and chunked scan; Impl::Auto picks
// the chunked scan for T > kChunk), with the same structs filled with device pointers. bf16
// inputs (CUDA) run the bf16 kernels of the same tier (cuda::hgrn_*_bf16): x, g, o and their
// gradients in bf16, read and written as they are; h0, hT and their gradients in f32 inside the
// kernels (the Var outputs and gradients come back in bf16, the inputs' dtype).
// On cuda the node keeps o for the backward, which reads h_{t-1} from it (the one-pass chunk
// backward: 5 sequence-sized transfers instead of ~8, no recompute from x); o is the storage the
// next op reads anyway, so it costs memory only where nothing else keeps it.
#include <utility>
#include <vector>

#include "autograd/functions/recurrence_common.h"
#include "autograd/node.h"
#include "tensor/dtype_dispatch.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/recurrence_cuda.h"
#endif

namespace hla {

namespace {

struct HgrnCall {
  Impl impl;  // resolved
  bool has_h0;
  kernels::HgrnDims d;
  bool bf16 = false;  // the bf16 kernels (bf16 inputs on CUDA)
};

template <class S>
kernels::HgrnArgs<S> make_args(const HgrnCall& c, const std::vector<Tensor>& in) {
  kernels::HgrnArgs<S> a;
  a.d = c.d;
  a.x = in[0].data<S>();
  a.g = in[1].data<S>();
  if (c.has_h0) a.h0 = in[2].data<S>();
  return a;
}

// The dtype the f32 / f64 kernels run in: f64 for the reference tier, else the inputs' (bf16
// inputs take the bf16 kernels instead).
DType compute_dtype(const HgrnCall& c, DType in) {
  return detail::compute_dtype(in, c.impl == Impl::Reference);
}

template <class S>
void forward_tier(const HgrnCall& c, Device dev, const kernels::HgrnArgs<S>& a,
                  const kernels::HgrnOut<S>& out) {
#ifdef HLA_WITH_CUDA
  if (dev == Device::CUDA) {
    if (c.impl == Impl::Chunk) return cuda::hgrn_chunk_forward<S>(a, out);
    return cuda::hgrn_recurrent_forward<S>(a, out);
  }
#endif
  HLA_CHECK(dev == Device::CPU, "hgrn: no kernels for device " << device_name(dev));
  if constexpr (std::is_same_v<S, double>) {
    if (c.impl == Impl::Reference) return kernels::hgrn_reference_forward(a, out);
  }
  if (c.impl == Impl::Chunk) return kernels::hgrn_chunk_forward<S>(a, out);
  kernels::hgrn_recurrent_forward<S>(a, out);
}

template <class S>
void backward_tier(const HgrnCall& c, Device dev, const kernels::HgrnArgs<S>& a,
                   const kernels::HgrnGrad<S>& g) {
#ifdef HLA_WITH_CUDA
  if (dev == Device::CUDA) {
    if (c.impl == Impl::Chunk) return cuda::hgrn_chunk_backward<S>(a, g);
    return cuda::hgrn_recurrent_backward<S>(a, g);
  }
#endif
  HLA_CHECK(dev == Device::CPU, "hgrn: no kernels for device " << device_name(dev));
  if constexpr (std::is_same_v<S, double>) {
    if (c.impl == Impl::Reference) return kernels::hgrn_reference_backward(a, g);
  }
  if (c.impl == Impl::Chunk) return kernels::hgrn_chunk_backward<S>(a, g);
  kernels::hgrn_recurrent_backward<S>(a, g);
}

#ifdef HLA_WITH_CUDA
// The bf16 kernels' inputs: x, g contiguous bf16; h0 contiguous f32.
std::vector<Tensor> bf16_inputs(const std::vector<Var>& vars) {
  std::vector<Tensor> in;
  for (size_t i = 0; i < vars.size(); ++i)
    in.push_back(detail::contiguous_as(vars[i], i < 2 ? DType::bf16 : DType::f32));
  return in;
}

cuda::HgrnBf16Args bf16_args(const HgrnCall& c, const std::vector<Tensor>& in) {
  cuda::HgrnBf16Args a;
  a.d = c.d;
  a.x = in[0].data<bf16>();
  a.g = in[1].data<bf16>();
  if (c.has_h0) a.h0 = in[2].data<float>();
  return a;
}

// o [B,T,D] bf16 and hT [B,D] f32 from the bf16 kernels.
std::pair<Tensor, Tensor> bf16_forward(const HgrnCall& c, const std::vector<Var>& vars) {
  const std::vector<Tensor> in = bf16_inputs(vars);
  Tensor o = Tensor::empty({c.d.B, c.d.T, c.d.D}, DType::bf16, Device::CUDA);
  Tensor hT = Tensor::empty({c.d.B, c.d.D}, DType::f32, Device::CUDA);
  const cuda::HgrnBf16Out out{o.data<bf16>(), hT.data<float>()};
  if (c.impl == Impl::Chunk)
    cuda::hgrn_chunk_forward_bf16(bf16_args(c, in), out);
  else
    cuda::hgrn_recurrent_forward_bf16(bf16_args(c, in), out);
  return {o, hT};
}

// Gradients of x, g, [h0] from the bf16 kernels, in bf16 like the inputs.
std::vector<Tensor> bf16_backward(const HgrnCall& c, const std::vector<Var>& inputs,
                                  const Tensor& o, const std::vector<Tensor>& gout) {
  const std::vector<Tensor> in = bf16_inputs(inputs);
  const Tensor dout = gout[0].defined()
                          ? gout[0].to(DType::bf16).contiguous()
                          : Tensor::zeros({c.d.B, c.d.T, c.d.D}, DType::bf16, Device::CUDA);
  const Tensor dhT = gout[1].defined() ? gout[1].to(DType::f32).contiguous() : Tensor();
  std::vector<Tensor> grads;
  for (size_t i = 0; i < inputs.size(); ++i)
    grads.push_back(
        Tensor::empty(inputs[i].shape(), i < 2 ? DType::bf16 : DType::f32, Device::CUDA));
  cuda::HgrnBf16Grad g;
  g.o = o.data<bf16>();
  g.dout = dout.data<bf16>();
  g.dhT = detail::ptr<float>(dhT);
  g.dx = grads[0].data<bf16>();
  g.dg = grads[1].data<bf16>();
  if (c.has_h0) g.dh0 = grads[2].data<float>();
  if (c.impl == Impl::Chunk)
    cuda::hgrn_chunk_backward_bf16(bf16_args(c, in), g);
  else
    cuda::hgrn_recurrent_backward_bf16(bf16_args(c, in), g);
  return detail::grads_as(std::move(grads), DType::bf16);
}
#endif

struct HgrnNode : Node {
  HgrnCall call;
  Tensor o;  // on CUDA: the forward's output in the kernels' dtype (the backward reads h_{t-1})
  const char* name() const override { return "hgrn"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& gout) override {
#ifdef HLA_WITH_CUDA
    if (call.bf16) return bf16_backward(call, inputs, o, gout);
#endif
    const DType in_dt = inputs[0].dtype(), dt = compute_dtype(call, in_dt);
    const Device dev = inputs[0].device();
    detail::BackwardStage st = detail::stage_backward(inputs, gout, dt, inputs[0].shape());
    visit_floating(dt, "hgrn", [&]<class S>() {
      kernels::HgrnGrad<S> g;
      g.o = detail::ptr<S>(o);
      g.dout = st.dout.data<S>();
      g.dhT = detail::ptr<S>(st.dhT);
      g.dx = st.grads[0].data<S>();
      g.dg = st.grads[1].data<S>();
      if (call.has_h0) g.dh0 = st.grads[2].data<S>();
      backward_tier<S>(call, dev, make_args<S>(call, st.in), g);
    });
    return detail::grads_as(std::move(st.grads), in_dt);
  }
};

}  // namespace

RecurrenceResult hgrn(const Var& x, const Var& g, const Var& h0, Impl impl) {
  const char* op = "hgrn";
  if (!x.defined()) throw Error(op, "an input x [B,T,D]", "none");
  check_rank(x.data(), 3, op, "x", "[B,T,D]");
  const DType in_dt = x.dtype();
  const Device dev = x.device();  // every input lives where x does
  detail::check_input(x, x.shape(), op, "x", "[B,T,D]", in_dt, dev);
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2);
  detail::check_input(g, {B, T, D}, op, "g", "[B,T,D]", in_dt, dev);
  if (h0.defined()) detail::check_input(h0, {B, D}, op, "h0", "[B,D]", in_dt, dev);
  if (dev != Device::CPU && impl == Impl::Reference)
    throw Error(op, "Impl::Auto, Impl::Recurrent or Impl::Chunk for cuda tensors",
                "Impl::reference",
                "the reference tier runs on the CPU only: move the inputs with .to(Device::CPU)");
  HgrnCall c{detail::resolve_impl(impl, T), h0.defined(), {B, T, D}};
  c.bf16 = dev == Device::CUDA && in_dt == DType::bf16;
  std::vector<Var> vars{x, g};
  if (c.has_h0) vars.push_back(h0);
  auto node = std::make_shared<HgrnNode>();
  node->call = c;
#ifdef HLA_WITH_CUDA
  if (c.bf16) {
    const auto [o, hT] = bf16_forward(c, vars);
    node->o = o;
    auto out = record(node, vars, {o, hT.to(in_dt)});
    return {out[0], out[1]};
  }
#endif
  const DType dt = compute_dtype(c, in_dt);
  std::vector<Tensor> in;
  for (const Var& v : vars) in.push_back(detail::contiguous_as(v, dt));
  Tensor o = Tensor::empty({B, T, D}, dt, dev), hT = Tensor::empty({B, D}, dt, dev);
  visit_floating(dt, op, [&]<class S>() {
    forward_tier<S>(c, dev, make_args<S>(c, in), {o.data<S>(), hT.data<S>()});
  });
  if (dev == Device::CUDA) node->o = o;
  auto out = record(node, vars, {o.to(in_dt), hT.to(in_dt)});
  return {out[0], out[1]};
}

}  // namespace hla
