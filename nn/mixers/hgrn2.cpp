#include "nn/mixers/hgrn2.h"

#include "autograd/composites.h"
#include "autograd/primitives.h"
#include "autograd/grad_mode.h"
#include "autograd/recurrences.h"
#include "nn/inspect.h"
#include "nn/mixers/hgrn.h"

namespace hla::nn {

namespace {
// Recording (inspect scope only): forget gate, lower bound, horizons, state norms.
void record_hgrn2(inspect::Recorder& rec, const Var& q, const Var& k, const Var& v,
                  const Var& log_f, const Var& lower_bound, const Var& h0) {
  NoGradGuard no_grad;
  rec.record("decay", exp(log_f).data(),
             "per-key decay (forget gate) f_t = exp(lam_t), after the layer's lower bound; the key "
             "is 1 - f_t [B,T,H,K]");
  if (lower_bound.defined())
    rec.record("lower_bound", reshape(lower_bound, {q.size(2), q.size(3)}).data(),
               "this layer's forget-gate floor lb (spec 1.6; f_t >= lb), per head and key [H,K]");
  inspect::record_horizons(rec, log_f.data());
  inspect::record_state_norms(
      rec,
      [&](int64_t t0, int64_t t1, const Var& h, Impl impl) {
        return gla(slice(q, 1, t0, t1), slice(k, 1, t0, t1), slice(v, 1, t0, t1),
                   slice(log_f, 1, t0, t1), h, {.impl = impl}).hT;
      },
      q.size(1), h0, "S [K,V] per head");
}
}  // namespace

HGRN2Attention::HGRN2Attention(const HGRN2Options& o, Generator& gen) : opt(o) {
  const int64_t d = o.hidden_size;
  const double std = o.initializer_range;
  if (o.expand_ratio <= 0 || d % o.expand_ratio != 0)
    throw Error("HGRN2Attention", "hidden_size divisible by expand_ratio",
                std::to_string(d) + " / " + std::to_string(o.expand_ratio));
  num_heads = d / o.expand_ratio;
  q_proj = register_module("q_proj", std::make_shared<Linear>(d, d, false, gen, std));
  f_proj = register_module("f_proj", std::make_shared<Linear>(d, d, false, gen, std));
  i_proj = register_module("i_proj", std::make_shared<Linear>(d, d, false, gen, std));
  if (o.use_short_conv) {
    q_conv1d = register_module("q_conv1d", std::make_shared<ShortConvolution>(d, o.conv_size, false, gen, std));
    f_conv1d = register_module("f_conv1d", std::make_shared<ShortConvolution>(d, o.conv_size, false, gen, std));
    i_conv1d = register_module("i_conv1d", std::make_shared<ShortConvolution>(d, o.conv_size, false, gen, std));
  }
  g_norm = register_module("g_norm", std::make_shared<RMSNorm>(d, 1e-5));
  o_proj = register_module("o_proj", std::make_shared<Linear>(d, d, false, gen, std));
}

Var HGRN2Attention::mix(const MixerInput& in, MixerState* state, const Var& lower_bound) {
  const std::vector<Var> p = in.project({q_proj.get(), f_proj.get(), i_proj.get()});
  Var q = p[0], f = p[1], v = p[2];
  if (opt.use_short_conv) {
    q = run_conv(*q_conv1d, q, state, 0);
    f = run_conv(*f_conv1d, f, state, 1);
    v = run_conv(*i_conv1d, v, state, 2);
  }
  q = silu(q);
  // k = 1 - f; log f in gate_dtype, which gla reads as is (f32 under bf16)
  const DType dt = in.x.dtype();
  const auto [log_f, k] = forget_gates(f, lower_bound, dt, gate_dtype(dt));
  const int64_t H = num_heads;
  const Var qh = split_heads(q, H), kh = split_heads(k, H), vh = split_heads(v, H);
  const Var gh = split_heads(log_f, H), h0 = state ? state->recurrent : Var();
  auto r = gla(qh, kh, vh, gh, h0);
  if (inspect::Recorder* rec = inspect::active()) record_hgrn2(*rec, qh, kh, vh, gh, lower_bound, h0);
  if (state) state->recurrent = r.hT;
  return g_norm->forward_projected(merge_heads(r.o), *o_proj);  // normed o recomputed backward
}

}  // namespace hla::nn
