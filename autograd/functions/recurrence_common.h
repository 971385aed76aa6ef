// Shared plumbing of the recurrence Function nodes: argument checks with layout-aware messages,
// tier resolution, and bringing Vars to contiguous tensors of the compute dtype.
//
// dtypes: f32 and f64 run as they are. bf16 inputs (on CUDA) run a bf16 kernel where the op has
// one (attention and chunked GLA on tensor cores for head sizes 64 / 128, HGRN's scan);
// otherwise the f32 kernels on f32 copies converted on the device. Either way the recurrent
// state and every accumulation stay f32, and the outputs (o, hT) and the input gradients come
// back in bf16.
#pragma once

#include <string>
#include <vector>

#include "autograd/recurrences.h"
#include "kernels/ops.h"
#include "kernels/recurrence.h"

namespace hla::detail {

// Auto picks what fla's layers pick: the step-by-step kernel for short sequences.
inline Impl resolve_impl(Impl impl, int64_t T) {
  if (impl != Impl::Auto) return impl;
  return T <= kernels::kChunk ? Impl::Recurrent : Impl::Chunk;
}

// The contiguous data of v in dtype dt (a no-op when it already is).
inline Tensor contiguous_as(const Var& v, DType dt) {
  if (!v.defined()) return Tensor();
  return v.data().to(dt).contiguous();
}

// The dtype the kernels run in for inputs of dtype `in`: the reference tier (CPU) computes in
// f64; bf16 runs in f32 (see above); f32 and f64 as they are.
inline DType compute_dtype(DType in, bool reference) {
  if (reference) return DType::f64;
  return in == DType::bf16 ? DType::f32 : in;
}

// Pointer to a tensor's data, or null for an undefined one.
template <class S>
const S* ptr(const Tensor& t) {
  return t.defined() ? t.data<S>() : nullptr;
}
template <class S>
S* mut_ptr(Tensor& t) {
  return t.defined() ? t.data<S>() : nullptr;
}

// Validates one input of a recurrence op against its expected shape, dtype and device (that
// of q: all inputs of one call live on one device).
inline void check_input(const Var& v, const Shape& shape, const char* op, const char* name,
                        const char* layout, DType dtype, Device device = Device::CPU) {
  if (!v.defined())
    throw Error(op, std::string("an input ") + name + " " + layout, "none");
  if (v.device() != device)
    throw Error(op, std::string(name) + " on " + device_name(device) + " like q",
                device_name(v.device()), "move every input to one device");
  const DType vt = v.dtype();
  const bool bf16_on_cuda = vt == DType::bf16 && device == Device::CUDA;
  if (vt != DType::f32 && vt != DType::f64 && !bf16_on_cuda)
    throw Error(op, std::string(name) + " of dtype f32 or f64 (or bf16 on cuda)", dtype_name(vt),
                vt == DType::bf16 ? "bf16 is a storage type on the CPU: call .to(DType::f32)"
                                  : "convert with .to(DType::f32)");
  if (v.dtype() != dtype)
    throw Error(op, std::string(name) + " of dtype " + dtype_name(dtype) + " like q",
                dtype_name(v.dtype()), "convert every input to one dtype");
  check_shape(v.data(), shape, op, name, layout);
}

// What every recurrence backward starts from, in the compute dtype and on the inputs' device: the inputs (contiguous), the
// output gradient (zeros of out_shape when o did not reach the loss), the final-state gradient
// (undefined when hT did not), and one gradient buffer per input for the kernel to overwrite.
struct BackwardStage {
  std::vector<Tensor> in, grads;
  Tensor dout, dhT;
};
inline BackwardStage stage_backward(const std::vector<Var>& inputs,
                                    const std::vector<Tensor>& gout, DType dt,
                                    const Shape& out_shape) {
  BackwardStage s;
  const Device dev = inputs[0].device();  // the CPU, or cuda for the GPU tiers
  for (const Var& v : inputs) {
    s.in.push_back(contiguous_as(v, dt));
    s.grads.push_back(Tensor::empty(v.shape(), dt, dev));
  }
  s.dout = gout[0].defined() ? gout[0].to(dt).contiguous() : Tensor::zeros(out_shape, dt, dev);
  s.dhT = gout[1].defined() ? gout[1].to(dt).contiguous() : Tensor();
  return s;
}
// The gradients in the inputs' dtype (the reference tier computes in f64).
inline std::vector<Tensor> grads_as(std::vector<Tensor> grads, DType dt) {
  for (Tensor& t : grads) t = t.to(dt);
  return grads;
}
// The gradients each in its input's dtype (a gate may be f32 beside bf16 q, k, v).
inline std::vector<Tensor> grads_like(std::vector<Tensor> grads, const std::vector<Var>& inputs) {
  for (size_t i = 0; i < grads.size(); ++i) grads[i] = grads[i].to(inputs[i].dtype());
  return grads;
}
// The dtype a gate g may take beside q of dtype `in`: in, or f32 for bf16 q (the
// mixed-precision models' gates, nn::gate_dtype).
inline DType gate_dtype_for(const Var& g, DType in) {
  return in == DType::bf16 && g.defined() && g.dtype() == DType::f32 ? DType::f32 : in;
}

inline double resolve_scale(double scale, int64_t K) {
  return scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(K));
}

}  // namespace hla::detail
