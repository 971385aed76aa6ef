#include "nn/mixers/gated_deltanet.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/composites.h"
#include "autograd/primitives.h"
#include "autograd/grad_mode.h"
#include "autograd/recurrences.h"
#include "nn/inspect.h"

namespace hla::nn {

namespace {
// A_log = log(A), A ~ U(0, 16): decay rates spread over (0, 16].
Tensor init_A_log(int64_t H, Generator& gen) {
  std::vector<double> v(H);
  for (auto& a : v) a = std::log(16.0 * (1.0 - gen.uniform()));  // (0, 16]: never log 0
  return Tensor::from_values(v, {H});
}
// dt ~ exp(U(log 1e-3, log 1e-1)) clamped >= 1e-4; dt_bias = softplus^-1(dt) = dt + log(-expm1(-dt)).
Tensor init_dt_bias(int64_t H, Generator& gen) {
  std::vector<double> v(H);
  for (auto& b : v) {
    const double lo = std::log(1e-3), hi = std::log(1e-1);
    const double dt = std::max(std::exp(lo + (hi - lo) * gen.uniform()), 1e-4);
    b = dt + std::log(-std::expm1(-dt));
  }
  return Tensor::from_values(v, {H});
}

// Recording (inspect scope only): alpha, beta, horizons, state norms.
void record_gated_deltanet(inspect::Recorder& rec, const Var& q, const Var& k, const Var& v,
                           const Var& g, const Var& beta, const Var& h0) {
  NoGradGuard no_grad;
  rec.record("alpha", exp(g).data(),
             "decay alpha_t = exp(g_t), g_t = -exp(A_log) softplus(a_proj(x_t) + dt_bias), per "
             "value head: S' = alpha_t S_{t-1} [B,T,HV]");
  rec.record("beta", beta.data(),
             "write strength beta_t = sigmoid(b_proj(x_t)) (x2 with allow_neg_eigval) per value head "
             "[B,T,HV]");
  inspect::record_horizons(rec, g.data());
  inspect::record_state_norms(
      rec,
      [&](int64_t t0, int64_t t1, const Var& h, Impl impl) {
        return gated_delta_rule(slice(q, 1, t0, t1), slice(k, 1, t0, t1), slice(v, 1, t0, t1),
                                slice(g, 1, t0, t1), slice(beta, 1, t0, t1), h,
                                {.impl = impl, .l2norm_qk = true}).hT;
      },
      q.size(1), h0, "S [K,V] per head");
}
}  // namespace

GatedDeltaNet::GatedDeltaNet(const GatedDeltaNetOptions& o, Generator& gen)
    : opt(o),
      key_dim(o.num_heads * o.head_dim),
      value_dim((o.num_v_heads > 0 ? o.num_v_heads : o.num_heads) *
                static_cast<int64_t>(static_cast<double>(o.head_dim) * o.expand_v)),
      num_v_heads(o.num_v_heads > 0 ? o.num_v_heads : o.num_heads) {
  const int64_t d = o.hidden_size, H = o.num_heads, HV = num_v_heads;
  const double std = o.initializer_range;
  if (H <= 0 || o.head_dim <= 0 || value_dim <= 0)
    throw Error("GatedDeltaNet", "positive num_heads, head_dim and head_dim * expand_v",
                std::to_string(H) + ", " + std::to_string(o.head_dim) + ", " + std::to_string(o.expand_v));
  if (o.num_v_heads < 0 || HV % H != 0)
    throw Error("GatedDeltaNet: num_v_heads",
                "0 (= num_heads) or a multiple of num_heads = " + std::to_string(H),
                std::to_string(o.num_v_heads));
  q_proj = register_module("q_proj", std::make_shared<Linear>(d, key_dim, false, gen, std));
  k_proj = register_module("k_proj", std::make_shared<Linear>(d, key_dim, false, gen, std));
  v_proj = register_module("v_proj", std::make_shared<Linear>(d, value_dim, false, gen, std));
  // The decay and the write strength are per value head.
  a_proj = register_module("a_proj", std::make_shared<Linear>(d, HV, false, gen, std));
  b_proj = register_module("b_proj", std::make_shared<Linear>(d, HV, false, gen, std));
  A_log = register_parameter("A_log", init_A_log(HV, gen));
  dt_bias = register_parameter("dt_bias", init_dt_bias(HV, gen));
  if (o.use_short_conv) {
    q_conv1d = register_module("q_conv1d", std::make_shared<ShortConvolution>(key_dim, o.conv_size, true, gen, std));
    k_conv1d = register_module("k_conv1d", std::make_shared<ShortConvolution>(key_dim, o.conv_size, true, gen, std));
    v_conv1d = register_module("v_conv1d", std::make_shared<ShortConvolution>(value_dim, o.conv_size, true, gen, std));
  }
  if (o.use_gate) {
    g_proj = register_module("g_proj", std::make_shared<Linear>(d, value_dim, false, gen, std));
    o_norm_gated = register_module("o_norm", std::make_shared<GatedRMSNorm>(value_dim / HV, o.norm_eps));
  } else {
    o_norm = register_module("o_norm", std::make_shared<RMSNorm>(value_dim / HV, o.norm_eps));
  }
  o_proj = register_module("o_proj", std::make_shared<Linear>(value_dim, d, false, gen, std));
}

Var GatedDeltaNet::mix(const MixerInput& in, MixerState* state, const Var&) {
  const int64_t H = opt.num_heads, HV = num_v_heads;
  const DType dt = in.x.dtype();
  std::vector<const Linear*> projs{q_proj.get(), k_proj.get(), v_proj.get(), a_proj.get(),
                                   b_proj.get()};
  if (opt.use_gate) projs.push_back(g_proj.get());
  const std::vector<Var> p = in.project(projs);
  Var q = p[0], k = p[1], v = p[2];
  if (opt.use_short_conv) {  // the convs apply the silu
    q = run_conv(*q_conv1d, q, state, 0);
    k = run_conv(*k_conv1d, k, state, 1);
    v = run_conv(*v_conv1d, v, state, 2);
  } else {
    q = silu(q), k = silu(k), v = silu(v);
  }
  // Step size softplus(a + dt_bias) times the negative rate -exp(A_log), in gate_dtype.
  const Var a = to_dtype(p[3], gate_dtype(dt));
  const Var rate = exp(to_dtype(A_log, a.dtype()));
  const Var g = to_dtype(-rate * softplus(a + to_dtype(dt_bias, a.dtype())), dt);
  Var beta = sigmoid(p[4]);
  if (opt.allow_neg_eigval) beta = beta * 2.0;
  // GVA: each q/k head serves HV / H consecutive value heads.
  const Var qh = repeat_heads(split_heads(q, H), HV / H);
  const Var kh = repeat_heads(split_heads(k, H), HV / H);
  const Var vh = split_heads(v, HV);
  const Var h0 = state ? state->recurrent : Var();
  auto r = gated_delta_rule(qh, kh, vh, g, beta, h0, {.l2norm_qk = true});
  if (inspect::Recorder* rec = inspect::active())
    record_gated_deltanet(*rec, qh, kh, vh, g, beta, h0);
  if (state) state->recurrent = r.hT;
  // the per-head norm and o_proj over the merged heads (the normed heads recomputed in the
  // backward)
  return opt.use_gate
             ? o_norm_gated->forward_projected(r.o, split_heads(p[5], HV), *o_proj)
             : o_norm->forward_projected(r.o, *o_proj);
}

}  // namespace hla::nn
