// The only file that includes toml++ (it compiles slowly): TOML text -> a flat map of typed
// values by "section.key" -> RunConfig through one field table, which also writes the TOML back.
#include "experiments/run/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <variant>

#include "tensor/error.h"

namespace hla::run {

namespace {

// ---- a config value, independent of toml++

struct Value {
  std::variant<int64_t, double, bool, std::string, std::vector<int64_t>> v;
  std::string unsupported;  // non-empty: a TOML type no key takes (table, array of strings...)
};

std::string type_name(const Value& value) {
  if (!value.unsupported.empty()) return value.unsupported;
  switch (value.v.index()) {
    case 0:
      return "an integer";
    case 1:
      return "a float";
    case 2:
      return "a boolean";
    case 3:
      return "a string";
    default:
      return "an array of integers";
  }
}

Value from_node(const toml::node& node) {
  if (auto i = node.value_exact<int64_t>()) return {*i, ""};
  if (auto d = node.value_exact<double>()) return {*d, ""};
  if (auto b = node.value_exact<bool>()) return {*b, ""};
  if (auto s = node.value_exact<std::string>()) return {*s, ""};
  if (const toml::array* a = node.as_array()) {
    std::vector<int64_t> ints;
    for (const toml::node& e : *a) {
      auto i = e.value_exact<int64_t>();
      if (!i) return {int64_t{0}, "an array of non-integers"};
      ints.push_back(*i);
    }
    return {ints, ""};
  }
  return {int64_t{0}, node.is_table() ? "a table" : "an unsupported TOML value"};
}

using Flat = std::map<std::string, Value>;  // "section.key" -> value

Flat flatten(const std::string& text, const std::string& source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << "line " << e.source().begin.line << ", column " << e.source().begin.column;
    throw Error(source, "valid TOML", std::string(e.description()) + " at " + where.str());
  }
  Flat flat;
  for (const auto& [section, node] : root) {
    const toml::table* table = node.as_table();
    if (!table)
      throw Error(source, "every key inside a [model], [data], [optim] or [train] table",
                  "top-level key '" + std::string(section.str()) + "'",
                  "put it under its table, e.g. [train] steps = 100");
    for (const auto& [key, value] : *table)
      flat[std::string(section.str()) + "." + std::string(key.str())] = from_node(value);
  }
  return flat;
}

// "section.key=value": the value is parsed as TOML (1e-3, true, [3, 7], "x") or, failing that,
// taken as a bare string (--set model.variant=gla).
void apply_override(Flat& flat, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0 || assignment.find('.') > eq)
    throw Error("--set", "section.key=value", "'" + assignment + "'",
                "e.g. --set optim.lr=1e-3 or --set model.variant=gla");
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  try {
    const toml::table parsed = toml::parse("v = " + text);
    flat[key] = from_node(*parsed.get("v"));
  } catch (const toml::parse_error&) {
    flat[key] = {text, ""};
  }
}

// ---- the field table: every key, bound to where it lives in a RunConfig

using Target = std::variant<int64_t*, double*, bool*, std::string*, std::vector<int64_t>*>;
struct Field {
  std::string key;  // "section.key"
  Target target;
};

std::vector<Field> fields(RunConfig& c) {
  nn::ModelConfig& m = c.model;
  return {
      {"model.variant", &m.variant},
      {"model.layout", &c.layout},
      {"model.attention_layers", &m.attention},
      {"model.vocab_size", &m.vocab_size},
      {"model.hidden_size", &m.hidden_size},
      {"model.num_layers", &m.num_layers},
      {"model.num_heads", &m.num_heads},
      {"model.expand_k", &m.expand_k},
      {"model.expand_v", &m.expand_v},
      {"model.expand_ratio", &m.expand_ratio},
      {"model.head_dim", &m.head_dim},
      {"model.use_short_conv", &m.use_short_conv},
      {"model.conv_size", &m.conv_size},
      {"model.use_output_gate", &m.use_output_gate},
      {"model.allow_neg_eigval", &m.allow_neg_eigval},
      {"model.num_kv_heads", &m.num_kv_heads},
      {"model.feature_map", &m.feature_map},
      {"model.clamp_min", &m.clamp_min},
      {"model.use_beta", &m.use_beta},
      {"model.qk_activation", &m.qk_activation},
      {"model.qk_norm", &m.qk_norm},
      {"model.num_v_heads", &m.num_v_heads},
      {"model.use_lower_bound", &m.use_lower_bound},
      {"model.hidden_ratio", &m.hidden_ratio},
      {"model.intermediate_size", &m.intermediate_size},
      {"model.norm_eps", &m.norm_eps},
      {"model.initializer_range", &m.initializer_range},
      {"model.tie_word_embeddings", &m.tie_word_embeddings},
      {"model.attn_num_heads", &m.attn_num_heads},
      {"model.attn_num_kv_heads", &m.attn_num_kv_heads},
      {"model.attn_window", &m.attn_window},
      {"model.rope_theta", &m.rope_theta},
      {"model.attn_qkv_bias", &m.attn_qkv_bias},
      {"data.task", &c.data.task},
      {"data.path", &c.data.path},
      {"data.val_path", &c.data.val_path},
      {"data.train_split", &c.data.train_split},
      {"data.val_split", &c.data.val_split},
      {"data.format", &c.data.format},
      {"data.bin_vocab_size", &c.data.bin_vocab_size},
      {"data.tokenizer", &c.data.tokenizer},
      {"optim.name", &c.optim.name},
      {"optim.lr", &c.optim.lr},
      {"optim.min_lr", &c.optim.min_lr},
      {"optim.schedule", &c.optim.schedule},
      {"optim.warmup_steps", &c.optim.warmup_steps},
      {"optim.beta1", &c.optim.beta1},
      {"optim.beta2", &c.optim.beta2},
      {"optim.eps", &c.optim.eps},
      {"optim.weight_decay", &c.optim.weight_decay},
      {"optim.momentum", &c.optim.momentum},
      {"optim.nesterov", &c.optim.nesterov},
      {"optim.grad_clip", &c.optim.grad_clip},
      {"train.steps", &c.train.steps},
      {"train.batch_size", &c.train.batch_size},
      {"train.grad_accum", &c.train.grad_accum},
      {"train.seq_len", &c.train.seq_len},
      {"train.seed", &c.train.seed},
      {"train.device", &c.train.device},
      {"train.precision", &c.train.precision},
      {"train.activation_checkpointing", &c.train.activation_checkpointing},
      {"train.out", &c.train.out},
      {"train.log_interval", &c.train.log_interval},
      {"train.eval_interval", &c.train.eval_interval},
      {"train.eval_batches", &c.train.eval_batches},
      {"train.checkpoint_interval", &c.train.checkpoint_interval},
      {"train.threads", &c.train.threads},
  };
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

void reject_unknown_keys(const Flat& flat, const std::vector<Field>& known,
                         const std::string& source) {
  for (const auto& [key, value] : flat) {
    const bool found =
        std::any_of(known.begin(), known.end(), [&](const Field& f) { return f.key == key; });
    if (found) continue;
    const std::string section = key.substr(0, key.find('.'));
    std::string closest, same_section;
    size_t best = 4;  // suggest only near misses
    for (const Field& f : known) {
      if (f.key.compare(0, section.size() + 1, section + ".") == 0)
        same_section += (same_section.empty() ? "" : ", ") + f.key.substr(section.size() + 1);
      const size_t d = edit_distance(key, f.key);
      if (d < best) best = d, closest = f.key;
    }
    std::string hint = closest.empty() ? "" : "did you mean '" + closest + "'? ";
    hint += same_section.empty() ? "tables are [model], [data], [optim], [train]"
                                 : "keys of [" + section + "]: " + same_section;
    throw Error(source, "a known config key", "unknown key '" + key + "'", hint);
  }
}

void assign(const Field& field, const Value& value, const std::string& source) {
  const auto wrong_type = [&](const char* expected) {
    return Error(source, field.key + " to be " + expected, type_name(value));
  };
  std::visit(
      [&](auto* target) {
        using T = std::remove_pointer_t<decltype(target)>;
        if constexpr (std::is_same_v<T, double>) {
          if (const auto* d = std::get_if<double>(&value.v))
            *target = *d;
          else if (const auto* i = std::get_if<int64_t>(&value.v); i && value.unsupported.empty())
            *target = static_cast<double>(*i);
          else
            throw wrong_type("a number");
        } else {
          const auto* v = std::get_if<T>(&value.v);
          if (!v || !value.unsupported.empty()) {
            if constexpr (std::is_same_v<T, int64_t>)
              throw wrong_type("an integer");
            else if constexpr (std::is_same_v<T, bool>)
              throw wrong_type("a boolean (true/false)");
            else if constexpr (std::is_same_v<T, std::string>)
              throw wrong_type("a string");
            else
              throw wrong_type("an array of integers");
          }
          *target = *v;
        }
      },
      field.target);
}

// ---- writing TOML

std::string toml_double(double x) {
  char buf[64];
  const auto end = std::to_chars(buf, buf + sizeof buf, x).ptr;
  std::string s(buf, end);
  if (s.find_first_of(".eni") == std::string::npos) s += ".0";  // 1 -> 1.0 (TOML float)
  return s;
}

std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    if (ch == '"' || ch == '\\')
      out += '\\', out += ch;
    else if (ch == '\n')
      out += "\\n";
    else if (ch == '\t')
      out += "\\t";
    else if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", ch);
      out += buf;
    } else
      out += ch;
  }
  return out + "\"";
}

std::string toml_value(const Target& target) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, int64_t>)
          return std::to_string(*p);
        else if constexpr (std::is_same_v<T, double>)
          return toml_double(*p);
        else if constexpr (std::is_same_v<T, bool>)
          return *p ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::string>)
          return toml_string(*p);
        else {
          std::string s = "[";
          for (size_t i = 0; i < p->size(); ++i) s += (i ? ", " : "") + std::to_string((*p)[i]);
          return s + "]";
        }
      },
      target);
}

}  // namespace

RunConfig parse_run_config(const std::string& text, const std::string& source,
                           const std::vector<std::string>& overrides) {
  Flat flat = flatten(text, source);
  for (const std::string& o : overrides) apply_override(flat, o);

  RunConfig c;
  const std::vector<Field> table = fields(c);
  reject_unknown_keys(flat, table, source);
  const auto field = [&](const std::string& key) -> const Field& {
    return *std::find_if(table.begin(), table.end(), [&](const Field& f) { return f.key == key; });
  };
  const auto set = [&](const std::string& key) { return flat.count(key) > 0; };

  // The variant and sizes first, so that its defaults can depend on them; then every key the
  // user set overrides a default.
  for (const char* key :
       {"model.variant", "model.hidden_size", "model.num_layers", "model.vocab_size"})
    if (set(key)) assign(field(key), flat.at(key), source);
  c.model = nn::with_variant_defaults(c.model);
  for (const auto& [key, value] : flat) assign(field(key), value, source);

  // The attention layout: an explicit list ("custom"), or derived from layout and num_layers.
  if (!set("model.layout")) {
    if (set("model.attention_layers"))
      c.layout = "custom";
    else if (c.model.variant == "transformer")
      c.layout = "transformer";
  }
  if (c.layout != "custom") {
    std::vector<int64_t> derived;
    try {
      derived = nn::attention_layers(c.layout, c.model.num_layers);
    } catch (const Error& e) {
      throw Error(source, "model.layout to be pure, transformer, r:1 or custom",
                  "'" + c.layout + "'", e.what());
    }
    if (set("model.attention_layers") && derived != c.model.attention)
      throw Error(source,
                  "model.attention_layers to match model.layout = \"" + c.layout + "\" (" +
                      toml_value(&derived) + ")",
                  toml_value(&c.model.attention),
                  "set model.layout = \"custom\" to give the list yourself");
    c.model.attention = derived;
  }
  validate(c);
  return c;
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error("config", "a readable config file", "'" + path + "' cannot be opened",
                "configs live under experiments/configs/");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_run_config(text.str(), path, overrides);
}

std::string to_toml(const RunConfig& config) {
  RunConfig copy = config;
  std::string out = "# hla run config (resolved: every key explicit)\n";
  std::string section;
  for (const Field& f : fields(copy)) {
    const std::string s = f.key.substr(0, f.key.find('.'));
    if (s != section) out += "\n[" + s + "]\n", section = s;
    out += f.key.substr(s.size() + 1) + " = " + toml_value(f.target) + "\n";
  }
  return out;
}

void validate(const RunConfig& c) {
  const auto positive = [](int64_t v, const char* key) {
    if (v <= 0) throw Error("config", std::string(key) + " > 0", std::to_string(v));
  };
  const auto non_negative = [](int64_t v, const char* key) {
    if (v < 0) throw Error("config", std::string(key) + " >= 0", std::to_string(v));
  };
  if (c.model.vocab_size != 0)
    nn::validate(c.model);
  else {
    nn::ModelConfig probe = c.model;  // vocab_size comes from the data later
    probe.vocab_size = 2;
    nn::validate(probe);
  }
  positive(c.train.steps, "train.steps");
  positive(c.train.batch_size, "train.batch_size");
  positive(c.train.grad_accum, "train.grad_accum");
  positive(c.train.seq_len, "train.seq_len");
  positive(c.train.log_interval, "train.log_interval");
  positive(c.train.eval_interval, "train.eval_interval");
  non_negative(c.train.eval_batches, "train.eval_batches");
  non_negative(c.train.checkpoint_interval, "train.checkpoint_interval");
  non_negative(c.train.seed, "train.seed");
  non_negative(c.train.threads, "train.threads");
  if (c.train.batch_size % c.train.grad_accum != 0)
    throw Error(
        "config",
        "train.batch_size divisible by train.grad_accum = " + std::to_string(c.train.grad_accum),
        std::to_string(c.train.batch_size),
        "each micro-batch has batch_size / grad_accum sequences");
  if (c.train.device != "auto" && c.train.device != "cpu" && c.train.device != "cuda")
    throw Error("config", "train.device to be auto, cpu or cuda", "'" + c.train.device + "'");
  if (c.train.precision != "fp32" && c.train.precision != "bf16" &&
      c.train.precision != "pure_bf16")
    throw Error("config", "train.precision to be fp32, bf16 or pure_bf16",
                "'" + c.train.precision + "'",
                "fp32 runs on either device; bf16 (mixed) and pure_bf16 (bf16 parameters and "
                "optimizer state) on CUDA");
  if (c.train.out.empty())
    throw Error("config", "train.out (the run directory)", "an empty string");
  if (c.data.task.empty() == c.data.path.empty())
    throw Error("config", "exactly one of data.task (synthetic) and data.path (token file)",
                c.data.task.empty() ? "neither" : "both",
                "e.g. data.task = \"mqar:pairs=8\" or data.path = \"corpus.h5\"");
  if (c.optim.name != "adamw" && c.optim.name != "sgd")
    throw Error("config", "optim.name to be adamw or sgd", "'" + c.optim.name + "'");
  if (c.optim.schedule != "cosine" && c.optim.schedule != "constant")
    throw Error("config", "optim.schedule to be cosine or constant", "'" + c.optim.schedule + "'");
  if (!(c.optim.lr > 0.0)) throw Error("config", "optim.lr > 0", toml_double(c.optim.lr));
  if (!(c.optim.min_lr >= 0.0 && c.optim.min_lr <= c.optim.lr))
    throw Error("config", "0 <= optim.min_lr <= optim.lr", toml_double(c.optim.min_lr));
  if (c.optim.warmup_steps < 0)
    throw Error("config", "optim.warmup_steps >= 0", std::to_string(c.optim.warmup_steps));
  if (!(c.optim.grad_clip >= 0.0))
    throw Error("config", "optim.grad_clip >= 0 (0: off)", toml_double(c.optim.grad_clip));
  if (!(c.optim.beta1 >= 0 && c.optim.beta1 < 1))
    throw Error("config", "optim.beta1 in [0, 1)", toml_double(c.optim.beta1));
  if (!(c.optim.beta2 >= 0 && c.optim.beta2 < 1))
    throw Error("config", "optim.beta2 in [0, 1)", toml_double(c.optim.beta2));
  if (!(c.optim.eps > 0)) throw Error("config", "optim.eps > 0", toml_double(c.optim.eps));
  if (!(c.optim.weight_decay >= 0))
    throw Error("config", "optim.weight_decay >= 0", toml_double(c.optim.weight_decay));
  if (!(c.optim.momentum >= 0 && c.optim.momentum < 1))
    throw Error("config", "optim.momentum in [0, 1)", toml_double(c.optim.momentum));
}

const std::string& default_config_toml() {
  static const std::string text =
      R"(# The embedded default of `hla train`: a tiny GLA 3:1 hybrid (layers 0-2 GLA, layer 3 softmax
# attention) learning multi-query associative recall: about 50% recall accuracy after 600 steps
# (3% by chance), in about a minute on 2 CPU cores. One OpenMP thread: at this size a second
# thread costs more in synchronisation than it gains.
[model]
variant = "gla"
layout = "3:1"
hidden_size = 64
num_layers = 4
num_heads = 2
attn_num_heads = 2
attn_num_kv_heads = 2

[data]
task = "mqar:vocab_size=64,pairs=4"

[optim]
name = "adamw"
lr = 3e-3
min_lr = 3e-4
warmup_steps = 20
weight_decay = 0.1

[train]
steps = 600
batch_size = 64
seq_len = 32
seed = 0
log_interval = 10
eval_interval = 100
eval_batches = 8
threads = 1
out = "runs/default"
)";
  return text;
}

}  // namespace hla::run
