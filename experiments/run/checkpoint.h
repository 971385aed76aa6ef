// defines: training checkpoints in HDF5 (readable with h5py), written atomically.
//
// File layout ("hla-checkpoint", version 1):
//   /                              attributes: format = "hla-checkpoint", format_version = 1,
//                                  config (the resolved TOML, experiments/run/config.h),
//                                  step (optimizer steps done), tokens_seen, optimizer
//                                  ("adamw" | "sgd"), optimizer_steps,
//                                  data_rng_counter, data_rng_has_spare, data_rng_spare_bits
//                                  (the training-window Generator state; int64 bit patterns)
//   /model/<fla name>              one dataset per parameter, its shape and dtype
//                                  (/model/model.layers.0.attn.q_proj.weight ...)
//   /optimizer/<kind>/<fla name>   optimizer state (exp_avg, exp_avg_sq | momentum_buffer)
// bf16 tensors (train.precision = "pure_bf16") are stored as f32 datasets, which hold them
// exactly; loading converts each dataset to the dtype of the tensor it fills (rounding to bf16
// once where that is bf16), so bf16 tensors round-trip bit for bit.
//
//   h5py: {k: f["model"][k][()] for k in f["model"]}; f.attrs["config"]
//
// save_checkpoint writes <path>.tmp and renames it over <path> only when complete, so a crash
// mid-write never damages the last good checkpoint. Readers throw hla::Error naming the file for
// a missing file, a file that is not HDF5 (or is truncated), a missing attribute, parameter or
// state tensor, and a shape mismatch.
#pragma once

#include <cstdint>
#include <string>

#include "nn/module.h"
#include "optim/optimizer.h"
#include "tensor/random.h"

namespace hla::run {

struct TrainState {
  int64_t step = 0;                          // optimizer steps completed
  int64_t tokens_seen = 0;                   // input tokens consumed by training
  Generator::State data_rng{0, false, 0.0};  // RandomWindows' generator (token datasets)
};

struct CheckpointInfo {
  std::string config_toml;
  std::string optimizer;  // "adamw" | "sgd"
  int64_t optimizer_steps = 0;
  TrainState state;
};

// <run_dir>/checkpoints/latest.h5
std::string latest_checkpoint_path(const std::string& run_dir);
// A run directory -> its latest checkpoint; a file path stays as it is. Throws hla::Error if
// neither exists.
std::string resolve_checkpoint(const std::string& dir_or_file);

void save_checkpoint(const std::string& path, const std::string& config_toml,
                     const nn::Module& model, const std::string& optimizer_name,
                     const optim::Optimizer& optimizer, const TrainState& state);

// The attributes (no tensors).
CheckpointInfo read_checkpoint_info(const std::string& path);
// Copies /model/* into the model's parameters by name.
void load_model_weights(const std::string& path, nn::Module& model);
// Copies /optimizer/* into the optimizer's state and sets its step count.
void load_optimizer_state(const std::string& path, optim::Optimizer& optimizer);

}  // namespace hla::run
