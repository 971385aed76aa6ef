#include "autograd/step_rule.h"

#include "autograd/primitives.h"

namespace hla {

RecurrenceResult run_step_rule(const StepRule& rule, const std::vector<Var>& inputs,
                               const Var& h0) {
  const std::string op = "step rule " + rule.name;
  if (!h0.defined())
    throw Error(op, "an initial state h0", "none", "pass zeros of the state's shape");
  if (inputs.empty()) throw Error(op, "at least one input [B,T,...]", "none");
  const int64_t T = inputs[0].dim() >= 2 ? inputs[0].size(1) : -1;
  for (const Var& x : inputs)
    if (x.dim() < 2 || x.size(1) != T)
      throw Error(op, "inputs [B,T,...] with one T=" + std::to_string(T), to_string(x.shape()));
  Var state = h0;
  std::vector<Var> outs;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<Var> xt;
    for (const Var& x : inputs) xt.push_back(select(x, 1, t));
    auto [next, out] = rule.step(state, xt);
    state = next;
    outs.push_back(out);
  }
  if (outs.empty()) throw Error(op, "T >= 1", "T = 0");
  return {stack(outs, 1), state};
}

StepRule gla_step_rule() {
  return {"gla", [](const Var& S, const std::vector<Var>& x) {
            // S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T;  o_t = S_t^T q_t
            const Var S_new = unsqueeze(exp(x[3]), -1) * S + unsqueeze(x[1], -1) * unsqueeze(x[2], -2);
            return std::make_pair(S_new, sum(unsqueeze(x[0], -1) * S_new, {-2}));
          }};
}

StepRule gated_delta_step_rule() {
  return {"gated_delta", [](const Var& S, const std::vector<Var>& x) {
            // S' = exp(g_t) S;  e = v_t - S'^T k_t;  S_t = S' + beta_t k_t e^T;  o_t = S_t^T q_t
            const Var& q = x[0];
            const Var& k = x[1];
            const Var& v = x[2];
            const Var decayed = unsqueeze(unsqueeze(exp(x[3]), -1), -1) * S;
            const Var e = v - sum(unsqueeze(k, -1) * decayed, {-2});
            const Var S_new = decayed + unsqueeze(unsqueeze(x[4], -1) * k, -1) * unsqueeze(e, -2);
            return std::make_pair(S_new, sum(unsqueeze(q, -1) * S_new, {-2}));
          }};
}

}  // namespace hla
