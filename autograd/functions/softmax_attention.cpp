// softmax_attention as a Function node over the kernels of kernels/recurrence.h: on the CPU the
// tiled (flash-style) kernel or the f64 reference; on CUDA the tiled kernels of
// kernels/cuda/attention_tiled.cu (f32, f64; no reference there). bf16 inputs (CUDA) with head
// sizes K == V in {64, 128} run the tensor-core kernels of kernels/cuda/attention_mma.cu on bf16
// directly (o and gradients bf16, lse f32); other bf16 head sizes run the f32 kernels on f32
// copies and get bf16 o and gradients (recurrence_common.h).
//   q [B,T,H,K], k [B,T,Hkv,K], v [B,T,Hkv,V] -> o [B,T,H,V]
//   o_i = sum_j softmax_j(scale q_i . k_j) v_j over the allowed keys (causal, window, GQA)
// The forward keeps o and the per-query log-sum-exp lse [B,H,T] for the backward, which the
// tiled kernels use instead of re-running the softmax normalisation.
#include "autograd/functions/recurrence_common.h"
#include "autograd/node.h"
#include "tensor/dtype_dispatch.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/recurrence_cuda.h"
#endif

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

// The kernel of the call for inputs on `dev` (the structs hold pointers on that device).
template <class S>
void run_forward(const AttnCall& c, Device dev, const kernels::AttentionArgs<S>& a,
                 const kernels::AttentionOut<S>& out) {
#ifdef HLA_WITH_CUDA
  if (dev == Device::CUDA) return cuda::softmax_attention_tiled_forward<S>(a, out);
#else
  (void)dev;  // the CPU is the only device of a build without CUDA
#endif
  if constexpr (std::is_same_v<S, double>) {
    if (c.opt.reference) return kernels::softmax_attention_reference_forward(a, out);
  }
  kernels::softmax_attention_tiled_forward<S>(a, out);
}

template <class S>
void run_backward(const AttnCall& c, Device dev, const kernels::AttentionArgs<S>& a,
                  const kernels::AttentionGrad<S>& g) {
#ifdef HLA_WITH_CUDA
  if (dev == Device::CUDA) return cuda::softmax_attention_tiled_backward<S>(a, g);
#else
  (void)dev;  // the CPU is the only device of a build without CUDA
#endif
  if constexpr (std::is_same_v<S, double>) {
    if (c.opt.reference) return kernels::softmax_attention_reference_backward(a, g);
  }
  kernels::softmax_attention_tiled_backward<S>(a, g);
}

#ifdef HLA_WITH_CUDA
// Whether a call on inputs of dtype dt and device dev runs the bf16 tensor-core kernels.
bool uses_mma(const AttnCall& c, DType dt, Device dev) {
  return dev == Device::CUDA && dt == DType::bf16 && cuda::softmax_attention_mma_supports(c.d);
}

kernels::AttentionArgs<bf16> make_bf16_args(const AttnCall& c, const std::vector<Tensor>& in) {
  kernels::AttentionArgs<bf16> a;
  a.d = c.d;
  a.q = in[0].data<bf16>();
  a.k = in[1].data<bf16>();
  a.v = in[2].data<bf16>();
  a.causal = c.opt.causal;
  a.window = c.opt.window;
  a.scale = c.scale;
  return a;
}
#endif

struct AttentionNode : Node {
  AttnCall call;
  bool mma = false;  // o (bf16) and lse (f32) came from the tensor-core kernels
  Tensor o, lse;     // in the compute dtype (mma: o bf16, lse f32), on the inputs' device
  const char* name() const override { return "softmax_attention"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& gout) override {
    if (!gout[0].defined()) return {Tensor(), Tensor(), Tensor()};
#ifdef HLA_WITH_CUDA
    if (mma) return backward_mma(gout[0]);
#endif
    const Device dev = o.device();
    const DType in_dt = inputs[0].dtype(), dt = o.dtype();
    std::vector<Tensor> in;
    for (const Var& v : inputs) in.push_back(detail::contiguous_as(v, dt));
    const Tensor dout = gout[0].to(dt).contiguous();
    std::vector<Tensor> grads;
    for (const Tensor& t : in) grads.push_back(Tensor::empty(t.shape(), dt, dev));
    visit_floating(dt, name(), [&]<class S>() {
      kernels::AttentionGrad<S> g{dout.data<S>(), o.data<S>(), lse.data<S>(),
                                  grads[0].data<S>(), grads[1].data<S>(), grads[2].data<S>()};
      run_backward<S>(call, dev, make_args<S>(call, in), g);
    });
    for (Tensor& t : grads) t = t.to(in_dt);
    return grads;
  }
  void release() override { o = lse = Tensor(); }

 private:
#ifdef HLA_WITH_CUDA
  std::vector<Tensor> backward_mma(const Tensor& gout) const {
    std::vector<Tensor> in, grads;
    for (const Var& v : inputs) {
      in.push_back(detail::contiguous_as(v, DType::bf16));
      grads.push_back(Tensor::empty(v.shape(), DType::bf16, Device::CUDA));
    }
    const Tensor dout = gout.to(DType::bf16).contiguous();
    const cuda::AttentionBf16Grad g{dout.data<bf16>(),     o.data<bf16>(),
                                    lse.data<float>(),     grads[0].data<bf16>(),
                                    grads[1].data<bf16>(), grads[2].data<bf16>()};
    cuda::softmax_attention_mma_backward(make_bf16_args(call, in), g);
    return grads;
  }
#endif
};

// Shapes, dtypes and devices of q, k, v (all on q's device, in q's dtype) and the options.
AttnCall validate(const Var& q, const Var& k, const Var& v, const AttentionOptions& opt,
                  const char* op) {
  if (!q.defined()) throw Error(op, "an input q [B,T,H,K]", "none");
  check_rank(q.data(), 4, op, "q", "[B,T,H,K]");
  check_rank(k.data(), 4, op, "k", "[B,T,Hkv,K]");
  check_rank(v.data(), 4, op, "v", "[B,T,Hkv,V]");
  const DType dt = q.dtype();
  const Device dev = q.device();
  detail::check_input(q, q.shape(), op, "q", "[B,T,H,K]", dt, dev);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3);
  const int64_t Hkv = k.size(2), V = v.size(3);
  detail::check_input(k, {B, T, Hkv, K}, op, "k", "[B,T,Hkv,K]", dt, dev);
  detail::check_input(v, {B, T, Hkv, V}, op, "v", "[B,T,Hkv,V]", dt, dev);
  if (Hkv == 0 || H % Hkv != 0)
    throw Error(op, "query heads H divisible by kv heads Hkv (GQA)",
                "H=" + std::to_string(H) + ", Hkv=" + std::to_string(Hkv));
  if (opt.window < 0) throw Error(op, "window >= 0 (0: none)", std::to_string(opt.window));
  if (dev == Device::CUDA && opt.reference)
    throw Error(op, "opt.reference = false for cuda inputs", "opt.reference = true",
                "the reference runs on the CPU only: move q, k and v there with "
                ".to(Device::CPU)");
  return {opt, detail::resolve_scale(opt.scale, K), {B, T, H, Hkv, K, V}};
}

}  // namespace

Var softmax_attention(const Var& q, const Var& k, const Var& v, const AttentionOptions& opt) {
  const char* op = "softmax_attention";
  const AttnCall c = validate(q, k, v, opt, op);
  const kernels::AttnDims& d = c.d;
  const Device dev = q.device();
  const DType in_dt = q.dtype();
  auto node = std::make_shared<AttentionNode>();
  node->call = c;
#ifdef HLA_WITH_CUDA
  if (uses_mma(c, in_dt, dev)) {
    const std::vector<Tensor> in{detail::contiguous_as(q, in_dt), detail::contiguous_as(k, in_dt),
                                 detail::contiguous_as(v, in_dt)};
    Tensor o = Tensor::empty({d.B, d.T, d.H, d.V}, DType::bf16, dev);
    Tensor lse = Tensor::empty({d.B, d.H, d.T}, DType::f32, dev);
    cuda::softmax_attention_mma_forward(make_bf16_args(c, in), {o.data<bf16>(), lse.data<float>()});
    node->mma = true;
    if (should_record({q, k, v})) {
      node->o = o;
      node->lse = lse;
    }
    return record1(node, {q, k, v}, o);
  }
#endif
  const DType dt = detail::compute_dtype(in_dt, opt.reference);
  std::vector<Tensor> in{detail::contiguous_as(q, dt), detail::contiguous_as(k, dt),
                         detail::contiguous_as(v, dt)};
  Tensor o = Tensor::empty({d.B, d.T, d.H, d.V}, dt, dev);
  Tensor lse = Tensor::empty({d.B, d.H, d.T}, dt, dev);
  visit_floating(dt, op, [&]<class S>() {
    run_forward<S>(c, dev, make_args<S>(c, in), {o.data<S>(), lse.data<S>()});
  });
  if (should_record({q, k, v})) {
    node->o = o;
    node->lse = lse;
  }
  return record1(node, {q, k, v}, o.to(in_dt));
}

}  // namespace hla
