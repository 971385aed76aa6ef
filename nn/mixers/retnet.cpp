#include "nn/mixers/retnet.h"

#include "autograd/primitives.h"
#include <cmath>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/recurrences.h"
#include "nn/feature_map.h"
#include "nn/inspect.h"
#include "nn/rotary.h"

namespace hla::nn {

namespace {
// Recording (inspect scope only): the fixed decays, horizons, state norms.
void record_retnet(inspect::Recorder& rec, const Var& q, const Var& k, const Var& v, const Var& h0) {
  NoGradGuard no_grad;
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2);
  std::vector<double> gamma(H), log_gamma(B * T * H);
  for (int64_t h = 0; h < H; ++h) gamma[h] = 1.0 - std::pow(2.0, -5.0 - static_cast<double>(h));
  for (int64_t i = 0; i < B * T * H; ++i) log_gamma[i] = std::log(gamma[i % H]);
  rec.record("decay", Tensor::from_values(gamma, {H}),
             "fixed per-head decay gamma_h = 1 - 2^(-5-h) (nothing learned; the same at every step) [H]");
  inspect::record_horizons(rec, Tensor::from_values(log_gamma, {B, T, H}));
  inspect::record_state_norms(
      rec,
      [&](int64_t t0, int64_t t1, const Var& h, Impl impl) {
        return retention(slice(q, 1, t0, t1), slice(k, 1, t0, t1), slice(v, 1, t0, t1), h,
                         {.impl = impl}).hT;
      },
      T, h0, "S [K,V] per head");
}
}  // namespace

MultiScaleRetention::MultiScaleRetention(const RetNetOptions& o, Generator& gen)
    : opt(o),
      key_dim(static_cast<int64_t>(static_cast<double>(o.hidden_size) * o.expand_k)),
      value_dim(static_cast<int64_t>(static_cast<double>(o.hidden_size) * o.expand_v)),
      num_kv_heads(o.num_kv_heads > 0 ? o.num_kv_heads : o.num_heads),
      groups(num_kv_heads > 0 ? o.num_heads / num_kv_heads : 0) {
  const int64_t d = o.hidden_size, H = o.num_heads;
  const double std = o.initializer_range;
  if (H <= 0 || key_dim % H != 0 || value_dim % H != 0 || (key_dim / H) % 2 != 0)
    throw Error("MultiScaleRetention", "key_dim and value_dim divisible by num_heads, even d_k",
                std::to_string(key_dim) + ", " + std::to_string(value_dim) + " with " +
                    std::to_string(H) + " heads");
  if (o.num_kv_heads < 0 || H % num_kv_heads != 0)
    throw Error("MultiScaleRetention: num_kv_heads", "0 (= num_heads) or a divisor of num_heads = " +
                std::to_string(H), std::to_string(o.num_kv_heads));
  check_feature_map("MultiScaleRetention: feature_map", o.feature_map);
  // GQA: k and v are 1/G as wide (fla's key_dim_per_group, value_dim_per_group).
  q_proj = register_module("q_proj", std::make_shared<Linear>(d, key_dim, false, gen, std));
  k_proj = register_module("k_proj", std::make_shared<Linear>(d, key_dim / groups, false, gen, std));
  v_proj = register_module("v_proj", std::make_shared<Linear>(d, value_dim / groups, false, gen, std));
  if (o.use_output_gate)
    g_proj = register_module("g_proj", std::make_shared<Linear>(d, value_dim, false, gen, std));
  o_proj = register_module("o_proj", std::make_shared<Linear>(value_dim, d, false, gen, std));
  if (o.use_output_gate)
    g_norm_swish_gate = register_module("g_norm_swish_gate",
                                        std::make_shared<GatedRMSNorm>(value_dim / H, o.norm_eps));
  else
    g_norm = register_module("g_norm", std::make_shared<RMSNorm>(value_dim / H, o.norm_eps));
}

Var MultiScaleRetention::mix(const MixerInput& in, MixerState* state, const Var&) {
  const int64_t H = opt.num_heads;
  const int64_t offset = state ? state->position : 0;
  std::vector<const Linear*> projs{q_proj.get(), k_proj.get(), v_proj.get()};
  if (opt.use_output_gate) projs.push_back(g_proj.get());
  const std::vector<Var> p = in.project(projs);
  // Feature map, then RoPE, then the GQA repeat (fla's order).
  const Var q = apply_rotary(apply_feature_map(opt.feature_map, split_heads(p[0], H)), offset);
  const Var k = repeat_heads(
      apply_rotary(apply_feature_map(opt.feature_map, split_heads(p[1], num_kv_heads)), offset),
      groups);
  const Var v = repeat_heads(split_heads(p[2], num_kv_heads), groups);
  const Var h0 = state ? state->recurrent : Var();
  auto r = retention(q, k, v, h0);
  if (inspect::Recorder* rec = inspect::active()) record_retnet(*rec, q, k, v, h0);
  if (state) {
    state->recurrent = r.hT;
    state->position += in.x.size(1);
  }
  // the per-head norm and o_proj over the merged heads (the normed heads recomputed in the
  // backward)
  if (!opt.use_output_gate) return g_norm->forward_projected(r.o, *o_proj);
  return g_norm_swish_gate->forward_projected(r.o, split_heads(p[3], H), *o_proj);
}

}  // namespace hla::nn
