// delta_rule and gated_delta_rule as one Function node over the kernel tiers of
// kernels/recurrence.h (CPU) and kernels/cuda/recurrence_cuda.h (CUDA).
//   S' = exp(g_t) S_{t-1};  S_t = S' + beta_t k_t (v_t - S'^T k_t)^T;  o_t = S_t^T (scale q_t)
// Inputs in order: q, k, v, beta, [g], [h0]; outputs: o, hT. With l2norm_qk the kernels
// normalise q and k inside and return gradients for the raw inputs.
// The device of q picks the kernels: on CUDA, Auto / Recurrent / Chunk run the CUDA recurrent
// and chunk tiers (Auto: chunk for T > kChunk); the f64 reference tier is CPU-only. bf16 inputs
// (CUDA) of the chunk tier with whole heads run its bf16 kernels (bf16 reads and writes, f32
// states, products on the bf16 tensor cores); other bf16 inputs run the f32 kernels on f32
// copies (recurrence_common.h), with TF32 products. Each head may run as several
// slices of its values (value_split.h): the kernels then see H*s heads of V/s values.
#include "autograd/functions/recurrence_common.h"
#include "autograd/functions/value_split.h"
#include "autograd/node.h"
#include "tensor/dtype_dispatch.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/recurrence_cuda.h"
#endif

namespace hla {

namespace {

struct DeltaCall {
  Impl impl;  // resolved
  double scale;
  bool l2norm_qk, has_g, has_h0;
  kernels::RecDims d;         // of the inputs
  Device device;              // of every input: picks the CPU or the CUDA kernels
  int64_t split = 1;          // value slices per head
  bool tensor_cores = false;  // CUDA chunk products on tensor cores (bf16 inputs, f32 with TF32)

  // What the kernels see: H*s heads of V/s values.
  kernels::RecDims kernel_dims() const { return {d.B, d.T, d.H * split, d.K, d.V / split}; }
  // The inputs q, k, v, beta, [g], [h0] in the kernels' layout (value_split.h).
  std::vector<Tensor> split_inputs(const std::vector<Tensor>& in) const {
    if (split == 1) return in;
    std::vector<Tensor> out{detail::split_heads(in[0], split), detail::split_heads(in[1], split),
                            in[2], detail::split_heads(in[3], split)};
    size_t i = 4;
    if (has_g) out.push_back(detail::split_heads(in[i++], split));
    if (has_h0) out.push_back(detail::split_state(in[i], split));
    return out;
  }
};

template <class S>
kernels::DeltaRuleArgs<S> make_args(const DeltaCall& c, const std::vector<Tensor>& in) {
  kernels::DeltaRuleArgs<S> a;
  a.d = c.kernel_dims();
  a.q = in[0].data<S>();
  a.k = in[1].data<S>();
  a.v = in[2].data<S>();
  a.beta = in[3].data<S>();
  size_t i = 4;
  if (c.has_g) a.g = in[i++].data<S>();
  if (c.has_h0) a.h0 = in[i].data<S>();
  a.scale = c.scale;
  a.l2norm_qk = c.l2norm_qk;
  a.tensor_cores = c.tensor_cores;
  return a;
}

// The dtype the kernels run in: f64 for the reference tier; bf16 for bf16 inputs of the CUDA
// chunk tier with whole heads (value slices sum their q, k, beta, g gradients: f32 there);
// otherwise f32 for bf16 inputs.
DType compute_dtype(const DeltaCall& c, DType in) {
  if (in == DType::bf16 && c.device == Device::CUDA && c.impl == Impl::Chunk && c.split == 1)
    return DType::bf16;
  return detail::compute_dtype(in, c.impl == Impl::Reference);
}

template <class S>
void forward_tier(const DeltaCall& c, const kernels::DeltaRuleArgs<S>& a,
                  const kernels::DeltaRuleOut<S>& out) {
#ifdef HLA_WITH_CUDA
  if (c.device == Device::CUDA) {
    if (c.impl == Impl::Chunk) return cuda::delta_rule_chunk_forward<S>(a, out);
    if constexpr (!std::is_same_v<S, bf16>) return cuda::delta_rule_recurrent_forward<S>(a, out);
  }
#endif
  if constexpr (std::is_same_v<S, bf16>) {
    HLA_CHECK(false, "bf16 delta-rule kernels: the CUDA chunk tier only");
  } else {
    if constexpr (std::is_same_v<S, double>) {
      if (c.impl == Impl::Reference) return kernels::delta_rule_reference_forward(a, out);
    }
    if (c.impl == Impl::Chunk) return kernels::delta_rule_chunk_forward<S>(a, out);
    kernels::delta_rule_recurrent_forward<S>(a, out);
  }
}

template <class S>
void backward_tier(const DeltaCall& c, const kernels::DeltaRuleArgs<S>& a,
                   const kernels::DeltaRuleGrad<S>& g) {
#ifdef HLA_WITH_CUDA
  if (c.device == Device::CUDA) {
    if (c.impl == Impl::Chunk) return cuda::delta_rule_chunk_backward<S>(a, g);
    if constexpr (!std::is_same_v<S, bf16>) return cuda::delta_rule_recurrent_backward<S>(a, g);
  }
#endif
  if constexpr (std::is_same_v<S, bf16>) {
    HLA_CHECK(false, "bf16 delta-rule kernels: the CUDA chunk tier only");
  } else {
    if constexpr (std::is_same_v<S, double>) {
      if (c.impl == Impl::Reference) return kernels::delta_rule_reference_backward(a, g);
    }
    if (c.impl == Impl::Chunk) return kernels::delta_rule_chunk_backward<S>(a, g);
    kernels::delta_rule_recurrent_backward<S>(a, g);
  }
}

struct DeltaRuleNode : Node {
  DeltaCall call;
  const char* name() const override { return call.has_g ? "gated_delta_rule" : "delta_rule"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& gout) override {
    const DType in_dt = inputs[0].dtype(), dt = compute_dtype(call, in_dt);
    const auto& d = call.d;
    detail::BackwardStage st = detail::stage_backward(inputs, gout, dt, {d.B, d.T, d.H, d.V});
    const std::vector<Tensor> in = call.split_inputs(st.in);
    std::vector<Tensor>& grads = st.grads;
    const int64_t s = call.split;
    const Tensor dhT = s > 1 && st.dhT.defined() ? detail::split_state(st.dhT, s) : st.dhT;
    // Gradient buffers in the kernels' layout: dv (and o) share it; the others are per slice.
    std::vector<Tensor> kg = grads;
    if (s > 1)
      for (size_t i = 0; i < kg.size(); ++i)
        if (i != 2) kg[i] = Tensor::empty(in[i].shape(), dt, call.device);
    visit_floating_or_bf16(dt, name(), [&]<class S>() {
      kernels::DeltaRuleGrad<S> g;
      g.dout = st.dout.data<S>();
      g.dhT = detail::ptr<S>(dhT);
      g.dq = kg[0].data<S>();
      g.dk = kg[1].data<S>();
      g.dv = kg[2].data<S>();
      g.dbeta = kg[3].data<S>();
      size_t i = 4;
      if (call.has_g) g.dg = kg[i++].data<S>();
      if (call.has_h0) g.dh0 = kg[i].data<S>();
      backward_tier<S>(call, make_args<S>(call, in), g);
    });
    if (s > 1) {  // q, k, beta, g are shared by the slices: their gradients are sums
      for (size_t i : {0, 1, 3}) grads[i] = detail::merge_heads(kg[i], s);
      if (call.has_g) grads[4] = detail::merge_heads(kg[4], s);
      if (call.has_h0) grads.back() = detail::merge_state(kg.back(), s);
    }
    return detail::grads_as(std::move(grads), in_dt);
  }
};

RecurrenceResult run(const char* op, const Var& q, const Var& k, const Var& v, const Var& g,
                     const Var& beta, const Var& h0, const RecurrenceOptions& opt) {
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
  detail::check_input(beta, {B, T, H}, op, "beta", "[B,T,H]", in_dt, dev);
  if (g.defined()) detail::check_input(g, {B, T, H}, op, "g", "[B,T,H]", in_dt, dev);
  if (h0.defined()) detail::check_input(h0, {B, H, K, V}, op, "h0", "[B,H,K,V]", in_dt, dev);
  if (dev == Device::CUDA && opt.impl == Impl::Reference)
    throw Error(op, "Impl::Auto, Impl::Recurrent or Impl::Chunk for cuda tensors",
                "Impl::reference",
                "the reference tier runs on the CPU only: move the inputs there with "
                ".to(Device::CPU)");

  const Impl impl = detail::resolve_impl(opt.impl, T);
  DeltaCall c{impl,
              detail::resolve_scale(opt.scale, K),
              opt.l2norm_qk,
              g.defined(),
              h0.defined(),
              {B, T, H, K, V},
              dev,
              detail::value_split(opt.value_split, dev, impl == Impl::Recurrent, B, H, V, op)};
#ifdef HLA_WITH_CUDA
  c.tensor_cores = dev == Device::CUDA &&
                   (in_dt == DType::bf16 || (in_dt == DType::f32 && cuda::tf32_enabled()));
#endif
  std::vector<Var> vars{q, k, v, beta};
  if (c.has_g) vars.push_back(g);
  if (c.has_h0) vars.push_back(h0);
  const DType dt = compute_dtype(c, in_dt);
  std::vector<Tensor> in;
  for (const Var& x : vars) in.push_back(detail::contiguous_as(x, dt));
  const std::vector<Tensor> kin = c.split_inputs(in);
  const kernels::RecDims kd = c.kernel_dims();
  // o [B,T,H,V] is the kernels' [B,T,H*s,V/s]; the state comes back per slice
  Tensor o = Tensor::empty({B, T, H, V}, dt, dev);
  Tensor hT = Tensor::empty({B, kd.H, K, kd.V}, dt, dev);
  visit_floating_or_bf16(dt, op, [&]<class S>() {
    forward_tier<S>(c, make_args<S>(c, kin), {o.data<S>(), hT.data<S>()});
  });
  if (c.split > 1) hT = detail::merge_state(hT, c.split);
  auto node = std::make_shared<DeltaRuleNode>();
  node->call = c;
  auto out = record(node, vars, {o.to(in_dt), hT.to(in_dt)});
  return {out[0], out[1]};
}

}  // namespace

RecurrenceResult delta_rule(const Var& q, const Var& k, const Var& v, const Var& beta,
                            const Var& h0, const RecurrenceOptions& opt) {
  return run("delta_rule", q, k, v, Var(), beta, h0, opt);
}
RecurrenceResult gated_delta_rule(const Var& q, const Var& k, const Var& v, const Var& g,
                                  const Var& beta, const Var& h0, const RecurrenceOptions& opt) {
  if (!g.defined())
    throw Error("gated_delta_rule", "a log decay g [B,T,H]", "none",
                "use delta_rule without a gate");
  return run("gated_delta_rule", q, k, v, g, beta, h0, opt);
}

}  // namespace hla
