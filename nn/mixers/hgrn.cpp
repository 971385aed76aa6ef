#include "nn/mixers/hgrn.h"

#include <vector>

#include "autograd/composites.h"
#include "autograd/fused.h"
#include "autograd/grad_mode.h"
#include "autograd/primitives.h"
#include "autograd/recurrences.h"
#include "nn/inspect.h"

namespace hla::nn {

namespace {
// Recording (inspect scope only): forget gate, lower bound, horizons (one "head": the mean over
// channels), state norms.
void record_hgrn(inspect::Recorder& rec, const Var& u, const Var& log_f, const Var& lower_bound,
                 const Var& h0) {
  NoGradGuard no_grad;
  rec.record("forget_gate", exp(log_f).data(),
             "forget gate f_t = exp(lam_t) per channel, after the layer's lower bound (the input "
             "gate is tied: 1 - f_t) [B,T,D]");
  if (lower_bound.defined())
    rec.record("lower_bound", lower_bound.data(),
               "this layer's forget-gate floor lb (spec 1.6; f_t >= lb, growing with depth) [D]");
  inspect::record_horizons(rec, unsqueeze(log_f, 2).data());  // [B,T,1,D]: H = 1
  inspect::record_state_norms(
      rec,
      [&](int64_t t0, int64_t t1, const Var& h, Impl impl) {
        return hgrn(slice(u, 1, t0, t1), slice(log_f, 1, t0, t1), h, impl).hT;
      },
      u.size(1), h0, "||h_t||_2 over the D channels (H = 1)");
}
}  // namespace

Var lower_bound_schedule(const Var& lower_bounds) {
  const int64_t L = lower_bounds.size(0);
  const Var P = transpose(softmax(transpose(lower_bounds, 0, 1)), 0, 1);  // softmax over layers
  std::vector<double> m(L * L, 0.0);  // m[l][j] = 1 for 1 <= j <= l: a cumsum that skips P_0
  for (int64_t l = 0; l < L; ++l)
    for (int64_t j = 1; j <= l; ++j) m[l * L + j] = 1.0;
  return matmul(Var(Tensor::from_values(m, {L, L}, P.dtype()).to(P.device())), P);
}

Var apply_lower_bound(const Var& log_f, const Var& lb) {
  return log(lb + one_minus(lb) * exp(log_f));
}

Gates forget_gates(const Var& f_raw, const Var& lower_bound, DType out, DType log_f_dtype) {
  const std::vector<Var> g = forget_gate(to_dtype(f_raw, out), lower_bound, log_f_dtype);
  return {g[0], g[1]};
}

HGRNAttention::HGRNAttention(const HGRNOptions& o, Generator& gen) : opt(o) {
  const int64_t d = o.hidden_size;
  const double std = o.initializer_range;
  i_proj = register_module("i_proj", std::make_shared<Linear>(d, d, false, gen, std));
  f_proj = register_module("f_proj", std::make_shared<Linear>(d, d, false, gen, std));
  g_proj = register_module("g_proj", std::make_shared<Linear>(d, d, false, gen, std));
  if (o.use_short_conv) {
    i_conv1d = register_module("i_conv1d", std::make_shared<ShortConvolution>(d, o.conv_size, false, gen, std));
    f_conv1d = register_module("f_conv1d", std::make_shared<ShortConvolution>(d, o.conv_size, false, gen, std));
  }
  g_norm = register_module("g_norm", std::make_shared<GatedRMSNorm>(d, o.norm_eps));
  o_proj = register_module("o_proj", std::make_shared<Linear>(d, d, false, gen, std));
}

Var HGRNAttention::mix(const MixerInput& in, MixerState* state, const Var& lower_bound) {
  const std::vector<Var> p = in.project({i_proj.get(), f_proj.get(), g_proj.get()});
  Var i = p[0], f = p[1];
  if (opt.use_short_conv) {
    i = run_conv(*i_conv1d, i, state, 0);
    f = run_conv(*f_conv1d, f, state, 1);
  }
  // HGRN's scan reads its gate in x's dtype
  const auto [log_f, one_minus_f] = forget_gates(f, lower_bound, in.x.dtype(), in.x.dtype());
  const Var u = swiglu(i, one_minus_f);  // silu(i) * (1 - f)
  const Var h0 = state ? state->recurrent : Var();
  auto r = hgrn(u, log_f, h0);
  if (inspect::Recorder* rec = inspect::active()) record_hgrn(*rec, u, log_f, lower_bound, h0);
  if (state) state->recurrent = r.hT;
  return g_norm->forward_projected(r.o, p[2], *o_proj);  // normed o recomputed
}

}  // namespace hla::nn
