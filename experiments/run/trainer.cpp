#include "experiments/run/trainer.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>

#include "autograd/grad_mode.h"
#include "experiments/run/checkpoint.h"
#include "experiments/run/metrics.h"
#include "experiments/run/progress.h"
#include "kernels/ops.h"
#include "optim/accumulate.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "optim/sgd.h"
#include "tensor/dtype_dispatch.h"

namespace hla::run {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// [B, T] int32 ids on `device`.
Tensor ids_tensor(const std::vector<int32_t>& ids, int64_t B, int64_t T, Device device) {
  return Tensor::from_vector<int32_t>(ids, {B, T}).to(device);
}

std::unique_ptr<optim::Optimizer> make_optimizer(const OptimConfig& o, const nn::HybridLM& model) {
  auto params = optim::optim_params(model.named_parameters());
  if (o.name == "sgd")
    return std::make_unique<optim::Sgd>(
        std::move(params),
        optim::SgdOptions{
            .momentum = o.momentum, .weight_decay = o.weight_decay, .nesterov = o.nesterov});
  return std::make_unique<optim::AdamW>(
      std::move(params),
      optim::AdamWOptions{
          .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps, .weight_decay = o.weight_decay});
}

optim::LrSchedule make_schedule(const RunConfig& c) {
  optim::LrSchedule s{.kind = optim::parse_schedule_kind(c.optim.schedule),
                      .lr_max = c.optim.lr,
                      .lr_min = c.optim.min_lr,
                      .warmup_steps = c.optim.warmup_steps,
                      .total_steps = c.train.steps};
  s.validate();
  return s;
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw Error("train", "a writable run directory", "cannot write '" + path + "'");
}

// Stops the run on a non-finite loss or gradient norm, naming the step.
void require_finite(double value, const char* what, int64_t step, const std::string& checkpoint) {
  if (std::isfinite(value)) return;
  throw Error(
      "train", std::string("a finite ") + what + " at step " + std::to_string(step),
      std::to_string(value),
      "the run stopped; the last good checkpoint is " +
          (fs::exists(checkpoint) ? "'" + checkpoint + "'" : std::string("not written yet")) +
          "; lower optim.lr or set optim.grad_clip");
}

}  // namespace

void set_cpu_threads(int64_t threads) {
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
}

Device resolve_device(const std::string& name) {
  // "auto" takes the GPU whenever the build has the CUDA backend and one is visible: every op
  // of a training step (forward, backward, clipping, the optimizer) then runs there.
  if (name == "auto") return device_available(Device::CUDA) ? Device::CUDA : Device::CPU;
  if (name == "cpu") return Device::CPU;
  if (name == "cuda") {
    if (!device_available(Device::CUDA))
      throw Error("train.device", "a build with the CUDA backend and a visible GPU for \"cuda\"",
                  "no CUDA device available",
                  "configure with -DHLA_CUDA=ON on a machine with nvcc and a GPU, or use --device cpu");
    return Device::CUDA;
  }
  throw Error("train.device", "auto, cpu or cuda", "'" + name + "'");
}

Precision resolve_precision(const std::string& precision, Device device) {
  if (precision == "fp32") return {DType::f32, DType::f32};
  if (precision != "bf16" && precision != "pure_bf16")
    throw Error("train.precision", "fp32, bf16 or pure_bf16", "'" + precision + "'",
                "fp32 runs on either device; bf16 (mixed) and pure_bf16 (bf16 parameters and "
                "optimizer state) on CUDA");
  if (device != Device::CUDA)
    throw Error("train.precision",
                "\"fp32\" on the CPU (bf16 mixed precision and pure_bf16 run on CUDA only)",
                "\"" + precision + "\" on " + device_name(device),
                "train with --device cuda on a machine with a GPU, or set train.precision = "
                "\"fp32\"");
  return {DType::bf16, precision == "pure_bf16" ? DType::bf16 : DType::f32};
}

std::unique_ptr<nn::HybridLM> build_model(RunConfig& config, const RunData& data) {
  if (config.model.vocab_size == 0) config.model.vocab_size = data.vocab_size();
  if (config.model.vocab_size < data.vocab_size())
    throw Error(
        "config",
        "model.vocab_size >= the data's vocabulary (" + std::to_string(data.vocab_size()) + ")",
        std::to_string(config.model.vocab_size), "set model.vocab_size = 0 to take the data's");
  nn::validate(config.model);
  Generator gen(static_cast<uint64_t>(config.train.seed));
  return std::make_unique<nn::HybridLM>(config.model, gen);
}

EvalResult evaluate(nn::HybridLM& model, const RunData& data, Device device) {
  NoGradGuard no_grad;
  model.eval();
  double loss_sum = 0;
  data::Accuracy accuracy;
  int64_t positions = 0;
  for (int64_t i = 0; i < data.num_val_batches(); ++i) {
    const data::TokenBatch batch = data.val_batch(i);
    const int64_t n = batch.num_targets();
    if (n == 0) continue;
    const Var logits = model.forward(ids_tensor(batch.inputs, batch.B, batch.T, device));
    const int64_t V = logits.size(-1);
    const Tensor flat = logits.data().reshape({batch.B * batch.T, V});
    const Tensor targets =
        Tensor::from_vector<int32_t>(batch.targets, {batch.B * batch.T}).to(device);
    // On the model's device; only the mean comes back to the host.
    loss_sum += ops::cross_entropy(flat, targets, data::kIgnoreIndex, nullptr).item() * double(n);
    positions += n;
    if (data.synthetic()) {
      // The argmax runs on the host over the scored rows only (MQAR scores a few positions
      // per sequence): those rows are selected on the device, so little crosses the bus.
      std::vector<int64_t> scored;
      for (size_t r = 0; r < batch.targets.size(); ++r)
        if (batch.targets[r] != data::kIgnoreIndex) scored.push_back(static_cast<int64_t>(r));
      const Tensor rows = Tensor::from_vector<int64_t>(scored, {int64_t(scored.size())}).to(device);
      // bf16 logits (pure_bf16 parameters) are read as f32 on the host
      Tensor c = ops::index_select(flat, 0, rows).to(Device::CPU).contiguous();
      if (c.dtype() == DType::bf16) c = c.to(DType::f32);
      std::vector<int32_t> predicted(static_cast<size_t>(batch.B * batch.T), -1);
      visit_floating(c.dtype(), "evaluate", [&]<class T>() {
        const T* p = c.data<T>();
        for (size_t j = 0; j < scored.size(); ++j) {
          const T* row = p + int64_t(j) * V;
          predicted[scored[j]] = static_cast<int32_t>(std::max_element(row, row + V) - row);
        }
      });
      const data::Accuracy a = data::masked_accuracy(batch, predicted);
      accuracy.correct += a.correct, accuracy.total += a.total;
    }
  }
  model.train();
  return {positions ? loss_sum / double(positions) : kNaN,
          data.synthetic() ? accuracy.value() : kNaN, positions};
}

TrainSummary train(RunConfig config, const TrainOptions& options) {
  const Device device = resolve_device(config.train.device);
  const Precision precision = resolve_precision(config.train.precision, device);
  set_cpu_threads(config.train.threads);
  const TrainConfig& t = config.train;
  const fs::path run_dir = t.out;
  const std::string checkpoint = latest_checkpoint_path(t.out);

  RunData data(config);
  CheckpointInfo resumed;
  if (options.resume) {
    resumed = read_checkpoint_info(resolve_checkpoint(t.out));
    if (resumed.optimizer != config.optim.name)
      throw Error("train --resume", "a checkpoint written by optimizer " + config.optim.name,
                  resumed.optimizer);
  }
  std::unique_ptr<nn::HybridLM> model = build_model(config, data);
  // Both before the optimizer: its moments take the parameters' device and dtype (pure_bf16:
  // bf16 parameters, gradients and moments; otherwise the f32 parameters stay as built).
  model->to(device);
  model->to(precision.parameters);
  model->set_compute_dtype(precision.compute);
  model->set_block_checkpointing(t.activation_checkpointing);
  std::unique_ptr<optim::Optimizer> optimizer = make_optimizer(config.optim, *model);
  const optim::LrSchedule schedule = make_schedule(config);
  const std::string config_toml = to_toml(config);

  fs::create_directories(run_dir / "checkpoints");
  TrainState state;
  if (options.resume) {
    load_model_weights(checkpoint, *model);
    load_optimizer_state(checkpoint, *optimizer);
    state = resumed.state;
    data.set_rng_state(state.data_rng);
  }
  write_text_file((run_dir / "config.toml").string(), config_toml);
  MetricsLog metrics((run_dir / "metrics.jsonl").string(), options.resume ? state.step : -1);
  Progress progress(stdout, t.steps);
  const std::string precision_note =
      std::string(precision.parameters == DType::bf16
                      ? ", pure bf16 (bf16 parameters, gradients and optimizer state)"
                  : precision.compute == DType::bf16 ? ", bf16 mixed precision"
                                                     : "") +
      (t.activation_checkpointing ? ", activation checkpointing" : "");
  progress.message("hla train: " + config.model.variant + " " + config.layout + ", " +
                   std::to_string(model->num_parameters()) + " parameters, data " +
                   data.describe() + ", " + std::to_string(t.steps) + " steps" + precision_note +
                   " -> " + run_dir.string() +
                   (options.resume ? " (resumed at step " + std::to_string(state.step) + ")" : ""));

  const std::vector<Var> params = model->parameters();
  const int64_t micro_B = t.batch_size / t.grad_accum;
  const int64_t tokens_per_step = t.batch_size * t.seq_len;
  TrainSummary summary{.step = state.step, .val_loss = kNaN, .val_accuracy = kNaN};
  const Clock::time_point start = Clock::now();
  Clock::time_point interval_start = start;
  int64_t interval_tokens = 0, steps_done = 0;

  const auto save = [&] {
    state.data_rng = data.rng_state();
    save_checkpoint(checkpoint, config_toml, *model, config.optim.name, *optimizer, state);
  };

  model->train();
  for (int64_t step = state.step; step < t.steps; ++step) {
    const double lr = schedule.lr(step);
    optimizer->zero_grad();
    double loss = 0;
    for (int64_t k = 0; k < t.grad_accum; ++k) {
      const data::TokenBatch batch = data.train_batch(step, k);
      const Var micro_loss = model->loss(ids_tensor(batch.inputs, micro_B, t.seq_len, device),
                                         ids_tensor(batch.targets, micro_B, t.seq_len, device));
      optim::backward_micro_batch(micro_loss, t.grad_accum);
      loss += micro_loss.item() / double(t.grad_accum);
    }
    require_finite(loss, "loss", step + 1, checkpoint);
    const double grad_norm = optim::grad_norm(params);
    require_finite(grad_norm, "gradient norm", step + 1, checkpoint);
    // clipping inside the update: each gradient read times the coefficient
    optimizer->step(lr, config.optim.grad_clip > 0
                            ? optim::clip_coefficient(grad_norm, config.optim.grad_clip)
                            : 1.0);

    state.step = step + 1;
    state.tokens_seen += tokens_per_step;
    interval_tokens += tokens_per_step;
    ++steps_done;
    summary.step = state.step;
    summary.loss = loss;
    const bool last = state.step == t.steps;
    const bool stopping = options.stop_after > 0 && steps_done == options.stop_after;
    const bool eval_now = state.step % t.eval_interval == 0 || last;
    const bool log_now = state.step % t.log_interval == 0 || eval_now || stopping;
    const double tokens_per_s =
        double(interval_tokens) / std::max(1e-9, seconds_since(interval_start));
    progress.update(state.step, loss, tokens_per_s, lr, seconds_since(start), steps_done, log_now);
    if (log_now) {
      interval_start = Clock::now(), interval_tokens = 0;
      MetricsRecord record;
      record.step = state.step;
      record.add("loss", loss);
      record.add("lr", lr);
      record.add("grad_norm", grad_norm);
      record.add("tokens_per_s", tokens_per_s);
      record.add("tokens", double(state.tokens_seen));
      record.add("elapsed_s", seconds_since(start));
      if (eval_now && data.num_val_batches() > 0) {
        const EvalResult e = evaluate(*model, data, device);
        summary.val_loss = e.loss, summary.val_accuracy = e.accuracy;
        record.add("val_loss", e.loss);
        record.add("val_ppl", std::exp(e.loss));
        std::string line = "eval step " + std::to_string(state.step) + ": val_loss " +
                           std::to_string(e.loss) + ", ppl " + std::to_string(std::exp(e.loss));
        if (data.synthetic()) {
          record.add("val_accuracy", e.accuracy);
          line += ", accuracy " + std::to_string(e.accuracy);
        }
        progress.message(line);
      }
      metrics.write(record);
    }
    const bool checkpoint_now =
        t.checkpoint_interval > 0 ? state.step % t.checkpoint_interval == 0 : eval_now;
    if (checkpoint_now || last || stopping) save();
    if (stopping) break;
  }
  progress.finish();
  summary.seconds = seconds_since(start);
  summary.tokens_per_s = double(steps_done * tokens_per_step) / std::max(1e-9, summary.seconds);
  return summary;
}

}  // namespace hla::run
