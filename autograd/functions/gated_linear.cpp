// gla, simple_gla and retention: the gated linear family as one Function node over the kernel
// tiers of kernels/recurrence.h (reference, recurrent, chunk) on the CPU and of
// kernels/cuda/recurrence_cuda.h (recurrent, chunk) on CUDA, picked by the inputs' device.
//   S_t = diag(alpha_t) S_{t-1} + k_t v_t^T,  o_t = S_t^T (scale q_t)
// Inputs in order: q, k, v, [g], [h0]; outputs: o, hT. The gate may be f32 beside bf16 q, k, v
// (the mixed-precision models' gates); its gradient keeps its dtype. bf16 inputs (CUDA) of the
// chunked tier with T > 64 and head sizes K, V in {64, 128} run the tensor-core kernels
// (cuda::gated_linear_mma_*: bf16 q, k, v, o and their gradients, f32 gates and states); other
// bf16 inputs run the f32 kernels on f32 copies (recurrence_common.h). GLA's tensor-core forward
// keeps its chunks' scores A (bf16, 8 KiB a chunk of 64 steps) in the node for the backward.
#include "autograd/functions/recurrence_common.h"
#include "autograd/node.h"
#include "tensor/dtype_dispatch.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/recurrence_cuda.h"
#endif

namespace hla {

using kernels::GateKind;

namespace {

struct GatedLinearCall {
  GateKind gate;
  Impl impl;  // resolved
  Device device;
  double scale;
  bool has_gate, has_h0;
  kernels::RecDims d;
  bool mma = false;  // the bf16 tensor-core kernels (use_mma)
};

// make_args fills the structs with the pointers of `in`: host or device ones, like the tensors.
template <class S>
kernels::GatedLinearArgs<S> make_args(const GatedLinearCall& c, const std::vector<Tensor>& in) {
  kernels::GatedLinearArgs<S> a;
  a.d = c.d;
  a.gate = c.gate;
  a.q = in[0].data<S>();
  a.k = in[1].data<S>();
  a.v = in[2].data<S>();
  size_t i = 3;
  if (c.has_gate) a.g = in[i++].data<S>();
  if (c.has_h0) a.h0 = in[i].data<S>();
  a.scale = c.scale;
  return a;
}

template <class S>
void forward_tier(const GatedLinearCall& c, const kernels::GatedLinearArgs<S>& a,
                  const kernels::GatedLinearOut<S>& o) {
#ifdef HLA_WITH_CUDA
  if (c.device == Device::CUDA) {
    if (c.impl == Impl::Chunk) return cuda::gated_linear_chunk_forward<S>(a, o);
    return cuda::gated_linear_recurrent_forward<S>(a, o);
  }
#endif
  if constexpr (std::is_same_v<S, double>) {
    if (c.impl == Impl::Reference) return kernels::gated_linear_reference_forward(a, o);
  }
  if (c.impl == Impl::Chunk) return kernels::gated_linear_chunk_forward<S>(a, o);
  kernels::gated_linear_recurrent_forward<S>(a, o);
}

template <class S>
void backward_tier(const GatedLinearCall& c, const kernels::GatedLinearArgs<S>& a,
                   const kernels::GatedLinearGrad<S>& g) {
#ifdef HLA_WITH_CUDA
  if (c.device == Device::CUDA) {
    if (c.impl == Impl::Chunk) return cuda::gated_linear_chunk_backward<S>(a, g);
    return cuda::gated_linear_recurrent_backward<S>(a, g);
  }
#endif
  if constexpr (std::is_same_v<S, double>) {
    if (c.impl == Impl::Reference) return kernels::gated_linear_reference_backward(a, g);
  }
  if (c.impl == Impl::Chunk) return kernels::gated_linear_chunk_backward<S>(a, g);
  kernels::gated_linear_recurrent_backward<S>(a, g);
}

// The dtype the kernels run in: f64 for the reference tier, f32 for bf16 inputs.
DType compute_dtype(const GatedLinearCall& c, DType in) {
  return detail::compute_dtype(in, c.impl == Impl::Reference);
}

// Whether a call takes the bf16 tensor-core kernels: bf16 CUDA inputs, the chunked tier past
// one chunk, supported head sizes.
bool use_mma(const GatedLinearCall& c, DType in) {
#ifdef HLA_WITH_CUDA
  return c.device == Device::CUDA && in == DType::bf16 && c.impl == Impl::Chunk &&
         c.d.T > kernels::kChunk && cuda::gated_linear_mma_supports(c.d.K, c.d.V);
#else
  (void)c;
  (void)in;
  return false;
#endif
}

#ifdef HLA_WITH_CUDA
// The tensor-core kernels' inputs: q, k, v contiguous bf16; the gate and h0 contiguous f32.
std::vector<Tensor> mma_inputs(const std::vector<Var>& vars) {
  std::vector<Tensor> in;
  for (size_t i = 0; i < vars.size(); ++i)
    in.push_back(detail::contiguous_as(vars[i], i < 3 ? DType::bf16 : DType::f32));
  return in;
}

cuda::GatedLinearBf16Args mma_args(const GatedLinearCall& c, const std::vector<Tensor>& in) {
  cuda::GatedLinearBf16Args a;
  a.d = c.d;
  a.gate = c.gate;
  a.q = in[0].data<bf16>();
  a.k = in[1].data<bf16>();
  a.v = in[2].data<bf16>();
  size_t i = 3;
  if (c.has_gate) a.g = in[i++].data<float>();
  if (c.has_h0) a.h0 = in[i].data<float>();
  a.scale = c.scale;
  return a;
}

// Gradients of q, k, v, [g], [h0] from the tensor-core backward, in bf16 like the inputs;
// `scores` the forward's, or undefined.
std::vector<Tensor> mma_backward(const GatedLinearCall& c, const std::vector<Var>& inputs,
                                 const std::vector<Tensor>& gout, const Tensor& scores) {
  const auto& d = c.d;
  const std::vector<Tensor> in = mma_inputs(inputs);
  const Tensor dout = gout[0].defined()
                          ? gout[0].to(DType::bf16).contiguous()
                          : Tensor::zeros({d.B, d.T, d.H, d.V}, DType::bf16, Device::CUDA);
  const Tensor dhT = gout[1].defined() ? gout[1].to(DType::f32).contiguous() : Tensor();
  std::vector<Tensor> grads;
  for (size_t i = 0; i < inputs.size(); ++i)
    grads.push_back(
        Tensor::empty(inputs[i].shape(), i < 3 ? DType::bf16 : DType::f32, Device::CUDA));
  cuda::GatedLinearBf16Grad g;
  g.dout = dout.data<bf16>();
  g.dhT = detail::ptr<float>(dhT);
  g.dq = grads[0].data<bf16>();
  g.dk = grads[1].data<bf16>();
  g.dv = grads[2].data<bf16>();
  if (c.has_gate) g.dg = grads[3].data<float>();
  if (c.has_h0) g.dh0 = grads.back().data<float>();
  g.scores = detail::ptr<bf16>(scores);
  cuda::gated_linear_mma_backward(mma_args(c, in), g);
  return detail::grads_like(std::move(grads), inputs);
}
#endif

struct GatedLinearNode : Node {
  GatedLinearCall call;
  Tensor scores;  // the tensor-core forward's A (PerKey), or undefined
  const char* name() const override {
    switch (call.gate) {
      case GateKind::PerKey: return "gla";
      case GateKind::ScalarPerHead: return "simple_gla";
      case GateKind::FixedPerHead: return "retention";
      case GateKind::None: return "linear_attention";
    }
    return "gated_linear";
  }
  std::vector<Tensor> backward(const std::vector<Tensor>& gout) override {
#ifdef HLA_WITH_CUDA
    if (call.mma) return mma_backward(call, inputs, gout, scores);
#endif
    const DType in_dt = inputs[0].dtype(), dt = compute_dtype(call, in_dt);
    const auto& d = call.d;
    detail::BackwardStage st = detail::stage_backward(inputs, gout, dt, {d.B, d.T, d.H, d.V});
    visit_floating(dt, name(), [&]<class S>() {
      kernels::GatedLinearGrad<S> g;
      g.dout = st.dout.data<S>();
      g.dhT = detail::ptr<S>(st.dhT);
      g.dq = st.grads[0].data<S>();
      g.dk = st.grads[1].data<S>();
      g.dv = st.grads[2].data<S>();
      if (call.has_gate) g.dg = st.grads[3].data<S>();
      if (call.has_h0) g.dh0 = st.grads.back().data<S>();
      backward_tier<S>(call, make_args<S>(call, st.in), g);
    });
    return detail::grads_like(std::move(st.grads), inputs);
  }
};

RecurrenceResult run(GateKind gate, const char* op, const Var& q, const Var& k, const Var& v,
                     const Var& g, const Var& h0, const RecurrenceOptions& opt) {
  if (!q.defined()) throw Error(op, "an input q [B,T,H,K]", "none");
  check_rank(q.data(), 4, op, "q", "[B,T,H,K]");
  const DType in_dt = q.dtype();
  const Device dev = q.device();
  detail::check_input(q, q.shape(), op, "q", "[B,T,H,K]", in_dt, dev);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3);
  check_rank(v.data(), 4, op, "v", "[B,T,H,V]");
  const int64_t V = v.size(3);
  detail::check_input(k, {B, T, H, K}, op, "k", "[B,T,H,K]", in_dt, dev);
  detail::check_input(v, {B, T, H, V}, op, "v", "[B,T,H,V]", in_dt, dev);
  const DType g_dt = detail::gate_dtype_for(g, in_dt);
  if (gate == GateKind::PerKey)
    detail::check_input(g, {B, T, H, K}, op, "gk", "[B,T,H,K]", g_dt, dev);
  if (gate == GateKind::ScalarPerHead)
    detail::check_input(g, {B, T, H}, op, "g", "[B,T,H]", g_dt, dev);
  if (h0.defined()) detail::check_input(h0, {B, H, K, V}, op, "h0", "[B,H,K,V]", in_dt, dev);
  if (dev == Device::CUDA && opt.impl == Impl::Reference)
    throw Error(op, "Impl::Auto, Impl::Recurrent or Impl::Chunk for cuda tensors",
                "Impl::reference",
                "the reference tier runs on the CPU only: move the inputs with .to(Device::CPU)");

  GatedLinearCall c{gate, detail::resolve_impl(opt.impl, T), dev,
                    detail::resolve_scale(opt.scale, K), g.defined(), h0.defined(),
                    {B, T, H, K, V}};
  c.mma = use_mma(c, in_dt);
  std::vector<Var> vars{q, k, v};
  if (c.has_gate) vars.push_back(g);
  if (c.has_h0) vars.push_back(h0);
  auto node = std::make_shared<GatedLinearNode>();
  node->call = c;
#ifdef HLA_WITH_CUDA
  if (c.mma) {
    const std::vector<Tensor> in = mma_inputs(vars);
    Tensor o = Tensor::empty({B, T, H, V}, DType::bf16, dev);
    Tensor hT = Tensor::empty({B, H, K, V}, DType::f32, dev);
    if (gate == GateKind::PerKey && should_record(vars))  // kept only for a backward
      node->scores = Tensor::empty({cuda::gated_linear_mma_scores_numel(c.d)}, DType::bf16, dev);
    cuda::gated_linear_mma_forward(mma_args(c, in), {o.data<bf16>(), hT.data<float>(),
                                                     detail::mut_ptr<bf16>(node->scores)});
    auto out = record(node, vars, {o, hT.to(in_dt)});
    return {out[0], out[1]};
  }
#endif
  const DType dt = compute_dtype(c, in_dt);
  std::vector<Tensor> in;
  for (const Var& x : vars) in.push_back(detail::contiguous_as(x, dt));
  Tensor o = Tensor::empty({B, T, H, V}, dt, dev), hT = Tensor::empty({B, H, K, V}, dt, dev);
  visit_floating(dt, op, [&]<class S>() {
    forward_tier<S>(c, make_args<S>(c, in), {o.data<S>(), hT.data<S>()});
  });
  auto out = record(node, vars, {o.to(in_dt), hT.to(in_dt)});
  return {out[0], out[1]};
}

}  // namespace

RecurrenceResult gla(const Var& q, const Var& k, const Var& v, const Var& gk, const Var& h0,
                     const RecurrenceOptions& opt) {
  return run(GateKind::PerKey, "gla", q, k, v, gk, h0, opt);
}
RecurrenceResult simple_gla(const Var& q, const Var& k, const Var& v, const Var& g,
                            const Var& h0, const RecurrenceOptions& opt) {
  return run(GateKind::ScalarPerHead, "simple_gla", q, k, v, g, h0, opt);
}
RecurrenceResult retention(const Var& q, const Var& k, const Var& v, const Var& h0,
                           const RecurrenceOptions& opt) {
  return run(GateKind::FixedPerHead, "retention", q, k, v, Var(), h0, opt);
}

const char* impl_name(Impl impl) {
  switch (impl) {
    case Impl::Auto: return "auto";
    case Impl::Reference: return "reference";
    case Impl::Recurrent: return "recurrent";
    case Impl::Chunk: return "chunk";
  }
  return "?";
}
Impl parse_impl(const std::string& n) {
  if (n == "auto") return Impl::Auto;
  if (n == "reference") return Impl::Reference;
  if (n == "recurrent") return Impl::Recurrent;
  if (n == "chunk") return Impl::Chunk;
  throw Error("impl", "one of auto, reference, recurrent, chunk", "'" + n + "'");
}

}  // namespace hla
