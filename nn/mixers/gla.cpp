#include "nn/mixers/gla.h"

#include <cmath>
#include <limits>

#include "autograd/composites.h"
#include "autograd/fused.h"
#include "autograd/grad_mode.h"
#include "autograd/primitives.h"
#include "autograd/recurrences.h"
#include "nn/feature_map.h"
#include "nn/inspect.h"

namespace hla::nn {

namespace {
// Recording (inspect scope only): decay, horizons, state norms. Shapes as the gla op's.
void record_gla(inspect::Recorder& rec, const Var& q, const Var& k, const Var& v, const Var& g,
                const Var& h0) {
  NoGradGuard no_grad;
  rec.record("decay", exp(g).data(),
             "per-key decay alpha_t = exp(g_t) = sigmoid(gk_proj(x_t))^(1/16), the diagonal that "
             "multiplies S_{t-1} [B,T,H,K]");
  inspect::record_horizons(rec, g.data());
  inspect::record_state_norms(
      rec,
      [&](int64_t t0, int64_t t1, const Var& h, Impl impl) {
        return gla(slice(q, 1, t0, t1), slice(k, 1, t0, t1), slice(v, 1, t0, t1),
                   slice(g, 1, t0, t1), h, {.impl = impl}).hT;
      },
      q.size(1), h0, "S [K,V] per head");
}
}  // namespace

LowRankProjection::LowRankProjection(int64_t in, int64_t rank, int64_t out, Generator& gen,
                                     double std) {
  down = register_module("0", std::make_shared<Linear>(in, rank, false, gen, std));
  up = register_module("1", std::make_shared<Linear>(rank, out, true, gen, std));
}

Var LowRankProjection::forward(const Var& x) const { return up->forward(down->forward(x)); }

GatedLinearAttention::GatedLinearAttention(const GLAOptions& o, Generator& gen)
    : opt(o),
      key_dim(static_cast<int64_t>(static_cast<double>(o.hidden_size) * o.expand_k)),
      value_dim(static_cast<int64_t>(static_cast<double>(o.hidden_size) * o.expand_v)),
      num_kv_heads(o.num_kv_heads > 0 ? o.num_kv_heads : o.num_heads),
      groups(num_kv_heads > 0 ? o.num_heads / num_kv_heads : 0) {
  const int64_t d = o.hidden_size, H = o.num_heads;
  const double std = o.initializer_range;
  if (H <= 0 || key_dim % H != 0 || value_dim % H != 0)
    throw Error("GatedLinearAttention", "key_dim and value_dim divisible by num_heads",
                std::to_string(key_dim) + ", " + std::to_string(value_dim) + " with " +
                    std::to_string(H) + " heads");
  if (o.num_kv_heads < 0 || H % num_kv_heads != 0)
    throw Error("GatedLinearAttention: num_kv_heads", "0 (= num_heads) or a divisor of num_heads = " +
                std::to_string(H), std::to_string(o.num_kv_heads));
  check_feature_map("GatedLinearAttention: feature_map", o.feature_map);
  if (std::isnan(o.clamp_min) || o.clamp_min == std::numeric_limits<double>::infinity())
    throw Error("GatedLinearAttention: clamp_min", "a finite log-decay floor (-inf: no clamp)",
                std::to_string(o.clamp_min));
  // GQA: k, v and the gate are 1/G as wide (fla's key_dim_per_group, value_dim_per_group).
  const int64_t kv_key_dim = key_dim / groups, kv_value_dim = value_dim / groups;
  q_proj = register_module("q_proj", std::make_shared<Linear>(d, key_dim, false, gen, std));
  k_proj = register_module("k_proj", std::make_shared<Linear>(d, kv_key_dim, false, gen, std));
  v_proj = register_module("v_proj", std::make_shared<Linear>(d, kv_value_dim, false, gen, std));
  if (o.use_output_gate)
    g_proj = register_module("g_proj", std::make_shared<Linear>(d, value_dim, false, gen, std));
  if (o.use_short_conv) {
    q_conv1d = register_module("q_conv1d", std::make_shared<ShortConvolution>(key_dim, o.conv_size, true, gen, std));
    k_conv1d = register_module("k_conv1d", std::make_shared<ShortConvolution>(kv_key_dim, o.conv_size, true, gen, std));
    v_conv1d = register_module("v_conv1d", std::make_shared<ShortConvolution>(kv_value_dim, o.conv_size, true, gen, std));
  }
  gk_proj = register_module(
      "gk_proj", std::make_shared<LowRankProjection>(d, o.gate_low_rank_dim, kv_key_dim, gen, std));
  o_proj = register_module("o_proj", std::make_shared<Linear>(value_dim, d, false, gen, std));
  if (o.use_output_gate)
    g_norm_swish_gate = register_module("g_norm_swish_gate",
                                        std::make_shared<GatedRMSNorm>(value_dim / H, o.norm_eps));
  else
    g_norm = register_module("g_norm", std::make_shared<RMSNorm>(value_dim / H, o.norm_eps));
}

Var GatedLinearAttention::mix(const MixerInput& in, MixerState* state, const Var&) {
  const int64_t H = opt.num_heads;
  std::vector<const Linear*> projs{q_proj.get(), k_proj.get(), v_proj.get(), gk_proj->down.get()};
  if (opt.use_output_gate) projs.push_back(g_proj.get());
  const std::vector<Var> p = in.project(projs);
  Var q = p[0], k = p[1], v = p[2];
  if (opt.use_short_conv) {
    q = run_conv(*q_conv1d, q, state, 0);
    k = run_conv(*k_conv1d, k, state, 1);
    v = run_conv(*v_conv1d, v, state, 2);
  }
  // The gate reads x, not the conv output; /16 biases the decay towards 1 (long memory). One
  // fused op (computed in float for bf16, g in gate_dtype: f32 under bf16, which the recurrence
  // reads as is): only the projection stays alive for the backward.
  const Var g = gla_gate(gk_proj->up->forward(p[3]), opt.gate_logit_normalizer, opt.clamp_min,
                         gate_dtype(in.x.dtype()));
  // The feature map comes after the gate (fla's order); GQA repeats each kv head G times.
  const Var qh = apply_feature_map(opt.feature_map, split_heads(q, H));
  const Var kh = repeat_heads(apply_feature_map(opt.feature_map, split_heads(k, num_kv_heads)), groups);
  const Var vh = repeat_heads(split_heads(v, num_kv_heads), groups);
  const Var gh = repeat_heads(split_heads(g, num_kv_heads), groups);
  const Var h0 = state ? state->recurrent : Var();
  auto r = gla(qh, kh, vh, gh, h0);
  if (inspect::Recorder* rec = inspect::active()) record_gla(*rec, qh, kh, vh, gh, h0);
  if (state) state->recurrent = r.hT;
  // the per-head norm and o_proj over the merged heads (the normed heads recomputed in the
  // backward)
  if (!opt.use_output_gate) return g_norm->forward_projected(r.o, *o_proj);
  return g_norm_swish_gate->forward_projected(r.o, split_heads(p[4], H), *o_proj);
}

}  // namespace hla::nn
