// Mixer: the token-mixing layer of a block (one of the six linear-attention layers, or softmax
// Attention), and the state it carries between calls when decoding.
//
//   auto gla = std::make_shared<GatedLinearAttention>(opts, gen);
//   Var y = gla->forward(x);                   // x [B,T,hidden] -> [B,T,hidden], from zero state
//   MixerState st;                             // empty = the start of a sequence
//   Var y1 = gla->forward(x1, &st);            // prompt; st now holds the state after it
//   Var y2 = gla->forward(x2, &st);            // y1 ++ y2 == forward(x1 ++ x2)
//
// Every mixer runs its recurrence with Impl::Auto (step-by-step for T <= 64, chunked otherwise,
// as fla does), so full forward and decoding compute the same function. A mixer computes in x's
// dtype, its gates in gate_dtype(x's dtype).
#pragma once

#include <vector>

#include "nn/module.h"
#include "nn/short_conv.h"

namespace hla::nn {

struct MixerState {
  Var recurrent;          // the recurrence's state: [B,H,K,V] ([B,D] for HGRN); undefined = zeros
  std::vector<Var> conv;  // short-conv caches [B,D,W-1], in the mixer's conv order; empty = zeros
  Var keys, values;       // Attention's KV cache [B,T_cached,H_kv,d]
  int64_t position = 0;   // tokens seen so far (the rotary offset of RetNet and Attention)
};

class Mixer : public Module {
 public:
  // x [B,T,hidden] -> [B,T,hidden]. With `state`, starts from it and leaves in it the state after
  // the last token. lower_bound [hidden] in [0,1): HGRN/HGRN2's forget-gate floor for this layer
  // (spec 1.6); undefined = none; other mixers ignore it.
  virtual Var forward(const Var& x, MixerState* state = nullptr, const Var& lower_bound = {}) = 0;
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
