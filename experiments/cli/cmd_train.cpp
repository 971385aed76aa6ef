// defines: `hla train`, training a model from a TOML config (experiments/README.md lists every
// key).
//
//   hla train [--config FILE.toml] [--set section.key=value ...] [--steps N] [--out DIR]
//             [--device auto|cpu|cuda] [--seed S] [--resume] [--stop-after N] [--print-config]
//
// Without --config it trains the embedded default (a tiny GLA 3:1 hybrid on MQAR, about a
// minute on 2 CPU cores). Flags override the config; --resume continues the run in --out (or
// train.out) from checkpoints/latest.h5, using the config stored in the checkpoint (plus any
// --set and flags), and reproduces an uninterrupted run exactly.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <memory>

#include "experiments/cli/commands.h"
#include "experiments/run/checkpoint.h"
#include "experiments/run/config.h"
#include "experiments/run/progress.h"
#include "experiments/run/trainer.h"

namespace hla::cli {

namespace {

struct TrainArgs {
  std::string config;
  std::vector<std::string> set;
  int64_t steps = 0;
  std::string out;
  std::string device;
  int64_t seed = -1;
  bool resume = false;
  int64_t stop_after = 0;
  bool print_config = false;
};

run::RunConfig resolve_config(const TrainArgs& a) {
  run::RunConfig c = a.config.empty() ? run::parse_run_config(run::default_config_toml(),
                                                              "<default config>", a.set)
                                      : run::load_run_config(a.config, a.set);
  if (a.resume) {
    // The checkpoint's config is the run's truth; --set and flags still apply on top.
    const std::string run_dir = a.out.empty() ? c.train.out : a.out;
    const run::CheckpointInfo info = run::read_checkpoint_info(run::resolve_checkpoint(run_dir));
    c = run::parse_run_config(info.config_toml, run_dir + " (checkpoint config)", a.set);
  }
  if (a.steps > 0) c.train.steps = a.steps;
  if (!a.out.empty()) c.train.out = a.out;
  if (!a.device.empty()) c.train.device = a.device;
  if (a.seed >= 0) c.train.seed = a.seed;
  run::validate(c);
  return c;
}

void run_train(const TrainArgs& a) {
  const run::RunConfig config = resolve_config(a);
  if (a.print_config) {
    std::fputs(run::to_toml(config).c_str(), stdout);
    return;
  }
  const run::TrainSummary s = run::train(config, {.resume = a.resume, .stop_after = a.stop_after});
  std::printf("done: step %lld/%lld, loss %.4f", (long long)s.step, (long long)config.train.steps,
              s.loss);
  if (!std::isnan(s.val_loss))
    std::printf(", val_loss %.4f (ppl %.2f)", s.val_loss, std::exp(s.val_loss));
  if (!std::isnan(s.val_accuracy)) std::printf(", val_accuracy %.4f", s.val_accuracy);
  std::printf(", %.0f tokens/s, %s; run directory %s\n", s.tokens_per_s,
              run::format_duration(s.seconds).c_str(), config.train.out.c_str());
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* c = app.add_subcommand(
      "train", "Train a model from a TOML config (default: tiny GLA 3:1 on MQAR)");
  c->add_option("--config", a->config,
                "config file (experiments/configs/*.toml); omitted: the embedded default");
  c->add_option("--set", a->set, "override a config key: section.key=value (repeatable)");
  c->add_option("--steps", a->steps, "train.steps");
  c->add_option("--out", a->out, "train.out, the run directory");
  c->add_option("--device", a->device, "train.device: auto, cpu or cuda");
  c->add_option("--seed", a->seed, "train.seed");
  c->add_flag("--resume", a->resume,
              "continue the run in the run directory from checkpoints/latest.h5");
  c->add_option("--stop-after", a->stop_after,
                "stop with a checkpoint after N steps of this invocation");
  c->add_flag("--print-config", a->print_config, "print the resolved config and exit");
  c->callback([a] { run_train(*a); });
}

}  // namespace hla::cli
