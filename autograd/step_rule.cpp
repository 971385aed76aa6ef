#include "autograd/step_rule.h"

#include <cmath>

#include "autograd/primitives.h"

namespace hla {

namespace {
thread_local StepRecorder* t_recorder = nullptr;
thread_local const StepRule* t_running_rule = nullptr;  // the rule run_step_rule is stepping

// Sets t_running_rule for the duration of run_step_rule (restored on exceptions too).
struct RunningRule {
  explicit RunningRule(const StepRule* r) : prev(t_running_rule) { t_running_rule = r; }
  ~RunningRule() { t_running_rule = prev; }
  const StepRule* prev;
};
}  // namespace

StepRecorder* step_recorder() { return t_recorder; }

StepRecorder* set_step_recorder(StepRecorder* recorder) {
  StepRecorder* prev = t_recorder;
  t_recorder = recorder;
  return prev;
}

void record_step(const std::string& name, const Var& value_t, const std::string& description) {
  if (!t_recorder || !t_running_rule) return;
  t_recorder->record_step(t_running_rule->name + "/" + name, value_t.data(), description);
}

Tensor state_norm(const Tensor& state) {
  if (state.dim() < 2) throw Error("state_norm", "a state [B,H,...] or [B,D]", to_string(state.shape()));
  const int64_t B = state.size(0);
  const int64_t H = state.dim() == 2 ? 1 : state.size(1);
  const std::vector<double> v = state.to_vector<double>();
  const int64_t per = static_cast<int64_t>(v.size()) / (B * H);
  std::vector<float> out(B * H);
  for (int64_t i = 0; i < B * H; ++i) {
    double s = 0;
    for (int64_t j = 0; j < per; ++j) s += v[i * per + j] * v[i * per + j];
    out[i] = static_cast<float>(std::sqrt(s));
  }
  return Tensor::from_vector(out, {B, H});
}

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
  RunningRule running(t_recorder ? &rule : nullptr);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<Var> xt;
    for (const Var& x : inputs) xt.push_back(select(x, 1, t));
    auto [next, out] = rule.step(state, xt);
    state = next;
    outs.push_back(out);
    if (t_recorder)
      t_recorder->record_step(rule.name + "/state_norm", state_norm(state.data()),
                              "||S_t||_F per head after step t of the step rule, [B,T,H] "
                              "([B,T,1] for a [B,D] state)");
  }
  if (outs.empty()) throw Error(op, "T >= 1", "T = 0");
  return {stack(outs, 1), state};
}

StepRule gla_step_rule() {
  return {"gla", [](const Var& S, const std::vector<Var>& x) {
            // S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T;  o_t = S_t^T q_t
            const Var decay = exp(x[3]);
            record_step("decay", decay, "per-key decay exp(gk_t), [B,T,H,K]");
            const Var S_new = unsqueeze(decay, -1) * S + unsqueeze(x[1], -1) * unsqueeze(x[2], -2);
            return std::make_pair(S_new, sum(unsqueeze(x[0], -1) * S_new, {-2}));
          }};
}

StepRule gated_delta_step_rule() {
  return {"gated_delta", [](const Var& S, const std::vector<Var>& x) {
            // S' = exp(g_t) S;  e = v_t - S'^T k_t;  S_t = S' + beta_t k_t e^T;  o_t = S_t^T q_t
            const Var& q = x[0];
            const Var& k = x[1];
            const Var& v = x[2];
            const Var alpha = exp(x[3]);
            record_step("alpha", alpha, "decay alpha_t = exp(g_t) per head, [B,T,H]");
            record_step("beta", x[4], "write strength beta_t per head, [B,T,H]");
            const Var decayed = unsqueeze(unsqueeze(alpha, -1), -1) * S;
            const Var e = v - sum(unsqueeze(k, -1) * decayed, {-2});
            const Var S_new = decayed + unsqueeze(unsqueeze(x[4], -1) * k, -1) * unsqueeze(e, -2);
            return std::make_pair(S_new, sum(unsqueeze(q, -1) * S_new, {-2}));
          }};
}

}  // namespace hla
