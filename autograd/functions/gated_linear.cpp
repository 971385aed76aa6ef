// gla, simple_gla and retention: the gated linear family as one Function node over the kernel
// tiers of kernels/recurrence.h (reference, recurrent, chunk).
//   S_t = diag(alpha_t) S_{t-1} + k_t v_t^T,  o_t = S_t^T (scale q_t)
// Inputs in order: q, k, v, [g], [h0]; outputs: o, hT.
#include "autograd/functions/recurrence_common.h"
#include "autograd/node.h"
#include "tensor/dtype_dispatch.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/recurrence_cuda.h"
#endif

namespace hla {

using kernels::GateKind;

namespace {

struct GatedLinearCall {
  GateKind gate;
  Impl impl;  // resolved
  double scale;
  bool has_gate, has_h0;
  kernels::RecDims d;
};

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
  if constexpr (std::is_same_v<S, double>) {
    if (c.impl == Impl::Reference) return kernels::gated_linear_reference_forward(a, o);
  }
  if (c.impl == Impl::Chunk) return kernels::gated_linear_chunk_forward<S>(a, o);
  kernels::gated_linear_recurrent_forward<S>(a, o);
}

template <class S>
void backward_tier(const GatedLinearCall& c, const kernels::GatedLinearArgs<S>& a,
                   const kernels::GatedLinearGrad<S>& g) {
  if constexpr (std::is_same_v<S, double>) {
    if (c.impl == Impl::Reference) return kernels::gated_linear_reference_backward(a, g);
  }
  if (c.impl == Impl::Chunk) return kernels::gated_linear_chunk_backward<S>(a, g);
  kernels::gated_linear_recurrent_backward<S>(a, g);
}

// The dtype the kernels run in: the reference tier always computes in f64.
DType compute_dtype(const GatedLinearCall& c, DType in) {
  return c.impl == Impl::Reference ? DType::f64 : in;
}

struct GatedLinearNode : Node {
  GatedLinearCall call;
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
    return detail::grads_as(std::move(st.grads), in_dt);
  }
};

#ifdef HLA_WITH_CUDA
// ---- CUDA: the recurrent tier of kernels/cuda/gated_linear_recurrent.cu (f32, f64). Auto and
// Recurrent run it (for any T: there is no CUDA chunk tier yet); the reference and chunk tiers
// have no CUDA implementation and say so. make_args() fills the same structs with device pointers.

Tensor cuda_input(const Var& x) { return x.defined() ? cuda::contiguous(x.data()) : Tensor(); }

struct GatedLinearCudaNode : GatedLinearNode {
  std::vector<Tensor> backward(const std::vector<Tensor>& gout) override {
    const auto& d = call.d;
    const DType dt = inputs[0].dtype();
    std::vector<Tensor> in;
    for (const Var& v : inputs) in.push_back(cuda_input(v));
    const Tensor dout = gout[0].defined() ? cuda::contiguous(gout[0])
                                          : Tensor::zeros({d.B, d.T, d.H, d.V}, dt, Device::CUDA);
    const Tensor dhT = gout[1].defined() ? cuda::contiguous(gout[1]) : Tensor();
    std::vector<Tensor> grads;
    for (const Tensor& x : in) grads.push_back(Tensor::empty(x.shape(), dt, Device::CUDA));
    visit_floating(dt, name(), [&]<class S>() {
      kernels::GatedLinearGrad<S> g;
      g.dout = dout.data<S>();
      g.dhT = detail::ptr<S>(dhT);
      g.dq = grads[0].data<S>();
      g.dk = grads[1].data<S>();
      g.dv = grads[2].data<S>();
      g.dg = call.has_gate ? grads[3].data<S>() : nullptr;
      g.dh0 = call.has_h0 ? grads.back().data<S>() : nullptr;
      cuda::gated_linear_recurrent_backward<S>(make_args<S>(call, in), g);
    });
    return grads;
  }
};

RecurrenceResult run_cuda(GateKind gate, const char* op, const Var& q, const Var& k, const Var& v,
                          const Var& g, const Var& h0, const RecurrenceOptions& opt) {
  const DType dt = q.dtype();
  auto check = [&](const Var& x, const Shape& shape, const char* name, const char* layout) {
    if (!x.defined()) throw Error(op, std::string("an input ") + name + " " + layout, "none");
    if (x.device() != Device::CUDA)
      throw Error(op, std::string(name) + " on cuda like q", device_name(x.device()),
                  "move every input to one device");
    if (x.dtype() != dt)
      throw Error(op, std::string(name) + " of dtype " + dtype_name(dt) + " like q",
                  dtype_name(x.dtype()), "convert every input to one dtype");
    check_shape(x.data(), shape, op, name, layout);
  };
  check_rank(q.data(), 4, op, "q", "[B,T,H,K]");
  check_rank(v.data(), 4, op, "v", "[B,T,H,V]");
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3);
  check(k, {B, T, H, K}, "k", "[B,T,H,K]");
  check(v, {B, T, H, V}, "v", "[B,T,H,V]");
  if (gate == GateKind::PerKey) check(g, {B, T, H, K}, "gk", "[B,T,H,K]");
  if (gate == GateKind::ScalarPerHead) check(g, {B, T, H}, "g", "[B,T,H]");
  if (h0.defined()) check(h0, {B, H, K, V}, "h0", "[B,H,K,V]");
  if (opt.impl == Impl::Reference || opt.impl == Impl::Chunk)
    throw Error(op, "Impl::Auto or Impl::Recurrent for cuda tensors",
                std::string("Impl::") + impl_name(opt.impl),
                std::string("no cuda implementation for ") + op + " (" + impl_name(opt.impl) +
                    " tier); the recurrent tier runs on cuda");
  GatedLinearCall c{gate, Impl::Recurrent, detail::resolve_scale(opt.scale, K), g.defined(),
                    h0.defined(), {B, T, H, K, V}};
  std::vector<Var> vars{q, k, v};
  if (c.has_gate) vars.push_back(g);
  if (c.has_h0) vars.push_back(h0);
  std::vector<Tensor> in;
  for (const Var& x : vars) in.push_back(cuda_input(x));
  Tensor o = Tensor::empty({B, T, H, V}, dt, Device::CUDA);
  Tensor hT = Tensor::empty({B, H, K, V}, dt, Device::CUDA);
  if (B * T * H * K * V > 0) {
    visit_floating(dt, op, [&]<class S>() {
      cuda::gated_linear_recurrent_forward<S>(make_args<S>(c, in), {o.data<S>(), hT.data<S>()});
    });
  }
  auto node = std::make_shared<GatedLinearCudaNode>();
  node->call = c;
  auto out = record(node, vars, {o, hT});
  return {out[0], out[1]};
}
#endif

RecurrenceResult run(GateKind gate, const char* op, const Var& q, const Var& k, const Var& v,
                     const Var& g, const Var& h0, const RecurrenceOptions& opt) {
  if (!q.defined()) throw Error(op, "an input q [B,T,H,K]", "none");
#ifdef HLA_WITH_CUDA
  if (q.device() == Device::CUDA) return run_cuda(gate, op, q, k, v, g, h0, opt);
#endif
  check_rank(q.data(), 4, op, "q", "[B,T,H,K]");
  const DType in_dt = q.dtype();
  detail::check_input(q, q.shape(), op, "q", "[B,T,H,K]", in_dt);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3);
  check_rank(v.data(), 4, op, "v", "[B,T,H,V]");
  const int64_t V = v.size(3);
  detail::check_input(k, {B, T, H, K}, op, "k", "[B,T,H,K]", in_dt);
  detail::check_input(v, {B, T, H, V}, op, "v", "[B,T,H,V]", in_dt);
  if (gate == GateKind::PerKey) detail::check_input(g, {B, T, H, K}, op, "gk", "[B,T,H,K]", in_dt);
  if (gate == GateKind::ScalarPerHead) detail::check_input(g, {B, T, H}, op, "g", "[B,T,H]", in_dt);
  if (h0.defined()) detail::check_input(h0, {B, H, K, V}, op, "h0", "[B,H,K,V]", in_dt);

  GatedLinearCall c{gate, detail::resolve_impl(opt.impl, T), detail::resolve_scale(opt.scale, K),
                    g.defined(), h0.defined(), {B, T, H, K, V}};
  std::vector<Var> vars{q, k, v};
  if (c.has_gate) vars.push_back(g);
  if (c.has_h0) vars.push_back(h0);
  const DType dt = compute_dtype(c, in_dt);
  std::vector<Tensor> in;
  for (const Var& x : vars) in.push_back(detail::contiguous_as(x, dt));
  Tensor o = Tensor::empty({B, T, H, V}, dt), hT = Tensor::empty({B, H, K, V}, dt);
  visit_floating(dt, op, [&]<class S>() {
    forward_tier<S>(c, make_args<S>(c, in), {o.data<S>(), hT.data<S>()});
  });
  auto node = std::make_shared<GatedLinearNode>();
  node->call = c;
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
