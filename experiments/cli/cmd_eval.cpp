// defines: `hla eval`, validation loss and perplexity of a checkpoint (and task accuracy for
// synthetic-task runs such as MQAR), on the validation data named in its config.
//
//   hla eval --checkpoint RUN_DIR_OR_FILE [--batches N] [--device auto|cpu|cuda]
//            [--dump-logits FILE.h5]
//
// prints
//   checkpoint runs/x/checkpoints/latest.h5 (step 300)
//   val_loss 0.4312
//   val_ppl 1.539
//   val_accuracy 0.9375
//
// --dump-logits writes the first validation batch's `tokens` [B,T] (stored as f64, exact) and
// the model's `logits` [B,T,vocab] (f32) to an HDF5 file, for comparing with another
// implementation.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <memory>

#include "autograd/grad_mode.h"
#include "data/hdf5.h"
#include "data/pending_file.h"
#include "experiments/cli/commands.h"
#include "experiments/cli/tensor_h5.h"
#include "experiments/run/checkpoint.h"
#include "experiments/run/config.h"
#include "experiments/run/trainer.h"

namespace hla::cli {

namespace {

struct EvalArgs {
  std::string checkpoint;
  int64_t batches = 0;
  std::string device = "auto";
  std::string dump_logits;
};

// The first validation batch's tokens and logits, as an HDF5 file written atomically.
void dump_logits(nn::HybridLM& model, const run::RunData& data, Device device,
                 const std::string& path) {
  const data::TokenBatch batch = data.val_batch(0);
  const Tensor tokens = Tensor::from_vector(batch.inputs, {batch.B, batch.T});
  NoGradGuard no_grad;
  const Tensor logits = model.forward(tokens.to(device)).data().to(Device::CPU).to(DType::f32);
  data::h5::silence_hdf5_errors();
  data::PendingFile out(path);
  {
    data::h5::Handle f(H5_CHECK(H5Fcreate(out.temp_path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT,
                                          H5P_DEFAULT)),
                       H5Fclose);
    write_tensor(f.get(), "logits", logits);
    write_tensor(f.get(), "tokens", tokens.to(DType::f64));
  }
  out.commit();
}

void run_eval(const EvalArgs& a) {
  const std::string path = run::resolve_checkpoint(a.checkpoint);
  const run::CheckpointInfo info = run::read_checkpoint_info(path);
  run::RunConfig config = run::parse_run_config(info.config_toml, path + " (config)");
  if (a.batches > 0) config.train.eval_batches = a.batches;
  config.train.device = a.device;
  const Device device = run::resolve_device(config.train.device);
  run::set_cpu_threads(config.train.threads);
  const run::RunData data(config);
  std::unique_ptr<nn::HybridLM> model = run::build_model(config, data);
  run::load_model_weights(path, *model);
  model->to(device);
  if (data.num_val_batches() == 0)
    throw Error("eval", "validation data", "none in " + data.describe(),
                "set data.val_path or prepare the dataset with a val split");
  const run::EvalResult r = run::evaluate(*model, data, device);
  std::printf("checkpoint %s (step %lld)\n", path.c_str(), (long long)info.state.step);
  std::printf("val_loss %.6f\nval_ppl %.4f\n", r.loss, std::exp(r.loss));
  if (data.synthetic()) std::printf("val_accuracy %.6f\n", r.accuracy);
  std::printf("positions %lld\n", (long long)r.positions);
  if (!a.dump_logits.empty()) {
    dump_logits(*model, data, device, a.dump_logits);
    std::printf("logits of the first validation batch: %s\n", a.dump_logits.c_str());
  }
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* c =
      app.add_subcommand("eval", "Validation loss, perplexity (and MQAR accuracy) of a checkpoint");
  c->add_option("--checkpoint", a->checkpoint, "run directory or checkpoint .h5 file")->required();
  c->add_option("--batches", a->batches,
                "validation batches (default: the run's train.eval_batches)");
  c->add_option("--device", a->device, "auto, cpu or cuda")->capture_default_str();
  c->add_option("--dump-logits", a->dump_logits,
                "write the first validation batch's tokens and logits to this HDF5 file");
  c->callback([a] { run_eval(*a); });
}

}  // namespace hla::cli
