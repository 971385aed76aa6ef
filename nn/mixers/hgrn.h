// HGRN: Hierarchically Gated Recurrent Neural Network for Sequence Modeling
// https://arxiv.org/abs/2311.04823  (fla/layers/hgrn.py HGRNAttention; spec/recurrences.md 1)
//
// An elementwise gated linear recurrence, one scalar state per channel, no heads:
//   i~ = i_proj(x), f~ = f_proj(x)              (each through a short conv, no activation, if on)
//   lam_t = logsigmoid(f~_t)                     (log forget gate, <= 0)
//   lam_t <- log(lb + (1 - lb) exp(lam_t))       (lower bound lb of this layer, spec 1.6)
//   f_t = exp(lam_t);  u_t = silu(i~_t) * (1 - f_t)     (input gate tied to the forget gate)
//   h_t = f_t * h_{t-1} + u_t
//   y_t = o_proj( RMSNorm(h_t) * w * silu(g_proj(x_t)) )  (gated norm over all D channels)
//
// Shapes: x [B,T,d]; D = d (expand_ratio 1, the only ratio consistent with lower_bounds [L,d]);
// state [B,D]. Parameters (d = 1024: 4,195,328 without convs): i_proj, f_proj, g_proj, o_proj
// [D,D]; g_norm.weight [D]; optional i_conv1d, f_conv1d [D,1,W].
#pragma once

#include <memory>

#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/norm.h"

namespace hla::nn {

struct HGRNOptions {
  int64_t hidden_size = 1024;
  bool use_short_conv = false;
  int64_t conv_size = 4;
  double norm_eps = 1e-5;
  double initializer_range = 0.02;
};

// The model-level schedule (spec 1.6): lower_bounds [L,d] (zeros at init) -> lb [L,d] with
// P = softmax over layers, lb_l = sum_{j=1..l} P_j. So lb_0 = 0 and lb grows with depth (l/L at
// init): deeper layers are forced to keep longer memory.
Var lower_bound_schedule(const Var& lower_bounds);

// The forget gate floored at lb: log(lb + (1 - lb) exp(log_f)). log_f [..., D], lb [D].
Var apply_lower_bound(const Var& log_f, const Var& lb);

// The gates of HGRN and HGRN2 from the raw forget-gate projection f_raw [..., D]: log f with
// f = sigmoid(f_raw) floored at lb [D] when given (apply_lower_bound's f = lb + (1 - lb) f), and
// the input gate 1 - f, returned in `out` (log f in `log_f_dtype`: out, or gate_dtype(out) where
// the recurrence reads an f32 gate, HGRN2's gla). One fused op (autograd/fused.h: forget_gate,
// computed in float for bf16): only f_raw and lb stay alive for the backward.
struct Gates {
  Var log_f, one_minus_f;
};
Gates forget_gates(const Var& f_raw, const Var& lower_bound, DType out, DType log_f_dtype);

class HGRNAttention : public Mixer {
 public:
  HGRNAttention(const HGRNOptions& opt, Generator& gen);

  HGRNOptions opt;
  std::shared_ptr<Linear> i_proj, f_proj, g_proj, o_proj;
  std::shared_ptr<ShortConvolution> i_conv1d, f_conv1d;
  std::shared_ptr<GatedRMSNorm> g_norm;

 protected:
  Var mix(const MixerInput& in, MixerState* state, const Var& lower_bound) override;
};

}  // namespace hla::nn
