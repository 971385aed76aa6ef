// StepRule: a recurrence written as ONE time step in autograd primitives. The framework runs it
// over T and differentiates it with autograd: the way to prototype a new gating rule in a few
// lines, before anyone writes a kernel, and an independent oracle for the kernels in tests.
//
//   state_t, out_t = step(state_{t-1}, inputs_t)
//
// where inputs_t are the time-t slices of the inputs ([B,T,...] -> [B,...]). Example: GLA,
//
//   StepRule gla_rule{"gla", [](const Var& S, const std::vector<Var>& x) {
//     // x = q_t [B,H,K], k_t [B,H,K], v_t [B,H,V], gk_t [B,H,K]; S [B,H,K,V]
//     Var decay = unsqueeze(exp(x[3]), -1);                              // [B,H,K,1]
//     Var S_new = decay * S + unsqueeze(x[1], -1) * unsqueeze(x[2], -2); // + k v^T
//     Var o = sum(unsqueeze(x[0], -1) * S_new, {-2});                    // S^T q
//     return std::make_pair(S_new, o);
//   }};
//   auto [o, hT] = run_step_rule(gla_rule, {q * scale, k, v, gk}, h0);
//
// docs/new_gating_rule.md walks through adding a rule this way, then as a kernel.
//
// Recording (docs/inspect.md): inside an inspect::RecordScope (nn/inspect.h), run_step_rule
// records "<rule name>/state_norm" [B,T,H] (||S_t||_F per head after each step) and a rule may
// record its own per-step tensors with record_step, e.g. in the GLA rule above:
//
//     record_step("decay", exp(x[3]), "per-key decay exp(gk_t)");   // -> gla/decay [B,T,H,K]
//
// Both are free when no scope is active (one pointer check).
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/recurrences.h"

namespace hla {

struct StepRule {
  std::string name;
  // (state_{t-1}, inputs at t) -> (state_t, output at t)
  std::function<std::pair<Var, Var>(const Var& state, const std::vector<Var>& inputs_t)> step;
};

// Runs `rule` over dim 1 (time) of every input. h0 is the initial state (required: its shape
// defines the state). Returns o (the outputs stacked on dim 1) and hT.
RecurrenceResult run_step_rule(const StepRule& rule, const std::vector<Var>& inputs,
                               const Var& h0);

// The two rules the project ships as examples and test oracles (inputs as listed; q is used
// as given, so pre-multiply it by the scale):
//   gla_step_rule:              q, k [B,T,H,K], v [B,T,H,V], gk [B,T,H,K]; state [B,H,K,V]
//   gated_delta_step_rule:      q, k [B,T,H,K], v [B,T,H,V], g [B,T,H], beta [B,T,H]
StepRule gla_step_rule();
StepRule gated_delta_step_rule();

// ---- recording hook

// Receives per-step tensors. nn::inspect::Recorder implements it; nn::inspect::RecordScope
// installs it for the current thread. Steps recorded under one name are stacked on dim 1 in call
// order: value_t [B,...] per step -> [B,T,...].
class StepRecorder {
 public:
  virtual ~StepRecorder() = default;
  virtual void record_step(const std::string& name, const Tensor& value_t,
                           const std::string& description) = 0;
};

// The recorder of this thread (null: recording is off) and its setter (returns the previous one).
StepRecorder* step_recorder();
StepRecorder* set_step_recorder(StepRecorder* recorder);

// For rules: records value_t [B,...] under "<rule name>/<name>" for this step. A no-op when
// recording is off or when called outside run_step_rule.
void record_step(const std::string& name, const Var& value_t, const std::string& description);

// ||state||_F per batch row and head: state [B,H,...] -> [B,H] (norm over dims 2..); [B,D] ->
// [B,1]. f32 on the CPU, computed in double.
Tensor state_norm(const Tensor& state);

}  // namespace hla
