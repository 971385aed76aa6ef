// Mixer: the token-mixing layer of a block (one of the six linear-attention layers, or softmax
// Attention), and the state it carries between calls when decoding.
//
//   auto gla = std::make_shared<GatedLinearAttention>(opts, gen);
//   Var y = gla->forward(x);                   // x [B,T,hidden] -> [B,T,hidden], from zero state
//   MixerState st;                             // empty = the start of a sequence
//   Var y1 = gla->forward(x1, &st);            // prompt; st now holds the state after it
//   Var y2 = gla->forward(x2, &st);            // y1 ++ y2 == forward(x1 ++ x2)
//   Var y3 = gla->forward_normed(x, norm);     // == forward(norm.forward(x)), norm(x) not kept
//
// Every mixer runs its recurrence with Impl::Auto (step-by-step for T <= 64, chunked otherwise,
// as fla does), so full forward and decoding compute the same function. A mixer computes in x's
// dtype, its gates in gate_dtype(x's dtype).
#pragma once

#include <vector>

#include "nn/linear.h"
#include "nn/module.h"
#include "nn/norm.h"
#include "nn/short_conv.h"

namespace hla::nn {

struct MixerState {
  Var recurrent;          // the recurrence's state: [B,H,K,V] ([B,D] for HGRN); undefined = zeros
  std::vector<Var> conv;  // short-conv caches [B,D,W-1], in the mixer's conv order; empty = zeros
  Var keys, values;       // Attention's KV cache [B,T_cached,H_kv,d]
  int64_t position = 0;   // tokens seen so far (the rotary offset of RetNet and Attention)
};

// What a mixer reads: x [B,T,hidden], normed already (norm null), or the block's input with its
// pre-mixer norm still to apply. project() gives the mixer's input projections proj_i(norm(x));
// with a norm they run as one node that keeps x only and recomputes the normed rows in the
// backward (RMSNorm::forward_projected), so norm(x) is not held between the passes.
struct MixerInput {
  Var x;
  const RMSNorm* norm = nullptr;
  std::vector<Var> project(const std::vector<const Linear*>& projs) const;
};

class Mixer : public Module {
 public:
  // x [B,T,hidden] -> [B,T,hidden]. With `state`, starts from it and leaves in it the state after
  // the last token. lower_bound [hidden] in [0,1): HGRN/HGRN2's forget-gate floor for this layer
  // (spec 1.6); undefined = none; other mixers ignore it.
  Var forward(const Var& x, MixerState* state = nullptr, const Var& lower_bound = {}) {
    return mix({x, nullptr}, state, lower_bound);
  }
  // forward(norm.forward(x), ...) with the norm fused into the input projections: the block's
  // path, one [B,T,hidden] activation less per layer between the passes.
  Var forward_normed(const Var& x, const RMSNorm& norm, MixerState* state = nullptr,
                     const Var& lower_bound = {}) {
    return mix({x, &norm}, state, lower_bound);
  }

 protected:
  // The layer itself: everything it reads of x goes through in.project.
  virtual Var mix(const MixerInput& in, MixerState* state, const Var& lower_bound) = 0;
};

// Runs `conv` on x [B,T,D], reading and updating cache number `slot` of `state` (if given).
Var run_conv(const ShortConvolution& conv, const Var& x, MixerState* state, size_t slot);

// 1 - x
Var one_minus(const Var& x);

// The dtype gates and decays are computed in for activations of dtype `activations`: f32 for
// bf16 (logsigmoid(x) / 16, log(lb + (1 - lb) e^x) and the like need f32's mantissa; the result
// is cast back to the activations' dtype for the recurrence), else the activations' own.
DType gate_dtype(DType activations);

// [B,T,H*d] -> [B,T,H,d] and back (head h owns features h*d .. h*d+d-1).
Var split_heads(const Var& x, int64_t heads);
Var merge_heads(const Var& x);
// [B,T,Hkv,d] -> [B,T,Hkv*G,d], each head repeated G times in place: head h of the result is
// head floor(h/G) of x (fla's repeat '... h d -> ... (h g) d', used for GQA / GVA).
Var repeat_heads(const Var& x, int64_t groups);

}  // namespace hla::nn
