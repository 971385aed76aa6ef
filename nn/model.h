// HybridLM: the language model stack of spec/recurrences.md section 8, with any linear-attention
// mixer and softmax attention at chosen layers.
//
//   x = embeddings(tokens)
//   for each block i:  x = x + mixer_i(RMSNorm(x));  x = x + SwiGLU(RMSNorm(x))
//   logits = lm_head(RMSNorm(x))
//
// mixer_i is softmax Attention when i is in config.attention layers, else the variant's mixer.
// Parameter names follow fla's state dicts (model.layers.3.attn.q_proj.weight, ...).
//
// Mixed precision (set_compute_dtype(DType::bf16), CUDA): the parameters keep their dtype (f32
// master weights, which the optimizer updates); the embeddings' rows are cast to the compute
// dtype and every layer computes in its input's dtype, casting each weight where it is used
// (autograd to_dtype: the gradients arrive in f32). Gates and decays run in f32
// (nn::gate_dtype), the norms and the recurrences accumulate in f32 inside their kernels, and
// the logits come back in the parameters' dtype, so the cross-entropy and the loss are f32.
//
// Pure bf16 (Module::to(DType::bf16) on CUDA, train.precision = "pure_bf16"): the parameters
// themselves are bf16, the compute dtype follows them and no weight is cast; every gradient
// arrives in bf16, each product's and norm's sum formed in f32 and rounded once. The gates
// still run in f32: Gated DeltaNet's A_log and dt_bias and the HGRN lower bounds' schedule are
// cast to f32 where used. The logits are bf16; loss() is f32.
#pragma once

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "autograd/var.h"
#include "nn/mixer.h"
#include "nn/module.h"
#include "tensor/random.h"

namespace hla::nn {

struct ModelConfig {
  // "hgrn" | "hgrn2" | "gla" | "retnet" | "delta_net" | "gated_deltanet" | "transformer"
  std::string variant = "gla";
  int64_t vocab_size = 32000;
  int64_t hidden_size = 1024;
  int64_t num_layers = 24;
  int64_t num_heads = 4;         // heads of the linear mixer (HGRN ignores it)
  double expand_k = 0.5;         // GLA 0.5, RetNet 1, DeltaNet 1
  double expand_v = 1.0;         // GLA 1, RetNet 2, DeltaNet 1, GatedDeltaNet expand_v (2)
  int64_t expand_ratio = 128;    // HGRN2: d_k per head (num_heads = hidden / expand_ratio)
  int64_t head_dim = 256;        // GatedDeltaNet: d_k
  bool use_short_conv = false;   // HGRN/HGRN2/GLA default off; DeltaNet/GatedDeltaNet on
  int64_t conv_size = 4;
  bool use_output_gate = true;   // GLA / RetNet / GatedDeltaNet output gate
  bool allow_neg_eigval = false; // delta rules: beta in (0, 2)
  // Non-default fla layer options (spec sections 3-6); the defaults are fla's.
  int64_t num_kv_heads = 0;           // GLA / RetNet: key/value heads (GQA); 0: num_heads
  std::string feature_map = "none";  // GLA / RetNet: none | relu | silu | swish | sigmoid
  double clamp_min = -std::numeric_limits<double>::infinity();  // GLA: log-decay floor; -inf: none
  bool use_beta = true;               // DeltaNet: false -> beta = 1, no b_proj
  std::string qk_activation = "silu"; // DeltaNet: silu | relu | elu | identity
  std::string qk_norm = "l2";         // DeltaNet: l2 | sum
  int64_t num_v_heads = 0;            // GatedDeltaNet: value heads (GVA); 0: num_heads
  bool use_lower_bound = true;   // HGRN / HGRN2 lower-bound schedule
  double hidden_ratio = 4.0;     // MLP: intermediate = 256 * ceil(int(d * ratio * 2/3) / 256)
  int64_t intermediate_size = 0; // 0: derived from hidden_ratio
  double norm_eps = 1e-6;
  double initializer_range = 0.02;
  bool tie_word_embeddings = false;
  // Softmax attention layers: the resolved list (attention_layers() turns "pure", "transformer"
  // or "r:1" into it) and their settings.
  std::vector<int64_t> attention;
  int64_t attn_num_heads = 16;
  int64_t attn_num_kv_heads = 16;
  int64_t attn_window = 0;  // 0: none
  double rope_theta = 10000.0;
  bool attn_qkv_bias = false;
};

// "pure" -> [], "transformer" -> all layers, "r:1" -> max(1, round(L / (r + 1))) layers, each at
// the end of an equal segment (L=24, "3:1" -> 3, 7, ..., 23). Throws hla::Error on bad input.
std::vector<int64_t> attention_layers(const std::string& layout, int64_t num_layers);
// Applies the variant's fla defaults (spec tables) to a config that names only the variant and
// sizes: e.g. retnet -> expand_k 1, expand_v 2, hidden_ratio 2; delta_net -> short conv on.
// Also sets the variant's fla head layout (num_heads: gla 4, retnet 8, delta_net 16,
// gated_deltanet 6 with head_dim 256; hgrn2 expand_ratio 128): set those after calling it.
ModelConfig with_variant_defaults(ModelConfig c);
// Validates sizes (hidden divisible by heads, ...); throws hla::Error naming the key.
void validate(const ModelConfig& c);

// Per-layer recurrent state for O(1)-per-token decoding (KV cache for attention layers).
// Complete here so that callers can hold the std::unique_ptr that start_decoding returns.
struct DecodeState {
  std::vector<MixerState> layers;  // one per block; empty states mean "start of the sequence"
};

class HybridLM : public Module {
 public:
  HybridLM(const ModelConfig& config, Generator& gen);
  ~HybridLM() override;
  const ModelConfig& config() const { return config_; }

  // tokens [B,T] (i32/i64) -> logits [B,T,vocab].
  Var forward(const Tensor& tokens);
  // Mean cross-entropy of forward(inputs) against targets [B,T] (already aligned: targets[t] is
  // the token after inputs[t]; -100 takes no loss).
  Var loss(const Tensor& inputs, const Tensor& targets);

  // The dtype activations are computed in; by default (and after set_compute_dtype of the
  // parameters' own dtype) there are no casts at all.
  void set_compute_dtype(DType dtype);
  DType compute_dtype() const;

  // Activation checkpointing of every block (autograd/checkpoint.h): a block keeps only its
  // input for the backward and runs its forward again there, so the training graph holds one
  // block's activations at a time instead of all, for about a third more compute. The values
  // and gradients are unchanged. Off by default; decoding and inspection never checkpoint.
  void set_block_checkpointing(bool on);
  bool block_checkpointing() const;

  // Decoding: feed tokens one step at a time (or a prompt at once), carrying state; equals
  // forward() on the concatenated sequence. decode() builds no graph (runs under NoGradGuard).
  std::unique_ptr<DecodeState> start_decoding(int64_t batch) const;
  // tokens [B,T] -> logits [B,T,vocab] for these new positions.
  Var decode(const Tensor& tokens, DecodeState& state);

 private:
  struct Impl;
  ModelConfig config_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hla::nn
