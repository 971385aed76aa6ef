#include "nn/mixers/delta_net.h"

#include "autograd/composites.h"
#include "autograd/primitives.h"
#include "autograd/grad_mode.h"
#include "autograd/recurrences.h"
#include "nn/feature_map.h"
#include "nn/inspect.h"

namespace hla::nn {

namespace {
// Recording (inspect scope only): beta and state norms. DeltaNet has no decay (alpha = 1), so no
// horizon is recorded: it forgets only by overwriting along k_t.
void record_delta_net(inspect::Recorder& rec, const Var& q, const Var& k, const Var& v,
                      const Var& beta, const Var& h0, bool l2norm_qk) {
  NoGradGuard no_grad;
  rec.record("beta", beta.data(),
             "write strength beta_t = sigmoid(b_proj(x_t)) (1 without use_beta; x2 with "
             "allow_neg_eigval) per head; "
             "DeltaNet has no decay (alpha = 1) [B,T,H]");
  inspect::record_state_norms(
      rec,
      [&](int64_t t0, int64_t t1, const Var& h, Impl impl) {
        return delta_rule(slice(q, 1, t0, t1), slice(k, 1, t0, t1), slice(v, 1, t0, t1),
                          slice(beta, 1, t0, t1), h, {.impl = impl, .l2norm_qk = l2norm_qk}).hT;
      },
      q.size(1), h0, "S [K,V] per head");
}
}  // namespace

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
  if (o.qk_activation != "silu" && o.qk_activation != "relu" && o.qk_activation != "elu" &&
      o.qk_activation != "identity")
    throw Error("DeltaNet: qk_activation", "one of silu, relu, elu, identity",
                "\"" + o.qk_activation + "\"");
  if (o.qk_norm != "l2" && o.qk_norm != "sum")
    throw Error("DeltaNet: qk_norm", "l2 or sum", "\"" + o.qk_norm + "\"");
  // silu is fused into the q/k convs; the other activations come after the reshape to heads.
  const bool qk_silu = o.qk_activation == "silu";
  q_proj = register_module("q_proj", std::make_shared<Linear>(d, key_dim, false, gen, std));
  k_proj = register_module("k_proj", std::make_shared<Linear>(d, key_dim, false, gen, std));
  v_proj = register_module("v_proj", std::make_shared<Linear>(d, value_dim, false, gen, std));
  if (o.use_beta) b_proj = register_module("b_proj", std::make_shared<Linear>(d, H, false, gen, std));
  if (o.use_short_conv) {
    q_conv1d = register_module("q_conv1d", std::make_shared<ShortConvolution>(key_dim, o.conv_size, qk_silu, gen, std));
    k_conv1d = register_module("k_conv1d", std::make_shared<ShortConvolution>(key_dim, o.conv_size, qk_silu, gen, std));
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

Var DeltaNet::mix(const MixerInput& in, MixerState* state, const Var&) {
  const int64_t H = opt.num_heads;
  const bool qk_silu = opt.qk_activation == "silu";
  const Var& x = in.x;
  std::vector<const Linear*> projs{q_proj.get(), k_proj.get(), v_proj.get()};
  const size_t gate_at = projs.size();  // g_proj's output, with use_gate
  if (opt.use_gate) projs.push_back(g_proj.get());
  const size_t beta_at = projs.size();  // b_proj's output, with use_beta
  if (opt.use_beta) projs.push_back(b_proj.get());
  const std::vector<Var> p = in.project(projs);
  Var q = p[0], k = p[1], v = p[2];
  if (opt.use_short_conv) {  // the convs apply the silu (q and k only for qk_activation silu)
    q = run_conv(*q_conv1d, q, state, 0);
    k = run_conv(*k_conv1d, k, state, 1);
    v = run_conv(*v_conv1d, v, state, 2);
  } else {
    if (qk_silu) q = silu(q), k = silu(k);
    v = silu(v);
  }
  Var qh = split_heads(q, H), kh = split_heads(k, H);
  const Var vh = split_heads(v, H);
  if (opt.qk_activation == "relu") {
    qh = relu(qh), kh = relu(kh);
  } else if (opt.qk_activation == "elu") {
    qh = elu_p1(qh), kh = elu_p1(kh);
  }
  if (opt.qk_norm == "sum") {  // q / sum_i q_i per head (l2 happens inside the op)
    qh = qh / sum(qh, {-1}, true);
    kh = kh / sum(kh, {-1}, true);
  }
  Var beta = opt.use_beta ? sigmoid(p[beta_at])
                          : Var(Tensor::ones({x.size(0), x.size(1), H}, x.dtype(), x.device()));
  if (opt.allow_neg_eigval) beta = beta * 2.0;
  const bool l2 = opt.qk_norm == "l2";
  const Var h0 = state ? state->recurrent : Var();
  auto r = delta_rule(qh, kh, vh, beta, h0, {.l2norm_qk = l2});
  if (inspect::Recorder* rec = inspect::active()) record_delta_net(*rec, qh, kh, vh, beta, h0, l2);
  if (state) state->recurrent = r.hT;
  // the per-head norm and o_proj over the merged heads (the normed heads recomputed in the
  // backward)
  return opt.use_gate
             ? o_norm_gated->forward_projected(r.o, split_heads(p[gate_at], H), *o_proj)
             : o_norm->forward_projected(r.o, *o_proj);
}

}  // namespace hla::nn
