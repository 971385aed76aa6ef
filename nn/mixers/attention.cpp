#include "nn/mixers/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "autograd/fused.h"
#include "autograd/primitives.h"
#include "autograd/recurrences.h"
#include "nn/inspect.h"
#include "nn/rotary.h"

namespace hla::nn {

namespace {
// [B,T,H_kv,d] -> [B,T,H_kv*groups,d]: kv head j serves query heads j*groups .. j*groups+groups-1.
Var repeat_kv(const Var& x, int64_t groups) {
  if (groups == 1) return x;
  const int64_t B = x.size(0), T = x.size(1), Hkv = x.size(2), d = x.size(3);
  return reshape(expand(unsqueeze(x, 3), {B, T, Hkv, groups, d}), {B, T, Hkv * groups, d});
}

// Queries q [B,Tq,H,d] that are the last Tq of the Tk positions of k, v [B,Tk,H,d] (the cached
// tokens, then these): the decoding path, where queries and keys have different lengths.
Var attend_cached(const Var& q, const Var& k, const Var& v, int64_t window) {
  const int64_t Tq = q.size(1), Tk = k.size(1), d = q.size(3);
  // Additive mask [Tq,Tk]: query i sits at key position Tk - Tq + i.
  std::vector<double> mask(Tq * Tk, 0.0);
  for (int64_t i = 0; i < Tq; ++i)
    for (int64_t j = 0; j < Tk; ++j) {
      const int64_t pos = Tk - Tq + i;
      if (j > pos || (window > 0 && j <= pos - window))
        mask[i * Tk + j] = -std::numeric_limits<double>::infinity();
    }
  const Var scores = matmul(permute(q, {0, 2, 1, 3}), permute(k, {0, 2, 3, 1})) *
                         (1.0 / std::sqrt(static_cast<double>(d))) +
                     Var(Tensor::from_values(mask, {Tq, Tk}, q.dtype()).to(q.device()));
  return permute(matmul(softmax(scores), permute(v, {0, 2, 1, 3})), {0, 2, 1, 3});
}
}  // namespace

Attention::Attention(const AttentionLayerOptions& o, Generator& gen)
    : opt(o), num_kv_heads(o.num_kv_heads > 0 ? o.num_kv_heads : o.num_heads) {
  const int64_t d = o.hidden_size, H = o.num_heads;
  const double std = o.initializer_range;
  if (H <= 0 || d % H != 0 || (d / H) % 2 != 0 || H % num_kv_heads != 0)
    throw Error("Attention", "hidden_size divisible by num_heads (even head dim), num_heads "
                "divisible by num_kv_heads",
                std::to_string(d) + ", " + std::to_string(H) + ", " + std::to_string(num_kv_heads));
  head_dim = d / H;
  q_proj = register_module("q_proj", std::make_shared<Linear>(d, d, o.qkv_bias, gen, std));
  k_proj = register_module("k_proj", std::make_shared<Linear>(d, num_kv_heads * head_dim, o.qkv_bias, gen, std));
  v_proj = register_module("v_proj", std::make_shared<Linear>(d, num_kv_heads * head_dim, o.qkv_bias, gen, std));
  o_proj = register_module("o_proj", std::make_shared<Linear>(d, d, false, gen, std));
}

Var Attention::mix(const MixerInput& in, MixerState* state, const Var&) {
  const int64_t offset = state ? state->position : 0;
  const std::vector<Var> p = in.project({q_proj.get(), k_proj.get(), v_proj.get()});
  const Var q = apply_rotary(split_heads(p[0], opt.num_heads), offset, opt.rope_theta);
  Var k = apply_rotary(split_heads(p[1], num_kv_heads), offset, opt.rope_theta);
  Var v = split_heads(p[2], num_kv_heads);
  const bool cached = state && state->keys.defined();
  if (cached) {
    k = concat({state->keys, k}, 1);
    v = concat({state->values, v}, 1);
  }
  const Var o = cached ? attend_cached(q, repeat_kv(k, opt.num_heads / num_kv_heads),
                                       repeat_kv(v, opt.num_heads / num_kv_heads), opt.window_size)
                       : softmax_attention(q, k, v, {.causal = true, .window = opt.window_size});
  if (inspect::Recorder* rec = inspect::active()) {
    // From the rotated q and k actually attended (the cache included): no graph is involved.
    const inspect::AttentionStats s = inspect::attention_stats(q.data(), k.data(), opt.window_size);
    rec->record("entropy", s.entropy,
                "attention entropy -sum_j A_tj log A_tj per query and head, in nats (0: one key; "
                "log(t+1): uniform over the causal past) [B,T,H]");
    rec->record("distance", s.distance,
                "mean attended distance sum_j A_tj (t - j) per query and head, in tokens [B,T,H]");
  }
  if (state) {
    // With a window the cache keeps the last `window` tokens (as fla); older ones are never read.
    const int64_t T = k.size(1);
    const int64_t keep = opt.window_size > 0 ? std::min(T, opt.window_size) : T;
    state->keys = slice(k, 1, T - keep, T);
    state->values = slice(v, 1, T - keep, T);
    state->position += in.x.size(1);
  }
  return o_proj->forward(merge_heads(o));
}

}  // namespace hla::nn
