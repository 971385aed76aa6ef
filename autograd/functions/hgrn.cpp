// hgrn: the elementwise gated recurrence h_t = exp(g_t) * h_{t-1} + x_t as a Function node over
// the kernel tiers of kernels/recurrence.h. Inputs: x, g, [h0]; outputs: o, hT.
#include "autograd/functions/recurrence_common.h"
#include "autograd/node.h"
#include "tensor/dtype_dispatch.h"

namespace hla {

namespace {

struct HgrnCall {
  Impl impl;
  bool has_h0;
  kernels::HgrnDims d;
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

DType compute_dtype(const HgrnCall& c, DType in) {
  return c.impl == Impl::Reference ? DType::f64 : in;
}

struct HgrnNode : Node {
  HgrnCall call;
  const char* name() const override { return "hgrn"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& gout) override {
    const DType in_dt = inputs[0].dtype(), dt = compute_dtype(call, in_dt);
    detail::BackwardStage st = detail::stage_backward(inputs, gout, dt, inputs[0].shape());
    const std::vector<Tensor>& in = st.in;
    std::vector<Tensor>& grads = st.grads;
    visit_floating(dt, "hgrn", [&]<class S>() {
      kernels::HgrnGrad<S> g;
      g.dout = st.dout.data<S>();
      g.dhT = detail::ptr<S>(st.dhT);
      g.dx = grads[0].data<S>();
      g.dg = grads[1].data<S>();
      if (call.has_h0) g.dh0 = grads[2].data<S>();
      const auto a = make_args<S>(call, in);
      if constexpr (std::is_same_v<S, double>) {
        if (call.impl == Impl::Reference) return kernels::hgrn_reference_backward(a, g);
      }
      if (call.impl == Impl::Chunk) return kernels::hgrn_chunk_backward<S>(a, g);
      kernels::hgrn_recurrent_backward<S>(a, g);
    });
    return detail::grads_as(std::move(grads), in_dt);
  }
};

}  // namespace

RecurrenceResult hgrn(const Var& x, const Var& g, const Var& h0, Impl impl) {
  const char* op = "hgrn";
  if (!x.defined()) throw Error(op, "an input x [B,T,D]", "none");
  check_rank(x.data(), 3, op, "x", "[B,T,D]");
  const DType in_dt = x.dtype();
  detail::check_input(x, x.shape(), op, "x", "[B,T,D]", in_dt);
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2);
  detail::check_input(g, {B, T, D}, op, "g", "[B,T,D]", in_dt);
  if (h0.defined()) detail::check_input(h0, {B, D}, op, "h0", "[B,D]", in_dt);
  HgrnCall c{detail::resolve_impl(impl, T), h0.defined(), {B, T, D}};
  std::vector<Var> vars{x, g};
  if (c.has_h0) vars.push_back(h0);
  const DType dt = compute_dtype(c, in_dt);
  std::vector<Tensor> in;
  for (const Var& v : vars) in.push_back(detail::contiguous_as(v, dt));
  Tensor o = Tensor::empty({B, T, D}, dt), hT = Tensor::empty({B, D}, dt);
  visit_floating(dt, op, [&]<class S>() {
    const auto a = make_args<S>(c, in);
    const kernels::HgrnOut<S> out{o.data<S>(), hT.data<S>()};
    if constexpr (std::is_same_v<S, double>) {
      if (c.impl == Impl::Reference) return kernels::hgrn_reference_forward(a, out);
    }
    if (c.impl == Impl::Chunk) return kernels::hgrn_chunk_forward<S>(a, out);
    kernels::hgrn_recurrent_forward<S>(a, out);
  });
  auto node = std::make_shared<HgrnNode>();
  node->call = c;
  auto out = record(node, vars, {o.to(in_dt), hT.to(in_dt)});
  return {out[0], out[1]};
}

}  // namespace hla
