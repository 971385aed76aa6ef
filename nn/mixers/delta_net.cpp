#include "nn/mixers/delta_net.h"

#include "autograd/composites.h"
#include "autograd/primitives.h"
#include "autograd/recurrences.h"

namespace hla::nn {

DeltaNet::DeltaNet(const DeltaNetOptions& o, Generator& gen)
    : opt(o),
      key_dim(static_cast<int64_t>(static_cast<double>(o.hidden_size) * o.expand_k)),
      value_dim(static_cast<int64_t>(static_cast<double>(o.hidden_size) * o.expand_v)) {
  const int64_t d = o.hidden_size, H = o.num_heads;
  const double std = o.initializer_range;
  if (H <= 0 || key_dim % H != 0 || value_dim % H != 0)
    throw Error("DeltaNet", "key_dim and value_dim divisible by num_heads",
                std::to_string(key_dim) + ", " + std::to_string(value_dim) + " with " +
                    std::to_string(H) + " heads");
  q_proj = register_module("q_proj", std::make_shared<Linear>(d, key_dim, false, gen, std));
  k_proj = register_module("k_proj", std::make_shared<Linear>(d, key_dim, false, gen, std));
  v_proj = register_module("v_proj", std::make_shared<Linear>(d, value_dim, false, gen, std));
  b_proj = register_module("b_proj", std::make_shared<Linear>(d, H, false, gen, std));
  if (o.use_short_conv) {
    q_conv1d = register_module("q_conv1d", std::make_shared<ShortConvolution>(key_dim, o.conv_size, true, gen, std));
    k_conv1d = register_module("k_conv1d", std::make_shared<ShortConvolution>(key_dim, o.conv_size, true, gen, std));
    v_conv1d = register_module("v_conv1d", std::make_shared<ShortConvolution>(value_dim, o.conv_size, true, gen, std));
  }
  if (o.use_gate) {
    g_proj = register_module("g_proj", std::make_shared<Linear>(d, value_dim, false, gen, std));
    o_norm_gated = register_module("o_norm", std::make_shared<GatedRMSNorm>(value_dim / H, o.norm_eps));
  } else {
    o_norm = register_module("o_norm", std::make_shared<RMSNorm>(value_dim / H, o.norm_eps));
  }
  o_proj = register_module("o_proj", std::make_shared<Linear>(value_dim, d, false, gen, std));
}

Var DeltaNet::forward(const Var& x, MixerState* state, const Var&) {
  const int64_t H = opt.num_heads;
  Var q = q_proj->forward(x), k = k_proj->forward(x), v = v_proj->forward(x);
  if (opt.use_short_conv) {  // the convs apply the silu
    q = run_conv(*q_conv1d, q, state, 0);
    k = run_conv(*k_conv1d, k, state, 1);
    v = run_conv(*v_conv1d, v, state, 2);
  } else {
    q = silu(q), k = silu(k), v = silu(v);
  }
  Var beta = sigmoid(b_proj->forward(x));
  if (opt.allow_neg_eigval) beta = beta * 2.0;
  auto r = delta_rule(split_heads(q, H), split_heads(k, H), split_heads(v, H), beta,
                      state ? state->recurrent : Var(), {.l2norm_qk = true});
  if (state) state->recurrent = r.hT;
  const Var o = opt.use_gate ? o_norm_gated->forward(r.o, split_heads(g_proj->forward(x), H))
                             : o_norm->forward(r.o);
  return o_proj->forward(merge_heads(o));
}

}  // namespace hla::nn
