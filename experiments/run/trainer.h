// defines: train (the loop behind `hla train`), evaluate (validation loss, perplexity and task
// accuracy, behind `hla eval` and the periodic evals), and the small pieces both share.
//
// One optimizer step s (0-based) of train():
//   lr    = schedule.lr(s)                                     (optim/schedule.h)
//   for k < grad_accum:  backward(loss(micro-batch k) / grad_accum)   (optim/accumulate.h)
//   loss  = mean of the micro-batch losses; a NaN/Inf loss or gradient norm stops the run with
//           the step (the last good checkpoint stays in place)
//   optimizer.step(lr, c): every gradient times c = the clipping coefficient of the global
//           gradient norm for optim.grad_clip (optim/clip.h; 1 if grad_clip is 0)
// and after it: a metrics record every log_interval steps, evaluation every eval_interval
// steps, a checkpoint every checkpoint_interval steps (0: with each evaluation) and at the end.
//
// Device (train.device, resolve_device): on CUDA the parameters, optimizer moments, batches and
// every op of a step live on the GPU; per step only the micro-batch losses and the gradient norm
// come back to the host. Checkpoints hold host copies, so a run may resume on either device.
//
// Precision (train.precision, resolve_precision): "fp32" computes in the parameters' f32; "bf16"
// (CUDA only) is mixed precision: f32 parameters, gradients and optimizer moments, activations
// and matrix products in bf16 (nn::HybridLM::set_compute_dtype); "pure_bf16" (CUDA only)
// converts the parameters themselves to bf16 (nn::Module::to) before the optimizer is built, so
// the gradients and AdamW's moments are bf16 as well and no weight is cast where it is used;
// AdamW computes each element in double and rounds every stored value to bf16 once (the
// semantics of torch.optim.AdamW(fused=True) on bf16 parameters, which computes in f32; SGD
// composes bf16 tensor ops). Under every precision the gates run in f32 (nn::gate_dtype) and
// the loss is f32.
//
// Checkpoints store bf16 tensors as f32 datasets, exactly (experiments/run/checkpoint.h), and
// loading converts each tensor to the dtype of the run's parameters and moments, so a run
// resumes under any precision: bit for bit under the one that wrote the checkpoint; a pure_bf16
// checkpoint resumed as fp32 or bf16 continues from its bf16 values in f32; an fp32 or bf16
// checkpoint resumed as pure_bf16 has its parameters and moments rounded to bf16 once. On the
// CPU a bf16 or pure_bf16 run resumes with train.precision set back to "fp32".
//
// The run directory (train.out): config.toml (resolved), metrics.jsonl, checkpoints/latest.h5.
// A resumed run loads weights, optimizer moments, step and data-generator state from
// latest.h5 and continues bit for bit: its losses equal those of an uninterrupted run.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "experiments/run/config.h"
#include "experiments/run/run_data.h"
#include "nn/model.h"
#include "tensor/device.h"
#include "tensor/dtype.h"

namespace hla::run {

struct TrainOptions {
  bool resume = false;     // continue from <out>/checkpoints/latest.h5
  int64_t stop_after = 0;  // > 0: stop (with a checkpoint) after this many steps of this process
};

struct TrainSummary {
  int64_t step = 0;         // optimizer steps completed in total
  double loss = 0;          // training loss of the last step
  double val_loss = 0;      // last evaluation (NaN if none ran)
  double val_accuracy = 0;  // last evaluation, synthetic tasks (NaN otherwise)
  double tokens_per_s = 0;  // over this process
  double seconds = 0;
};

struct EvalResult {
  double loss = 0;      // mean cross-entropy over every scored position
  double accuracy = 0;  // argmax accuracy over scored positions (synthetic tasks; NaN otherwise)
  int64_t positions = 0;
};

// Sets the OpenMP thread count of the CPU kernels (train.threads; 0 leaves OpenMP's default).
void set_cpu_threads(int64_t threads);

// "auto" -> CUDA when the build has the CUDA backend and a GPU is visible, else CPU; "cpu";
// "cuda" (throws hla::Error without a visible GPU); anything else throws.
Device resolve_device(const std::string& name);

// The dtypes a train.precision value trains in.
struct Precision {
  DType compute;     // activations and matrix products (nn::HybridLM::set_compute_dtype)
  DType parameters;  // the parameters, hence their gradients and the optimizer's moments
};

// "fp32" -> {f32, f32}; "bf16" -> {bf16, f32} (mixed); "pure_bf16" -> {bf16, bf16}. bf16 and
// pure_bf16 need `device` to be CUDA (throws hla::Error naming train.precision otherwise);
// anything else throws.
Precision resolve_precision(const std::string& precision, Device device);

// The model of `config` with its vocabulary taken from the data when model.vocab_size is 0
// (config is updated so the resolved config records it).
std::unique_ptr<nn::HybridLM> build_model(RunConfig& config, const RunData& data);

// Validation over data.num_val_batches() batches (NoGradGuard).
EvalResult evaluate(nn::HybridLM& model, const RunData& data, Device device);

TrainSummary train(RunConfig config, const TrainOptions& options);

}  // namespace hla::run
