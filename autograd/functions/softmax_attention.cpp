// softmax_attention as a Function node: the tiled (flash-style) kernel or the reference of
// kernels/recurrence.h. Inputs q, k, v; output o; the forward keeps o and the per-query
// log-sum-exp for the backward.
#include "autograd/functions/recurrence_common.h"
#include "autograd/node.h"
#include "tensor/dtype_dispatch.h"

namespace hla {

namespace {

struct AttnCall {
  AttentionOptions opt;
  double scale;
  kernels::AttnDims d;
};

template <class S>
kernels::AttentionArgs<S> make_args(const AttnCall& c, const std::vector<Tensor>& in) {
  kernels::AttentionArgs<S> a;
  a.d = c.d;
  a.q = in[0].data<S>();
  a.k = in[1].data<S>();
  a.v = in[2].data<S>();
  a.causal = c.opt.causal;
  a.window = c.opt.window;
  a.scale = c.scale;
  return a;
}

struct AttentionNode : Node {
  AttnCall call;
  Tensor o, lse;  // in the compute dtype
  const char* name() const override { return "softmax_attention"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& gout) override {
    if (!gout[0].defined()) return {Tensor(), Tensor(), Tensor()};
    const DType in_dt = inputs[0].dtype(), dt = o.dtype();
    std::vector<Tensor> in;
    for (const Var& v : inputs) in.push_back(detail::contiguous_as(v, dt));
    const Tensor dout = gout[0].to(dt).contiguous();
    std::vector<Tensor> grads;
    for (const Tensor& t : in) grads.push_back(Tensor::empty(t.shape(), dt));
    visit_floating(dt, name(), [&]<class S>() {
      kernels::AttentionGrad<S> g{dout.data<S>(), o.data<S>(), lse.data<S>(),
                                  grads[0].data<S>(), grads[1].data<S>(), grads[2].data<S>()};
      const auto a = make_args<S>(call, in);
      if constexpr (std::is_same_v<S, double>) {
        if (call.opt.reference) return kernels::softmax_attention_reference_backward(a, g);
      }
      kernels::softmax_attention_tiled_backward<S>(a, g);
    });
    for (Tensor& t : grads) t = t.to(in_dt);
    return grads;
  }
  void release() override { o = lse = Tensor(); }
};

}  // namespace

Var softmax_attention(const Var& q, const Var& k, const Var& v, const AttentionOptions& opt) {
  const char* op = "softmax_attention";
  if (!q.defined()) throw Error(op, "an input q [B,T,H,K]", "none");
  check_rank(q.data(), 4, op, "q", "[B,T,H,K]");
  check_rank(k.data(), 4, op, "k", "[B,T,Hkv,K]");
  check_rank(v.data(), 4, op, "v", "[B,T,Hkv,V]");
  const DType in_dt = q.dtype();
  detail::check_input(q, q.shape(), op, "q", "[B,T,H,K]", in_dt);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3);
  const int64_t Hkv = k.size(2), V = v.size(3);
  detail::check_input(k, {B, T, Hkv, K}, op, "k", "[B,T,Hkv,K]", in_dt);
  detail::check_input(v, {B, T, Hkv, V}, op, "v", "[B,T,Hkv,V]", in_dt);
  if (Hkv == 0 || H % Hkv != 0)
    throw Error(op, "query heads H divisible by kv heads Hkv (GQA)",
                "H=" + std::to_string(H) + ", Hkv=" + std::to_string(Hkv));
  if (opt.window < 0) throw Error(op, "window >= 0 (0: none)", std::to_string(opt.window));
  AttnCall c{opt, detail::resolve_scale(opt.scale, K), {B, T, H, Hkv, K, V}};
  const DType dt = opt.reference ? DType::f64 : in_dt;
  std::vector<Tensor> in{detail::contiguous_as(q, dt), detail::contiguous_as(k, dt),
                         detail::contiguous_as(v, dt)};
  Tensor o = Tensor::empty({B, T, H, V}, dt), lse = Tensor::empty({B, H, T}, dt);
  visit_floating(dt, op, [&]<class S>() {
    const auto a = make_args<S>(c, in);
    const kernels::AttentionOut<S> out{o.data<S>(), lse.data<S>()};
    if constexpr (std::is_same_v<S, double>) {
      if (opt.reference) return kernels::softmax_attention_reference_forward(a, out);
    }
    kernels::softmax_attention_tiled_forward<S>(a, out);
  });
  auto node = std::make_shared<AttentionNode>();
  node->call = c;
  if (should_record({q, k, v})) {
    node->o = o;
    node->lse = lse;
  }
  return record1(node, {q, k, v}, o.to(in_dt));
}

}  // namespace hla
