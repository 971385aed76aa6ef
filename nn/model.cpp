// HybridLM, its config helpers and decoding (nn/model.h; spec/recurrences.md 1.6, 8).
#include "nn/model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include "autograd/checkpoint.h"
#include "autograd/fused.h"
#include "autograd/grad_mode.h"
#include "autograd/primitives.h"
#include "nn/block.h"
#include "nn/embedding.h"
#include "nn/feature_map.h"
#include "nn/inspect.h"
#include "nn/mixers/attention.h"
#include "nn/mixers/delta_net.h"
#include "nn/mixers/gated_deltanet.h"
#include "nn/mixers/gla.h"
#include "nn/mixers/hgrn.h"
#include "nn/mixers/hgrn2.h"
#include "nn/mixers/retnet.h"

namespace hla::nn {

// ---- config helpers

std::vector<int64_t> attention_layers(const std::string& layout, int64_t L) {
  if (L <= 0) throw Error("model.num_layers", "a positive number of layers", std::to_string(L));
  std::vector<int64_t> out;
  if (layout == "pure") return out;
  if (layout == "transformer") {
    for (int64_t i = 0; i < L; ++i) out.push_back(i);
    return out;
  }
  const auto colon = layout.find(':');
  double r = -1;
  if (colon != std::string::npos && layout.substr(colon + 1) == "1") {
    try {
      size_t used = 0;
      r = std::stod(layout.substr(0, colon), &used);
      if (used != colon) r = -1;
    } catch (const std::exception&) {
      r = -1;
    }
  }
  if (!(r >= 0))
    throw Error("model.layout", "\"pure\", \"transformer\" or a linear-to-full ratio \"r:1\" (r >= 0)",
                "\"" + layout + "\"", "e.g. \"3:1\" puts one attention layer after every three linear ones");
  // n attention layers, each the last of one of n equal segments.
  const int64_t n = std::max<int64_t>(1, std::lround(static_cast<double>(L) / (r + 1.0)));
  for (int64_t j = 0; j < n; ++j) out.push_back((j + 1) * L / n - 1);
  return out;
}

ModelConfig with_variant_defaults(ModelConfig c) {
  // The columns "...Config default" of the spec tables (sections 1-6, 8.2).
  const std::string& v = c.variant;
  c.hidden_ratio = 4.0;
  if (v == "hgrn" || v == "hgrn2") {
    c.use_short_conv = false;
    c.use_lower_bound = true;
    if (v == "hgrn2") c.expand_ratio = 128;
  } else if (v == "gla") {
    c.num_heads = 4, c.expand_k = 0.5, c.expand_v = 1.0;
    c.use_short_conv = false, c.use_output_gate = true;
  } else if (v == "retnet") {
    c.num_heads = 8, c.expand_k = 1.0, c.expand_v = 2.0;
    c.use_short_conv = false, c.use_output_gate = true;
    c.hidden_ratio = 2.0;
  } else if (v == "delta_net") {
    c.num_heads = 16, c.expand_k = 1.0, c.expand_v = 1.0;
    c.use_short_conv = true, c.use_output_gate = false;
  } else if (v == "gated_deltanet") {
    c.num_heads = 6, c.head_dim = 256, c.expand_v = 2.0;
    c.use_short_conv = true, c.use_output_gate = true;
  } else if (v != "transformer") {
    validate(c);  // throws naming model.variant
  }
  return c;
}

namespace {
void require(bool ok, const std::string& key, const std::string& expected,
             const std::string& actual, const std::string& hint = "") {
  if (!ok) throw Error(key, expected, actual, hint);
}
std::string str(int64_t v) { return std::to_string(v); }
std::string str(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
int64_t scaled(int64_t d, double e) { return static_cast<int64_t>(static_cast<double>(d) * e); }
}  // namespace

void validate(const ModelConfig& c) {
  static const std::set<std::string> variants = {"hgrn", "hgrn2", "gla", "retnet", "delta_net",
                                                 "gated_deltanet", "transformer"};
  require(variants.count(c.variant) > 0, "model.variant",
          "one of hgrn, hgrn2, gla, retnet, delta_net, gated_deltanet, transformer",
          "\"" + c.variant + "\"");
  require(c.vocab_size > 0, "model.vocab_size", "a positive size", str(c.vocab_size));
  require(c.hidden_size > 0, "model.hidden_size", "a positive size", str(c.hidden_size));
  require(c.num_layers > 0, "model.num_layers", "a positive number of layers", str(c.num_layers));
  require(c.norm_eps > 0, "model.norm_eps", "a positive epsilon", str(c.norm_eps));
  require(c.intermediate_size >= 0, "model.intermediate_size", "0 (derived) or a positive size",
          str(c.intermediate_size));
  require(c.intermediate_size > 0 || c.hidden_ratio > 0, "model.hidden_ratio", "a positive ratio",
          str(c.hidden_ratio));
  require(!c.use_short_conv || c.conv_size >= 1, "model.conv_size", "a positive width",
          str(c.conv_size));
  const int64_t d = c.hidden_size, H = c.num_heads;
  const std::string& v = c.variant;
  if (v == "gla" || v == "retnet" || v == "delta_net") {
    require(H > 0, "model.num_heads", "a positive number of heads", str(H));
    require(scaled(d, c.expand_k) > 0 && scaled(d, c.expand_k) % H == 0, "model.hidden_size",
            "int(hidden_size * expand_k) divisible by model.num_heads",
            str(d) + " * " + str(c.expand_k) + " with " + str(H) + " heads");
    require(scaled(d, c.expand_v) > 0 && scaled(d, c.expand_v) % H == 0, "model.hidden_size",
            "int(hidden_size * expand_v) divisible by model.num_heads",
            str(d) + " * " + str(c.expand_v) + " with " + str(H) + " heads");
    if (v == "retnet")
      require(scaled(d, c.expand_k) / H % 2 == 0, "model.num_heads",
              "an even key head dim (rotary)", str(scaled(d, c.expand_k) / H));
  }
  if (v == "gla" || v == "retnet") {
    require(c.num_kv_heads == 0 || (c.num_kv_heads > 0 && H % c.num_kv_heads == 0),
            "model.num_kv_heads", "0 (= num_heads) or a divisor of model.num_heads = " + str(H),
            str(c.num_kv_heads));
    check_feature_map("model.feature_map", c.feature_map);
  }
  if (v == "gla")
    require(!std::isnan(c.clamp_min) && c.clamp_min < std::numeric_limits<double>::infinity(),
            "model.clamp_min", "a finite log-decay floor (-inf: no clamp)", str(c.clamp_min));
  if (v == "delta_net") {
    require(c.qk_activation == "silu" || c.qk_activation == "relu" || c.qk_activation == "elu" ||
                c.qk_activation == "identity",
            "model.qk_activation", "one of silu, relu, elu, identity", "\"" + c.qk_activation + "\"");
    require(c.qk_norm == "l2" || c.qk_norm == "sum", "model.qk_norm", "l2 or sum",
            "\"" + c.qk_norm + "\"");
  }
  if (v == "hgrn2")
    require(c.expand_ratio > 0 && d % c.expand_ratio == 0, "model.expand_ratio",
            "a divisor of model.hidden_size (d_k per head; heads = hidden / expand_ratio)",
            str(c.expand_ratio) + " for hidden_size " + str(d));
  if (v == "gated_deltanet") {
    require(H > 0, "model.num_heads", "a positive number of heads", str(H));
    require(c.head_dim > 0, "model.head_dim", "a positive head dim", str(c.head_dim));
    require(scaled(c.head_dim, c.expand_v) > 0, "model.expand_v", "head_dim * expand_v >= 1",
            str(c.expand_v));
    require(c.num_v_heads == 0 || (c.num_v_heads > 0 && c.num_v_heads % H == 0),
            "model.num_v_heads", "0 (= num_heads) or a multiple of model.num_heads = " + str(H),
            str(c.num_v_heads));
  }
  // Softmax attention layers (all of them for the transformer variant).
  std::set<int64_t> seen;
  for (int64_t i : c.attention) {
    require(i >= 0 && i < c.num_layers, "model.attention",
            "layer indices in [0, " + str(c.num_layers) + ")", str(i));
    require(seen.insert(i).second, "model.attention", "each layer listed once", str(i));
  }
  if (v == "transformer" || !c.attention.empty()) {
    const int64_t Ha = c.attn_num_heads, Hkv = c.attn_num_kv_heads;
    require(Ha > 0 && d % Ha == 0 && (d / Ha) % 2 == 0, "model.attn_num_heads",
            "a divisor of model.hidden_size leaving an even head dim", str(Ha));
    require(Hkv > 0 && Ha % Hkv == 0, "model.attn_num_kv_heads",
            "a divisor of model.attn_num_heads", str(Hkv));
    require(c.attn_window >= 0, "model.attn_window", "0 (none) or a positive window",
            str(c.attn_window));
    require(c.rope_theta > 0, "model.rope_theta", "a positive base", str(c.rope_theta));
  }
}

// ---- the model tree (names as fla's state dicts)

namespace {

std::shared_ptr<Mixer> make_mixer(const ModelConfig& c, bool attention, Generator& gen) {
  const int64_t d = c.hidden_size;
  const double std = c.initializer_range;
  const std::string& v = c.variant;
  // Listed layers, and every layer of a transformer, take the attn_* settings.
  if (attention || v == "transformer")
    return std::make_shared<Attention>(
        AttentionLayerOptions{.hidden_size = d, .num_heads = c.attn_num_heads,
                              .num_kv_heads = c.attn_num_kv_heads, .qkv_bias = c.attn_qkv_bias,
                              .window_size = c.attn_window, .rope_theta = c.rope_theta,
                              .initializer_range = std},
        gen);
  if (v == "hgrn")
    return std::make_shared<HGRNAttention>(
        HGRNOptions{.hidden_size = d, .use_short_conv = c.use_short_conv,
                    .conv_size = c.conv_size, .norm_eps = c.norm_eps, .initializer_range = std},
        gen);
  if (v == "hgrn2")
    return std::make_shared<HGRN2Attention>(
        HGRN2Options{.hidden_size = d, .expand_ratio = c.expand_ratio,
                     .use_short_conv = c.use_short_conv, .conv_size = c.conv_size,
                     .initializer_range = std},
        gen);
  if (v == "gla")
    return std::make_shared<GatedLinearAttention>(
        GLAOptions{.hidden_size = d, .expand_k = c.expand_k, .expand_v = c.expand_v,
                   .num_heads = c.num_heads, .num_kv_heads = c.num_kv_heads,
                   .feature_map = c.feature_map, .use_short_conv = c.use_short_conv,
                   .conv_size = c.conv_size, .use_output_gate = c.use_output_gate,
                   .norm_eps = c.norm_eps, .clamp_min = c.clamp_min, .initializer_range = std},
        gen);
  if (v == "retnet")
    return std::make_shared<MultiScaleRetention>(
        RetNetOptions{.hidden_size = d, .expand_k = c.expand_k, .expand_v = c.expand_v,
                      .num_heads = c.num_heads, .num_kv_heads = c.num_kv_heads,
                      .feature_map = c.feature_map, .use_output_gate = c.use_output_gate,
                      .norm_eps = c.norm_eps, .initializer_range = std},
        gen);
  if (v == "delta_net")
    return std::make_shared<DeltaNet>(
        DeltaNetOptions{.hidden_size = d, .expand_k = c.expand_k, .expand_v = c.expand_v,
                        .num_heads = c.num_heads, .use_beta = c.use_beta,
                        .use_gate = c.use_output_gate, .use_short_conv = c.use_short_conv,
                        .conv_size = c.conv_size, .allow_neg_eigval = c.allow_neg_eigval,
                        .qk_activation = c.qk_activation, .qk_norm = c.qk_norm,
                        .norm_eps = c.norm_eps, .initializer_range = std},
        gen);
  return std::make_shared<GatedDeltaNet>(
      GatedDeltaNetOptions{.hidden_size = d, .head_dim = c.head_dim, .num_heads = c.num_heads,
                           .num_v_heads = c.num_v_heads, .expand_v = c.expand_v, .use_gate = c.use_output_gate,
                           .use_short_conv = c.use_short_conv, .conv_size = c.conv_size,
                           .allow_neg_eigval = c.allow_neg_eigval, .norm_eps = c.norm_eps,
                           .initializer_range = std},
      gen);
}

// model.layers.{i}
struct LayerList : Module {
  void add(std::shared_ptr<Block> b) {
    blocks.push_back(register_module(std::to_string(blocks.size()), std::move(b)));
  }
  std::vector<std::shared_ptr<Block>> blocks;
};

// "model": model.lower_bounds, model.embeddings, model.layers, model.norm.
struct Backbone : Module {
  Backbone(const ModelConfig& c, Generator& gen) {
    const bool lower_bounds_on = (c.variant == "hgrn" || c.variant == "hgrn2") && c.use_lower_bound;
    if (lower_bounds_on)
      lower_bounds = register_parameter("lower_bounds", Tensor::zeros({c.num_layers, c.hidden_size}));
    embeddings = register_module(
        "embeddings", std::make_shared<Embedding>(c.vocab_size, c.hidden_size, gen, c.initializer_range));
    layers = register_module("layers", std::make_shared<LayerList>());
    const std::set<int64_t> attn(c.attention.begin(), c.attention.end());
    const int64_t inter = c.intermediate_size > 0 ? c.intermediate_size
                                                  : mlp_intermediate_size(c.hidden_size, c.hidden_ratio);
    for (int64_t i = 0; i < c.num_layers; ++i)
      layers->add(std::make_shared<Block>(make_mixer(c, attn.count(i) > 0, gen), c.hidden_size,
                                          inter, c.norm_eps, gen, c.initializer_range));
    norm = register_module("norm", std::make_shared<RMSNorm>(c.hidden_size, c.norm_eps));
  }

  // Per-layer forget-gate floors (spec 1.6); layer 0's is 0, so it gets none.
  std::vector<Var> layer_lower_bounds() const {
    std::vector<Var> out(layers->blocks.size());
    if (!lower_bounds.defined()) return out;
    // [L,d]; bf16 lower bounds (pure bf16 training) scheduled in f32, like the gates they floor
    const Var lb = lower_bound_schedule(to_dtype(lower_bounds, gate_dtype(lower_bounds.dtype())));
    for (size_t l = 1; l < out.size(); ++l) out[l] = select(lb, 0, static_cast<int64_t>(l));
    return out;
  }

  Var lower_bounds;
  std::shared_ptr<Embedding> embeddings;
  std::shared_ptr<LayerList> layers;
  std::shared_ptr<RMSNorm> norm;
};

}  // namespace

struct HybridLM::Impl {
  std::shared_ptr<Backbone> model;
  std::shared_ptr<Linear> lm_head;  // null when tied to the embeddings
  std::vector<std::string> record_prefixes;  // "layer_03/gla": where block i records (inspect)
  std::optional<DType> compute_dtype;        // unset: the parameters' dtype
  bool checkpoint_blocks = false;

  // tokens [B,T] -> the final norm's output [B,T,hidden] in the compute dtype; with `state`,
  // continues from and updates it.
  Var hidden(const Tensor& tokens, DecodeState* state) const {
    if (tokens.dim() != 2)
      throw Error("HybridLM", "tokens [B,T]", to_string(tokens.shape()));
    // Casting the looked-up rows rather than the table: the same values, and the backward's
    // scatter-add of repeated tokens runs in the table's dtype.
    const Var& table = model->embeddings->weight;
    Var h = to_dtype(model->embeddings->forward(tokens), compute_dtype.value_or(table.dtype()));
    const std::vector<Var> lbs = model->layer_lower_bounds();
    const auto& blocks = model->layers->blocks;
    inspect::Recorder* rec = inspect::active();
    const std::string outer_prefix = rec ? rec->prefix() : "";
    if (rec) rec->set_tokens(tokens);
    for (size_t i = 0; i < blocks.size(); ++i) {
      if (rec) rec->set_prefix((outer_prefix.empty() ? "" : outer_prefix + "/") + record_prefixes[i]);
      if (checkpoint_blocks && !state && !rec)
        h = checkpoint(
            [block = blocks[i]](const std::vector<Var>& in) {
              return std::vector<Var>{block->forward(in[0], nullptr, in[1])};
            },
            {h, lbs[i]}, "block")[0];
      else
        h = blocks[i]->forward(h, state ? &state->layers[i] : nullptr, lbs[i]);
    }
    if (rec) rec->set_prefix(outer_prefix);
    return model->norm->forward(h);
  }
  // The head's weight [vocab, hidden]: lm_head's, or the tied embedding table.
  const Var& head_weight() const { return lm_head ? lm_head->weight : model->embeddings->weight; }
  // tokens [B,T] -> logits [B,T,vocab] in the compute dtype; with `state`, continues from and
  // updates it.
  Var run(const Tensor& tokens, DecodeState* state) const {
    const Var h = hidden(tokens, state);
    return matmul(h, transpose(to_dtype(head_weight(), h.dtype()), 0, 1));
  }
  // The logits in the parameters' dtype (f32 under mixed precision), for callers that read them.
  Var logits(const Tensor& tokens, DecodeState* state) const {
    return to_dtype(run(tokens, state), model->embeddings->weight.dtype());
  }
};

HybridLM::HybridLM(const ModelConfig& config, Generator& gen)
    : config_(config), impl_(std::make_unique<Impl>()) {
  validate(config_);
  impl_->model = register_module("model", std::make_shared<Backbone>(config_, gen));
  const std::set<int64_t> attn(config_.attention.begin(), config_.attention.end());
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    char layer[32];
    std::snprintf(layer, sizeof layer, "layer_%02lld/", static_cast<long long>(i));
    const bool is_attention = attn.count(i) > 0 || config_.variant == "transformer";
    impl_->record_prefixes.push_back(layer + (is_attention ? std::string("attention") : config_.variant));
  }
  if (!config_.tie_word_embeddings)
    impl_->lm_head = register_module(
        "lm_head", std::make_shared<Linear>(config_.hidden_size, config_.vocab_size, false, gen,
                                            config_.initializer_range));
}

HybridLM::~HybridLM() = default;

void HybridLM::set_compute_dtype(DType dtype) {
  if (!is_floating(dtype))
    throw Error("HybridLM::set_compute_dtype", "a floating dtype (f32, f64 or bf16)",
                dtype_name(dtype));
  impl_->compute_dtype = dtype;
}

DType HybridLM::compute_dtype() const {
  return impl_->compute_dtype.value_or(impl_->model->embeddings->weight.dtype());
}

void HybridLM::set_block_checkpointing(bool on) {
  impl_->checkpoint_blocks = on;
}
bool HybridLM::block_checkpointing() const {
  return impl_->checkpoint_blocks;
}

Var HybridLM::forward(const Tensor& tokens) { return impl_->logits(tokens, nullptr); }

Var HybridLM::loss(const Tensor& inputs, const Tensor& targets) {
  if (targets.shape() != inputs.shape())
    throw Error("HybridLM::loss", "targets shaped like the inputs " + to_string(inputs.shape()),
                to_string(targets.shape()));
  // The head and the loss in one node over chunks of rows (linear_cross_entropy): the
  // [B*T, vocab] logits and their gradient never exist whole. bf16 stays bf16 (the
  // cross-entropy kernels read it as float and return an f32 loss); other dtypes take the
  // parameters' dtype.
  const Var h = impl_->hidden(inputs, nullptr);
  const DType dt =
      h.dtype() == DType::bf16 ? DType::bf16 : impl_->model->embeddings->weight.dtype();
  // The head's weight goes in as it is (the f32 master weight): the node casts it for its
  // products and returns its gradient in f32, with no bf16 rounding of the chunks' f32 sum.
  return linear_cross_entropy(reshape(to_dtype(h, dt), {inputs.numel(), config_.hidden_size}),
                              impl_->head_weight(), targets.reshape({targets.numel()}));
}

std::unique_ptr<DecodeState> HybridLM::start_decoding(int64_t batch) const {
  if (batch <= 0) throw Error("HybridLM::start_decoding", "a positive batch", std::to_string(batch));
  auto s = std::make_unique<DecodeState>();
  s->layers.resize(static_cast<size_t>(config_.num_layers));  // empty states = zeros
  return s;
}

Var HybridLM::decode(const Tensor& tokens, DecodeState& state) {
  NoGradGuard no_grad;  // decoding never trains: keep no graph across steps
  return impl_->logits(tokens, &state);
}

}  // namespace hla::nn
