#include "nn/mixers/hgrn.h"

#include <vector>

#include "autograd/composites.h"
#include "autograd/fused.h"
#include "autograd/primitives.h"
#include "autograd/recurrences.h"

namespace hla::nn {

Var lower_bound_schedule(const Var& lower_bounds) {
  const int64_t L = lower_bounds.size(0);
  const Var P = transpose(softmax(transpose(lower_bounds, 0, 1)), 0, 1);  // softmax over layers
  std::vector<double> m(L * L, 0.0);  // m[l][j] = 1 for 1 <= j <= l: a cumsum that skips P_0
  for (int64_t l = 0; l < L; ++l)
    for (int64_t j = 1; j <= l; ++j) m[l * L + j] = 1.0;
  return matmul(Var(Tensor::from_values(m, {L, L}, P.dtype())), P);
}

Var apply_lower_bound(const Var& log_f, const Var& lb) {
  return log(lb + one_minus(lb) * exp(log_f));
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

Var HGRNAttention::forward(const Var& x, MixerState* state, const Var& lower_bound) {
  Var i = i_proj->forward(x), f = f_proj->forward(x);
  if (opt.use_short_conv) {
    i = run_conv(*i_conv1d, i, state, 0);
    f = run_conv(*f_conv1d, f, state, 1);
  }
  Var log_f = logsigmoid(f);
  if (lower_bound.defined()) log_f = apply_lower_bound(log_f, lower_bound);
  const Var u = swiglu(i, one_minus(exp(log_f)));  // silu(i) * (1 - f)
  auto r = hgrn(u, log_f, state ? state->recurrent : Var());
  if (state) state->recurrent = r.hT;
  return o_proj->forward(g_norm->forward(r.o, g_proj->forward(x)));
}

}  // namespace hla::nn
