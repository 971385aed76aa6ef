// defines: OptimParam (a parameter as an optimizer sees it), Optimizer (the interface of AdamW
// and SGD), takes_weight_decay (which parameters decay) and optim_params (the split).
//
// An optimizer holds the model's parameters (leaf Vars, shared with the model) and per-parameter
// state tensors (moments). One step reads each parameter's grad() and updates data() in place,
// under NoGradGuard. Parameters without a gradient are skipped (their state does not advance).
//
// Weight decay is decoupled from the gradient in AdamW and added to it in SGD (see adamw.h,
// sgd.h); either way it applies only to parameters with decay = true. By the convention of fla
// trainers, these do NOT decay:
//   norm weights        (*norm*.weight: attn_norm, mlp_norm, model.norm, g_norm, q/k norms)
//   biases              (*.bias)
//   A_log, dt_bias      (Gated DeltaNet; fla's _no_weight_decay flag)
//   lower_bounds        (HGRN / HGRN2 lower-bound schedule)
// Everything else (projections, embeddings, lm_head, conv weights) decays.
//
// Devices: all parameters live on one device, CPU or CUDA (mixed devices throw hla::Error at
// step); the state tensors are created on it. On CUDA, AdamW runs one multi-tensor kernel per
// dtype (kernels/cuda/optim_cuda.h) and SGD composes tensor ops.
//
// Checkpoints: state() lists every state tensor under "<kind>/<parameter name>"
// (e.g. "exp_avg/model.layers.0.attn.q_proj.weight"), sharing storage with the optimizer;
// load_state() copies values back in by name, so a resumed run continues bit for bit.
//
// Clipping: step(lr, grad_scale) reads every gradient times grad_scale inside the update (the
// clipping coefficient of optim/clip.h), with no pass that rewrites the gradients first.
//
//   auto params = optim::optim_params(model.named_parameters());
//   optim::AdamW opt(params, {.weight_decay = 0.1});
//   loss.backward();
//   const double norm = optim::grad_norm(model.parameters());
//   opt.step(schedule.lr(step), optim::clip_coefficient(norm, 1.0));
//   opt.zero_grad();
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "autograd/var.h"

namespace hla::optim {

struct OptimParam {
  std::string name;   // fla state-dict name
  Var var;            // the model's leaf parameter (shared)
  bool decay = true;  // whether weight decay applies
};

// False for norm weights, biases, A_log, dt_bias and lower_bounds (see above).
bool takes_weight_decay(const std::string& name);
// Every parameter, with decay = takes_weight_decay(name).
std::vector<OptimParam> optim_params(const std::vector<std::pair<std::string, Var>>& named);

class Optimizer {
 public:
  explicit Optimizer(std::vector<OptimParam> params);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update with learning rate lr from the current gradients, each taken times grad_scale
  // (finite, > 0; hla::Error otherwise).
  void step(double lr, double grad_scale = 1.0);
  // Drops every parameter's gradient (the next backward starts from zero).
  void zero_grad();

  // Number of step() calls so far (AdamW's bias correction uses it).
  int64_t steps() const { return steps_; }
  const std::vector<OptimParam>& params() const { return params_; }
  // The one device of every parameter; throws hla::Error naming `op` when they are spread.
  Device device(const char* op) const;

  // Every state tensor by "<kind>/<parameter name>", sharing storage (for checkpoints).
  virtual std::vector<std::pair<std::string, Tensor>> state() const = 0;
  // Copies `state` (as returned by state(), e.g. read from a checkpoint) in and sets steps().
  // Throws hla::Error naming the first missing tensor or shape mismatch.
  void load_state(const std::map<std::string, Tensor>& state, int64_t steps);

 protected:
  // The update of step(), grad_scale checked.
  virtual void update(double lr, double grad_scale) = 0;

  std::vector<OptimParam> params_;
  int64_t steps_ = 0;
};

}  // namespace hla::optim
