// defines: nn::ModelConfig <-> fla's config.json (the Hugging Face config of fla's *ForCausalLM
// models; spec/recurrences.md sections 1-8).
//
// config.json keys written and read, by variant (model_type):
//   every variant   model_type, architectures, vocab_size, hidden_size, num_hidden_layers,
//                   hidden_ratio, intermediate_size (null: derived), hidden_act ("swish"),
//                   norm_eps, elementwise_affine (true), tie_word_embeddings, initializer_range,
//                   max_position_embeddings, attn (null | hybrid dict), torch_dtype
//   hgrn            expand_ratio (1), use_short_conv, conv_size, use_lower_bound
//   hgrn2           num_heads, expand_ratio (d_k; num_heads = hidden / expand_ratio),
//                   use_short_conv, conv_size, use_lower_bound
//   gla             num_heads, num_kv_heads (null: num_heads), expand_k, expand_v,
//                   use_short_conv, conv_size, use_output_gate, feature_map (null: none),
//                   clamp_min (null: none)
//   retnet          num_heads, num_kv_heads (null: num_heads), expand_k, expand_v,
//                   use_output_gate, feature_map (null: none)
//   delta_net       num_heads, expand_k, expand_v, use_gate, use_short_conv, conv_size,
//                   allow_neg_eigval, use_beta, qk_norm ("l2" | "sum"), qk_activation ("silu" |
//                   "relu" | "elu" | "identity")
//   gated_deltanet  num_heads, num_v_heads (null: num_heads), head_dim, expand_v, use_gate,
//                   use_short_conv, conv_size, allow_neg_eigval
//   transformer     num_heads, num_kv_heads, qkv_bias, qk_norm (false), window_size (null),
//                   rope_theta (the attn_* fields of ModelConfig)
//
// Hybrid layers: "attn" is null, one dict or a list of dicts (section 8.1) with layers,
// num_heads, num_kv_heads, qkv_bias, window_size, rope_theta. hla has one attention setting per
// model, so every dict of a list must agree on everything but layers.
//
// Reading fills absent keys with fla's config-class defaults (hidden_size 2048, 24 layers (21 for
// gated_deltanet), vocab 32000, and the variant's head layout). A value hla cannot run (another
// activation, a learned feature map, kv heads that do not divide num_heads, the transformer's
// qk_norm, ...) throws hla::Error naming the file and key; keys that do not change the maths
// (fuse_*, use_cache, token ids, attn_mode, ...) are ignored, and keys hla does not know are
// reported in `notes`.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/model.h"

namespace hla::run {

// fla's config.json for `model`; torch_dtype is "float32" or "bfloat16" (the tensors' dtype).
nlohmann::json to_hf_config(const nn::ModelConfig& model, const std::string& torch_dtype);

struct HfConfig {
  nn::ModelConfig model;           // validated; attention holds the resolved layer list
  std::vector<std::string> notes;  // unknown keys and other things worth telling the user
};

// Parses a config.json object; `source` (the file name) prefixes every error.
HfConfig from_hf_config(const nlohmann::json& config, const std::string& source);

}  // namespace hla::run
