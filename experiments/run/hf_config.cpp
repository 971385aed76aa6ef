// defines: to_hf_config and from_hf_config (see hf_config.h).
#include "experiments/run/hf_config.h"

#include <cmath>
#include <map>
#include <set>

#include "nn/feature_map.h"
#include "tensor/error.h"

namespace hla::run {

using json = nlohmann::json;

namespace {

const std::map<std::string, std::string>& architectures() {
  static const std::map<std::string, std::string> names = {
      {"hgrn", "HGRNForCausalLM"},         {"hgrn2", "HGRN2ForCausalLM"},
      {"gla", "GLAForCausalLM"},           {"retnet", "RetNetForCausalLM"},
      {"delta_net", "DeltaNetForCausalLM"}, {"gated_deltanet", "GatedDeltaNetForCausalLM"},
      {"transformer", "TransformerForCausalLM"}};
  return names;
}

json window_json(int64_t window) { return window > 0 ? json(window) : json(nullptr); }
// hla's "0 = the default" head counts and "none" / -inf options are fla's None.
json heads_json(int64_t heads) { return heads > 0 ? json(heads) : json(nullptr); }

// Reads keys of one JSON object with type checks, remembering which keys were consumed.
class Reader {
 public:
  Reader(const json& object, std::string where) : j_(object), where_(std::move(where)) {}

  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  // Absent or null -> fallback.
  int64_t integer(const std::string& key, int64_t fallback) {
    return typed(key, fallback, &json::is_number_integer, "an integer");
  }
  double number(const std::string& key, double fallback) {
    return typed(key, fallback, &json::is_number, "a number");
  }
  bool boolean(const std::string& key, bool fallback) {
    return typed(key, fallback, &json::is_boolean, "true or false");
  }
  std::string string(const std::string& key, const std::string& fallback) {
    return typed(key, fallback, &json::is_string, "a string");
  }
  // The key must be absent, null or (if `allowed` is not null) equal to `allowed`.
  void require(const std::string& key, const json& allowed, const std::string& why) {
    used_.insert(key);
    if (!has(key) || (!allowed.is_null() && j_.at(key) == allowed)) return;
    throw Error(where_ + ": " + key,
                allowed.is_null() ? std::string("null") : "null or " + allowed.dump(),
                j_.at(key).dump(), why);
  }
  void mark_used(const std::string& key) { used_.insert(key); }
  const json& at(const std::string& key) {
    used_.insert(key);
    return j_.at(key);
  }
  std::vector<std::string> unused(const std::set<std::string>& ignored) const {
    std::vector<std::string> out;
    for (auto& [key, value] : j_.items())
      if (!used_.count(key) && !ignored.count(key)) out.push_back(key);
    return out;
  }
  [[noreturn]] void fail(const std::string& key, const std::string& expected,
                         const std::string& hint = "") const {
    throw Error(where_ + ": " + key, expected, j_.contains(key) ? j_.at(key).dump() : "nothing",
                hint);
  }

 private:
  template <class T>
  T typed(const std::string& key, T fallback, bool (json::*is)() const noexcept,
          const char* what) {
    used_.insert(key);
    if (!has(key)) return fallback;
    if (!(j_.at(key).*is)()) fail(key, what);
    return j_.at(key).get<T>();
  }

  const json& j_;
  std::string where_;
  std::set<std::string> used_;
};

// Keys of fla / transformers configs that do not change the function hla computes.
const std::set<std::string>& ignored_keys() {
  static const std::set<std::string> keys = {
      "architectures",   "model_type",        "torch_dtype",    "transformers_version",
      "use_cache",       "pad_token_id",      "bos_token_id",   "eos_token_id",
      "fuse_norm",       "fuse_swiglu",       "fuse_cross_entropy",
      "fuse_linear_cross_entropy",            "use_l2warp",     "attn_mode",
      "max_position_embeddings",              "use_gk",         "use_gv",
      "use_output_norm", "prenorm_residual_strategy",           "rescale_prenorm_residual",
      "_name_or_path",   "auto_map",          "return_dict",    "output_hidden_states",
      "output_attentions", "tokenizer_class"};
  return keys;
}

// The hybrid `attn` spec (one dict or a list) into model.attention and the attn_* settings.
void read_attn(const json& spec, const std::string& source, nn::ModelConfig& m) {
  const std::vector<json> dicts = spec.is_array() ? spec.get<std::vector<json>>()
                                                  : std::vector<json>{spec};
  std::set<int64_t> layers;
  for (size_t i = 0; i < dicts.size(); ++i) {
    std::string where = source;
    where.append(": attn");
    if (spec.is_array()) where.append("[").append(std::to_string(i)).append("]");
    if (!dicts[i].is_object())
      throw Error(where, "a dict with layers and num_heads (spec section 8.1)", dicts[i].dump());
    Reader r(dicts[i], where);
    if (!r.has("layers") || !r.at("layers").is_array()) r.fail("layers", "a list of layer indices");
    if (!r.has("num_heads")) r.fail("num_heads", "a positive integer (required)");
    const int64_t heads = r.integer("num_heads", 0);
    nn::ModelConfig settings = m;
    settings.attn_num_heads = heads;
    settings.attn_num_kv_heads = r.integer("num_kv_heads", heads);
    settings.attn_qkv_bias = r.boolean("qkv_bias", false);
    settings.attn_window = r.integer("window_size", 0);
    settings.rope_theta = r.number("rope_theta", 10000.0);
    if (i > 0 && (settings.attn_num_heads != m.attn_num_heads ||
                  settings.attn_num_kv_heads != m.attn_num_kv_heads ||
                  settings.attn_qkv_bias != m.attn_qkv_bias ||
                  settings.attn_window != m.attn_window || settings.rope_theta != m.rope_theta))
      throw Error(where, "the same num_heads, num_kv_heads, qkv_bias, window_size and rope_theta as attn[0]",
                  dicts[i].dump(), "hla has one attention setting per model");
    m.attn_num_heads = settings.attn_num_heads;
    m.attn_num_kv_heads = settings.attn_num_kv_heads;
    m.attn_qkv_bias = settings.attn_qkv_bias;
    m.attn_window = settings.attn_window;
    m.rope_theta = settings.rope_theta;
    for (const json& l : r.at("layers")) {
      if (!l.is_number_integer() || l.get<int64_t>() < 0 || l.get<int64_t>() >= m.num_layers)
        r.fail("layers", "indices in [0, " + std::to_string(m.num_layers) + ")");
      if (!layers.insert(l.get<int64_t>()).second)
        throw Error(where + ": layers", "each layer in one dict only",
                    "layer " + l.dump() + " twice");
    }
  }
  m.attention.assign(layers.begin(), layers.end());
}

}  // namespace

json to_hf_config(const nn::ModelConfig& m, const std::string& torch_dtype) {
  const std::string& v = m.variant;
  json j;
  j["model_type"] = v;
  j["architectures"] = {architectures().at(v)};
  j["vocab_size"] = m.vocab_size;
  j["hidden_size"] = m.hidden_size;
  j["num_hidden_layers"] = m.num_layers;
  j["hidden_ratio"] = m.hidden_ratio;
  j["intermediate_size"] = m.intermediate_size > 0 ? json(m.intermediate_size) : json(nullptr);
  j["hidden_act"] = "swish";
  j["norm_eps"] = m.norm_eps;
  j["elementwise_affine"] = true;
  j["tie_word_embeddings"] = m.tie_word_embeddings;
  j["initializer_range"] = m.initializer_range;
  j["max_position_embeddings"] = 2048;
  j["torch_dtype"] = torch_dtype;
  if (v == "hgrn" || v == "hgrn2") {
    j["expand_ratio"] = v == "hgrn" ? 1 : m.expand_ratio;
    if (v == "hgrn2") j["num_heads"] = m.hidden_size / m.expand_ratio;
    j["use_short_conv"] = m.use_short_conv;
    j["conv_size"] = m.conv_size;
    j["use_lower_bound"] = m.use_lower_bound;
  } else if (v == "gla" || v == "retnet") {
    j["num_heads"] = m.num_heads;
    j["num_kv_heads"] = heads_json(m.num_kv_heads);
    j["expand_k"] = m.expand_k;
    j["expand_v"] = m.expand_v;
    j["use_output_gate"] = m.use_output_gate;
    j["feature_map"] = m.feature_map == "none" ? json(nullptr) : json(m.feature_map);
    if (v == "gla") {
      j["use_short_conv"] = m.use_short_conv;
      j["conv_size"] = m.conv_size;
      j["clamp_min"] = std::isinf(m.clamp_min) && m.clamp_min < 0 ? json(nullptr) : json(m.clamp_min);
    }
  } else if (v == "delta_net" || v == "gated_deltanet") {
    j["num_heads"] = m.num_heads;
    j["expand_v"] = m.expand_v;
    j["use_gate"] = m.use_output_gate;
    j["use_short_conv"] = m.use_short_conv;
    j["conv_size"] = m.conv_size;
    j["allow_neg_eigval"] = m.allow_neg_eigval;
    if (v == "delta_net") {
      j["expand_k"] = m.expand_k;
      j["use_beta"] = m.use_beta;
      j["qk_norm"] = m.qk_norm;
      j["qk_activation"] = m.qk_activation;
    } else {
      j["head_dim"] = m.head_dim;
      j["num_v_heads"] = heads_json(m.num_v_heads);
    }
  } else {  // transformer: its only mixer is attention
    j["num_heads"] = m.attn_num_heads;
    j["num_kv_heads"] = m.attn_num_kv_heads;
    j["qkv_bias"] = m.attn_qkv_bias;
    j["qk_norm"] = false;
    j["window_size"] = window_json(m.attn_window);
    j["rope_theta"] = m.rope_theta;
  }
  if (v != "transformer" && !m.attention.empty())
    j["attn"] = {{"layers", m.attention},
                 {"num_heads", m.attn_num_heads},
                 {"num_kv_heads", m.attn_num_kv_heads},
                 {"qkv_bias", m.attn_qkv_bias},
                 {"window_size", window_json(m.attn_window)},
                 {"rope_theta", m.rope_theta}};
  else
    j["attn"] = nullptr;
  return j;
}

HfConfig from_hf_config(const json& config, const std::string& source) {
  if (!config.is_object()) throw Error(source, "a JSON object (fla's config.json)", config.type_name());
  Reader r(config, source);
  const std::string v = r.string("model_type", "");
  if (!architectures().count(v))
    r.fail("model_type", "one of hgrn, hgrn2, gla, retnet, delta_net, gated_deltanet, transformer",
           "hla runs these fla models only");

  // fla's config-class defaults, then every key present.
  HfConfig out;
  nn::ModelConfig& m = out.model;
  m.variant = v;
  m = nn::with_variant_defaults(m);
  m.vocab_size = r.integer("vocab_size", 32000);
  m.hidden_size = r.integer("hidden_size", 2048);
  m.num_layers = r.integer("num_hidden_layers", v == "gated_deltanet" ? 21 : 24);
  m.hidden_ratio = r.number("hidden_ratio", m.hidden_ratio);
  m.intermediate_size = r.integer("intermediate_size", 0);
  m.norm_eps = r.number("norm_eps", 1e-6);
  m.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  m.initializer_range = r.number("initializer_range", 0.02);
  const std::string act = r.string("hidden_act", "swish");
  if (act != "swish" && act != "silu") r.fail("hidden_act", "\"swish\" (SwiGLU MLP)", "hla's MLP is SwiGLU");
  r.require("elementwise_affine", true, "hla's norms always have weights");
  r.require("conv_bias", false, "hla's short convolutions have no bias");

  if (v == "hgrn" || v == "hgrn2") {
    m.use_short_conv = r.boolean("use_short_conv", false);
    m.conv_size = r.integer("conv_size", 4);
    m.use_lower_bound = r.boolean("use_lower_bound", true);
  }
  if (v == "hgrn") {
    r.require("expand_ratio", 1, "hla's HGRN has input_dim = hidden_size");
  } else if (v == "hgrn2") {
    // expand_ratio wins; else it is derived from num_heads (spec 2.1).
    if (r.has("expand_ratio")) {
      m.expand_ratio = r.integer("expand_ratio", 128);
      if (r.has("num_heads") && r.integer("num_heads", 0) * m.expand_ratio != m.hidden_size)
        r.fail("num_heads", "hidden_size / expand_ratio = " +
                                std::to_string(m.hidden_size / std::max<int64_t>(1, m.expand_ratio)));
    } else if (r.has("num_heads")) {
      const int64_t heads = r.integer("num_heads", 1);
      if (heads <= 0 || m.hidden_size % heads != 0) r.fail("num_heads", "a divisor of hidden_size");
      m.expand_ratio = m.hidden_size / heads;
    }
    r.mark_used("num_heads");
  } else if (v == "gla" || v == "retnet") {
    m.num_heads = r.integer("num_heads", m.num_heads);
    m.num_kv_heads = r.integer("num_kv_heads", 0);
    if (m.num_kv_heads < 0 || (m.num_kv_heads > 0 && m.num_heads % m.num_kv_heads != 0))
      r.fail("num_kv_heads", "null or a divisor of num_heads = " + std::to_string(m.num_heads));
    m.feature_map = r.string("feature_map", "none");
    if (r.has("feature_map") && (m.feature_map == "none" || !nn::is_feature_map(m.feature_map)))
      r.fail("feature_map", "null or one of relu, silu, swish, sigmoid",
             "hla builds the elementwise feature maps only (no hedgehog, t2r, dpfp, ...)");
    m.expand_k = r.number("expand_k", m.expand_k);
    m.expand_v = r.number("expand_v", m.expand_v);
    m.use_output_gate = r.boolean("use_output_gate", true);
    if (v == "gla") {
      m.use_short_conv = r.boolean("use_short_conv", false);
      m.conv_size = r.integer("conv_size", 4);
      m.clamp_min = r.number("clamp_min", m.clamp_min);
    } else if (r.boolean("use_short_conv", false)) {
      out.notes.push_back("use_short_conv = true ignored: fla's RetNet block does not pass it on");
    }
  } else if (v == "delta_net" || v == "gated_deltanet") {
    m.num_heads = r.integer("num_heads", m.num_heads);
    m.expand_v = r.number("expand_v", m.expand_v);
    m.use_output_gate = r.boolean("use_gate", v == "gated_deltanet");
    m.use_short_conv = r.boolean("use_short_conv", true);
    m.conv_size = r.integer("conv_size", 4);
    m.allow_neg_eigval = r.boolean("allow_neg_eigval", false);
    if (v == "delta_net") {
      m.expand_k = r.number("expand_k", m.expand_k);
      m.use_beta = r.boolean("use_beta", true);
      m.qk_norm = r.string("qk_norm", "l2");
      if (m.qk_norm != "l2" && m.qk_norm != "sum") r.fail("qk_norm", "\"l2\" or \"sum\"");
      m.qk_activation = r.string("qk_activation", "silu");
      if (m.qk_activation != "silu" && m.qk_activation != "relu" && m.qk_activation != "elu" &&
          m.qk_activation != "identity")
        r.fail("qk_activation", "one of \"silu\", \"relu\", \"elu\", \"identity\"");
    } else {
      m.head_dim = r.integer("head_dim", m.head_dim);
      m.num_v_heads = r.integer("num_v_heads", 0);
      if (m.num_v_heads < 0 || (m.num_v_heads > 0 && m.num_v_heads % m.num_heads != 0))
        r.fail("num_v_heads", "null or a multiple of num_heads = " + std::to_string(m.num_heads),
               "hla's grouped value heads (GVA) need num_v_heads >= num_heads");
    }
  } else {  // transformer
    m.attn_num_heads = r.integer("num_heads", 32);
    m.attn_num_kv_heads = r.integer("num_kv_heads", m.attn_num_heads);
    m.attn_qkv_bias = r.boolean("qkv_bias", false);
    m.attn_window = r.integer("window_size", 0);
    m.rope_theta = r.number("rope_theta", 10000.0);
    r.require("qk_norm", false, "hla's attention has no q/k norm");
  }
  if (v != "transformer" && r.has("attn")) read_attn(r.at("attn"), source, m);
  r.mark_used("attn");
  if (v == "transformer") m.attention = nn::attention_layers("transformer", m.num_layers);

  for (const std::string& key : r.unused(ignored_keys()))
    out.notes.push_back("ignored key '" + key + "' (not used by hla)");
  try {
    nn::validate(m);
  } catch (const Error& e) {
    throw Error(source, "a model hla can build", e.what());
  }
  return out;
}

}  // namespace hla::run
