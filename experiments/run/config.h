// defines: RunConfig, everything a training run is made of (model, data, optimizer, schedule,
// loop), and its TOML form: parse_run_config (file or text, plus --set overrides) and to_toml
// (the resolved config written to <run>/config.toml and into every checkpoint).
//
// A config file has four tables; every key is optional (defaults below and in nn/model.h):
//
//   [model]  variant, layout ("pure" | "transformer" | "r:1" | "custom"), attention_layers
//            (with layout "custom"), vocab_size (0: the data's), hidden_size, num_layers,
//            num_heads, expand_k, expand_v, expand_ratio, head_dim, use_short_conv, conv_size,
//            use_output_gate, allow_neg_eigval, num_kv_heads (0: num_heads), feature_map
//            ("none"), clamp_min (-inf: none), use_beta, qk_activation, qk_norm, num_v_heads
//            (0: num_heads), use_lower_bound, hidden_ratio,
//            intermediate_size, norm_eps, initializer_range, tie_word_embeddings,
//            attn_num_heads, attn_num_kv_heads, attn_window, rope_theta, attn_qkv_bias
//   [data]   task (synthetic task spec, e.g. "mqar:vocab_size=256,pairs=8"; seq_len defaults to
//            train.seq_len) OR path (token file: .h5 dataset, llm.c shard or nanoGPT .bin),
//            val_path, train_split, val_split, format, bin_vocab_size, tokenizer
//   [optim]  name (adamw | sgd), lr, min_lr, schedule (cosine | constant), warmup_steps, beta1,
//            beta2, eps, weight_decay, momentum, nesterov, grad_clip (0: off)
//   [train]  steps, batch_size (sequences per optimizer step), grad_accum (micro-batches per
//            step), seq_len, seed, device (auto | cpu | cuda), precision (fp32 | bf16: bf16
//            activations and matrix products over f32 master weights | pure_bf16: bf16
//            parameters, gradients and optimizer moments as well; both CUDA only), out,
//            log_interval, eval_interval, eval_batches, checkpoint_interval (0: at each eval and
//            at the end), threads
//
// Model keys not set explicitly take the variant's fla defaults (nn::with_variant_defaults).
// Unknown keys, wrong types and impossible values throw hla::Error naming the key
// ("model.hidden_size"), before anything is built.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nn/model.h"

namespace hla::run {

struct DataConfig {
  std::string task;      // synthetic task spec; empty when training on a token file
  std::string path;      // token file
  std::string val_path;  // separate validation file ("" : `path`, split val_split)
  std::string train_split = "train";
  std::string val_split = "val";
  std::string format = "auto";     // auto | hdf5 | llmc | nanogpt
  int64_t bin_vocab_size = 50257;  // vocabulary of .bin files (they do not record it)
  std::string tokenizer;           // for `hla generate`; "" : the dataset's own
};

struct OptimConfig {
  std::string name = "adamw";  // adamw | sgd
  double lr = 3e-3;
  double min_lr = 3e-4;
  std::string schedule = "cosine";
  int64_t warmup_steps = 20;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;
  double momentum = 0.9;   // sgd
  bool nesterov = false;   // sgd
  double grad_clip = 1.0;  // 0: off
};

struct TrainConfig {
  int64_t steps = 1000;
  int64_t batch_size = 16;
  int64_t grad_accum = 1;
  int64_t seq_len = 256;
  int64_t seed = 0;
  std::string device = "auto";
  std::string precision = "fp32";  // fp32 | bf16 | pure_bf16 (the bf16 ones on CUDA; trainer.h)
  bool activation_checkpointing = false;  // recompute each block in the backward (nn/model.h)
  std::string out = "runs/default";
  int64_t log_interval = 10;
  int64_t eval_interval = 100;
  int64_t eval_batches = 8;
  int64_t checkpoint_interval = 0;
  int64_t threads = 0;  // OpenMP threads of the CPU kernels (0: OpenMP's default / OMP_NUM_THREADS)
};

// nn::ModelConfig's defaults with vocab_size = 0 (the trainer fills in the data's vocabulary).
inline nn::ModelConfig data_sized_model() {
  nn::ModelConfig m;
  m.vocab_size = 0;
  return m;
}

struct RunConfig {
  std::string layout = "pure";                 // resolved into model.attention
  nn::ModelConfig model = data_sized_model();  // vocab_size 0: taken from the data
  DataConfig data;
  OptimConfig optim;
  TrainConfig train;
};

// Parses TOML `text` (from `source`, a file name or "<default>", for messages), applies
// `overrides` ("section.key=value", the value in TOML syntax or a bare string), fills variant
// defaults, resolves the attention layout and validates. model.vocab_size may remain 0 (it is
// set from the data by the trainer).
RunConfig parse_run_config(const std::string& text, const std::string& source,
                           const std::vector<std::string>& overrides = {});
// Reads and parses a config file; throws hla::Error naming the file if it cannot be read.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The resolved config as TOML, every key explicit; parse_run_config(to_toml(c)) == c.
std::string to_toml(const RunConfig& config);

// The configuration `hla train` runs without --config: a tiny GLA 3:1 hybrid on MQAR that
// trains on 2 CPU cores in about a minute.
const std::string& default_config_toml();

// Checks the non-model parts (steps > 0, batch_size divisible by grad_accum, known names...);
// throws hla::Error naming the key. parse_run_config calls it.
void validate(const RunConfig& config);

}  // namespace hla::run
