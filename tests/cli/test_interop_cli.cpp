// Tests: `hla export` and `hla convert` end to end. Export then convert returns bit-identical
// f32 tensors and the same `hla eval`; a bf16 export converts back to the bf16-rounded values;
// F16 files and sharded index files are read; missing and unknown parameter names are
// reported by name; Gated DeltaNet's legacy attn.D is skipped with a note; the non-default fla
// layer options (GQA, feature maps, clamp_min, use_beta, qk activation / norm, GVA) are read from
// and written to config.json, and what hla does not build fails naming the key.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/safetensors.h"
#include "experiments/run/hf_config.h"
#include "nn/model.h"
#include "tests/data/temp_dir.h"
#include "tests/helpers/tiny_config.h"
#include "tests/helpers/run_hla.h"

using hla::data::SafetensorsFile;
using hla::data::SafetensorsTensor;
using hla::test::read_text;
using hla::test::run_hla;
using hla::test::TempDir;
using hla::test::write_text;
using Result = hla::test::CliResult;
namespace fs = std::filesystem;

namespace {

const std::string kTiny = hla::test::kTinyHybridOnMqar + R"(
[train]
steps = 4
batch_size = 4
seq_len = 16
log_interval = 1
eval_interval = 4
eval_batches = 2
)";

// Trains the tiny hybrid into dir/run and exports it (f32) to dir/hf.
void train_and_export(const TempDir& dir) {
  write_text(dir.file("tiny.toml"), kTiny);
  const Result t = run_hla("train --config " + dir.file("tiny.toml") + " --out " + dir.file("run"));
  INFO(t.output);
  REQUIRE(t.code == 0);
  const Result e = run_hla("export --checkpoint " + dir.file("run") + " --out " + dir.file("hf"));
  INFO(e.output);
  REQUIRE(e.code == 0);
}

// The lines of `hla eval` that describe the model's quality (not the checkpoint path or step).
std::string eval_numbers(const std::string& checkpoint) {
  const Result r = run_hla("eval --checkpoint " + checkpoint, true);
  INFO(r.output);
  REQUIRE(r.code == 0);
  return r.output.substr(r.output.find("val_loss"));
}

std::map<std::string, std::vector<float>> f32_tensors(const std::string& path) {
  SafetensorsFile f(path);
  std::map<std::string, std::vector<float>> out;
  for (const auto& e : f.entries()) {
    REQUIRE(e.dtype == "F32");
    std::vector<float>& v = out[e.name];
    v.resize(e.bytes.size() / 4);
    std::memcpy(v.data(), e.bytes.data(), e.bytes.size());
  }
  return out;
}

// Rewrites dir/model.safetensors with `edit` applied to the list of tensors (owning copies).
struct OwnedTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};
std::vector<OwnedTensor> read_all(const std::string& path) {
  SafetensorsFile f(path);
  std::vector<OwnedTensor> out;
  for (const auto& e : f.entries())
    out.push_back({e.name, e.dtype, e.shape, std::vector<std::byte>(e.bytes.begin(), e.bytes.end())});
  return out;
}
void write_all(const std::string& path, const std::vector<OwnedTensor>& tensors) {
  std::vector<SafetensorsTensor> entries;
  for (const auto& t : tensors) entries.push_back({t.name, t.dtype, t.shape, t.bytes});
  hla::data::write_safetensors(path, entries);
}

// f16 bits of a value exactly representable as a normal f16 (the test builds only such values).
uint16_t exact_half(float v) {
  if (v == 0) return 0;
  int e;
  const float m = std::frexp(std::fabs(v), &e);  // |v| = m 2^e, m in [0.5, 1)
  const auto mantissa = static_cast<uint16_t>(std::lround((m * 2 - 1) * 1024));
  return static_cast<uint16_t>((v < 0 ? 0x8000 : 0) | ((e - 1 + 15) << 10) | mantissa);
}

}  // namespace

TEST_CASE("cli export then convert: bit-identical tensors, same config and same eval",
          "[cli][interop]") {
  TempDir dir("interop_roundtrip");
  train_and_export(dir);
  const nlohmann::json config = nlohmann::json::parse(read_text(dir.file("hf/config.json")));
  CHECK(config["model_type"] == "gla");
  CHECK(config["attn"]["layers"] == nlohmann::json::array({1}));
  CHECK(f32_tensors(dir.file("hf/model.safetensors")).count("model.layers.1.attn.q_proj.weight"));

  // A tokenizer.json shipped with the model becomes the run's tokenizer.
  fs::copy_file(HLA_SOURCE_DIR "/tests/fixtures/hf/tokenizer.json", dir.file("hf/tokenizer.json"));
  const Result c = run_hla("convert --from " + dir.file("hf") + " --out " + dir.file("conv") +
                           " --config " + dir.file("run/config.toml"));
  INFO(c.output);
  REQUIRE(c.code == 0);
  CHECK_THAT(c.output, Catch::Contains("gla, 2 layers, attention layers [1]") &&
                           Catch::Contains("26 F32"));
  CHECK_THAT(read_text(dir.file("conv/config.toml")),
             Catch::Contains("tokenizer = \"hf:" + fs::absolute(dir.file("hf/tokenizer.json")).string()));
  CHECK(eval_numbers(dir.file("run")) == eval_numbers(dir.file("conv")));

  REQUIRE(run_hla("export --checkpoint " + dir.file("conv") + " --out " + dir.file("hf2")).code == 0);
  CHECK(read_text(dir.file("hf2/tokenizer.json")) == read_text(dir.file("hf/tokenizer.json")));
  CHECK(read_text(dir.file("hf/model.safetensors")) == read_text(dir.file("hf2/model.safetensors")));
  CHECK(read_text(dir.file("hf/config.json")) == read_text(dir.file("hf2/config.json")));
}

TEST_CASE("cli export --dtype bf16: converts back to the bf16-rounded values", "[cli][interop]") {
  TempDir dir("interop_bf16");
  train_and_export(dir);
  REQUIRE(run_hla("export --checkpoint " + dir.file("run") + " --dtype bf16 --out " +
                  dir.file("hf_bf16")).code == 0);
  CHECK(nlohmann::json::parse(read_text(dir.file("hf_bf16/config.json")))["torch_dtype"] ==
        "bfloat16");
  const Result c = run_hla("convert --from " + dir.file("hf_bf16") + " --out " +
                           dir.file("conv.h5") + " --config " + dir.file("run/config.toml"));
  INFO(c.output);
  REQUIRE(c.code == 0);
  CHECK_THAT(c.output, Catch::Contains("26 BF16"));
  REQUIRE(run_hla("export --checkpoint " + dir.file("conv.h5") + " --out " + dir.file("back")).code == 0);
  const auto original = f32_tensors(dir.file("hf/model.safetensors"));
  const auto back = f32_tensors(dir.file("back/model.safetensors"));
  REQUIRE(original.size() == back.size());
  size_t changed = 0;
  for (const auto& [name, values] : original) {
    const std::vector<float>& b = back.at(name);
    REQUIRE(b.size() == values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      const float rounded = static_cast<float>(hla::bf16(values[i]));
      if (b[i] != rounded) FAIL(name << "[" << i << "] = " << b[i] << ", expected " << rounded);
      changed += b[i] != values[i];
    }
  }
  CHECK(changed > 0);  // the rounding did happen
}

TEST_CASE("cli convert: F16 tensors and sharded index files", "[cli][interop]") {
  TempDir dir("interop_shards");
  train_and_export(dir);
  const std::string config = " --config " + dir.file("run/config.toml");
  std::vector<OwnedTensor> tensors = read_all(dir.file("hf/model.safetensors"));

  SECTION("two shards and model.safetensors.index.json give the same model") {
    fs::create_directories(dir.file("sharded"));
    fs::copy(dir.file("hf/config.json"), dir.file("sharded/config.json"));
    const size_t half = tensors.size() / 2;
    const std::vector<OwnedTensor> a(tensors.begin(), tensors.begin() + half),
        b(tensors.begin() + half, tensors.end());
    write_all(dir.file("sharded/model-00001-of-00002.safetensors"), a);
    write_all(dir.file("sharded/model-00002-of-00002.safetensors"), b);
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
    for (size_t i = 0; i < tensors.size(); ++i)
      index["weight_map"][tensors[i].name] =
          i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    write_text(dir.file("sharded/model.safetensors.index.json"), index.dump());
    const Result c =
        run_hla("convert --from " + dir.file("sharded") + " --out " + dir.file("conv") + config);
    INFO(c.output);
    REQUIRE(c.code == 0);
    CHECK_THAT(c.output, Catch::Contains("2 files"));
    CHECK(eval_numbers(dir.file("run")) == eval_numbers(dir.file("conv")));

    // An index that names the wrong shard for a tensor is rejected.
    index["weight_map"][tensors[0].name] = "model-00002-of-00002.safetensors";
    write_text(dir.file("sharded/model.safetensors.index.json"), index.dump());
    const Result bad =
        run_hla("convert --from " + dir.file("sharded") + " --out " + dir.file("conv2") + config);
    CHECK(bad.code != 0);
    CHECK_THAT(bad.output, Catch::Contains(tensors[0].name) && Catch::Contains("index"));
  }
  SECTION("F16 values are widened exactly") {
    for (OwnedTensor& t : tensors) {
      std::vector<uint16_t> halves(t.bytes.size() / 4);
      for (size_t i = 0; i < halves.size(); ++i) {
        float v;
        std::memcpy(&v, t.bytes.data() + 4 * i, 4);
        // k/1024 with |k| < 2048: exact in f16; ones for norms stay ones.
        const float q = std::clamp(std::round(v * 1024.0f), -2047.0f, 2047.0f) / 1024.0f;
        halves[i] = exact_half(q);
        std::memcpy(t.bytes.data() + 4 * i, &q, 4);
      }
      t.dtype = "F16";
      t.bytes.resize(halves.size() * 2);
      std::memcpy(t.bytes.data(), halves.data(), t.bytes.size());
    }
    fs::create_directories(dir.file("f16"));
    fs::copy(dir.file("hf/config.json"), dir.file("f16/config.json"));
    write_all(dir.file("f16/model.safetensors"), tensors);
    const Result c =
        run_hla("convert --from " + dir.file("f16") + " --out " + dir.file("conv.h5") + config);
    INFO(c.output);
    REQUIRE(c.code == 0);
    REQUIRE(run_hla("export --checkpoint " + dir.file("conv.h5") + " --out " + dir.file("back")).code == 0);
    const auto original = f32_tensors(dir.file("hf/model.safetensors"));
    const auto back = f32_tensors(dir.file("back/model.safetensors"));
    for (const auto& [name, values] : original)
      for (size_t i = 0; i < values.size(); ++i) {
        const float q = std::clamp(std::round(values[i] * 1024.0f), -2047.0f, 2047.0f) / 1024.0f;
        if (back.at(name)[i] != q) FAIL(name << "[" << i << "] = " << back.at(name)[i] << ", expected " << q);
      }
  }
}

TEST_CASE("cli convert: missing and unknown parameters are reported by name", "[cli][interop]") {
  TempDir dir("interop_names");
  train_and_export(dir);
  std::vector<OwnedTensor> tensors = read_all(dir.file("hf/model.safetensors"));
  const auto dropped = std::find_if(tensors.begin(), tensors.end(), [](const OwnedTensor& t) {
    return t.name == "model.layers.0.attn.gk_proj.1.bias";
  });
  REQUIRE(dropped != tensors.end());
  tensors.erase(dropped);
  tensors.push_back({"model.layers.0.attn.bogus.weight", "F32", {1}, std::vector<std::byte>(4)});
  write_all(dir.file("hf/model.safetensors"), tensors);
  const Result r = run_hla("convert --from " + dir.file("hf") + " --out " + dir.file("conv") +
                           " --config " + dir.file("run/config.toml"));
  CHECK(r.code != 0);
  CHECK_THAT(r.output, Catch::Contains("missing: model.layers.0.attn.gk_proj.1.bias") &&
                           Catch::Contains("unknown: model.layers.0.attn.bogus.weight"));
  CHECK_FALSE(fs::exists(dir.file("conv/checkpoints/latest.h5")));

  // Wrong shapes name the parameter too.
  tensors.pop_back();
  tensors.push_back({"model.layers.0.attn.gk_proj.1.bias", "F32", {3}, std::vector<std::byte>(12)});
  write_all(dir.file("hf/model.safetensors"), tensors);
  const Result s = run_hla("convert --from " + dir.file("hf") + " --out " + dir.file("conv") +
                           " --config " + dir.file("run/config.toml"));
  CHECK(s.code != 0);
  CHECK_THAT(s.output, Catch::Contains("model.layers.0.attn.gk_proj.1.bias (expected"));

  // No data for the run config: a clear message.
  const Result d = run_hla("convert --from " + dir.file("hf") + " --out " + dir.file("conv"));
  CHECK(d.code != 0);
  CHECK_THAT(d.output, Catch::Contains("--config RUN.toml"));
  // No config.json.
  const Result n = run_hla("convert --from " + dir.path() + " --out " + dir.file("conv"));
  CHECK(n.code != 0);
  CHECK_THAT(n.output, Catch::Contains("config.json"));
}

TEST_CASE("cli convert: Gated DeltaNet's legacy attn.D is skipped with a note", "[cli][interop]") {
  TempDir dir("interop_gdn");
  hla::nn::ModelConfig m;
  m.variant = "gated_deltanet";
  m = hla::nn::with_variant_defaults(m);
  m.vocab_size = 32, m.hidden_size = 16, m.num_layers = 2, m.num_heads = 2, m.head_dim = 8;
  hla::Generator gen(1);
  hla::nn::HybridLM model(m, gen);
  std::vector<hla::Tensor> keep;
  std::vector<SafetensorsTensor> entries;
  for (const auto& [name, var] : model.named_parameters()) {
    keep.push_back(var.data().contiguous());
    entries.push_back({name, "F32", keep.back().shape(),
                       std::span<const std::byte>(static_cast<const std::byte*>(keep.back().raw_data()),
                                                  keep.back().numel() * 4)});
  }
  const std::vector<float> d(2 * 16, 1.0f);
  entries.push_back({"model.layers.1.attn.D", "F32", {32}, std::as_bytes(std::span<const float>(d))});
  fs::create_directories(dir.file("hf"));
  hla::data::write_safetensors(dir.file("hf/model.safetensors"), entries);
  write_text(dir.file("hf/config.json"), hla::run::to_hf_config(m, "float32").dump());
  write_text(dir.file("data.toml"), "[data]\ntask = \"mqar:vocab_size=32,pairs=2\"\n");
  const Result r = run_hla("convert --from " + dir.file("hf") + " --out " + dir.file("conv") +
                           " --config " + dir.file("data.toml"));
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("note: skipped legacy parameter model.layers.1.attn.D"));
  CHECK_THAT(read_text(dir.file("conv/config.toml")), Catch::Contains("gated_deltanet"));
  const Result e = run_hla("eval --checkpoint " + dir.file("conv"));
  INFO(e.output);
  CHECK(e.code == 0);
}

TEST_CASE("hf config: config.json of every variant has fla's keys and reads back", "[cli][interop]") {
  using hla::run::from_hf_config;
  using hla::run::to_hf_config;
  const std::map<std::string, std::vector<std::string>> keys = {
      {"hgrn", {"expand_ratio", "use_short_conv", "conv_size", "use_lower_bound"}},
      {"hgrn2", {"num_heads", "expand_ratio", "use_short_conv", "conv_size", "use_lower_bound"}},
      {"gla", {"num_heads", "num_kv_heads", "expand_k", "expand_v", "use_output_gate",
               "use_short_conv", "conv_size", "feature_map", "clamp_min"}},
      {"retnet", {"num_heads", "num_kv_heads", "expand_k", "expand_v", "use_output_gate"}},
      {"delta_net", {"num_heads", "expand_k", "expand_v", "use_gate", "use_short_conv",
                     "conv_size", "allow_neg_eigval", "use_beta", "qk_norm", "qk_activation"}},
      {"gated_deltanet", {"num_heads", "head_dim", "expand_v", "use_gate", "use_short_conv",
                          "conv_size", "allow_neg_eigval", "num_v_heads"}},
      {"transformer", {"num_heads", "num_kv_heads", "qkv_bias", "window_size", "rope_theta"}}};
  const std::map<std::string, std::string> architectures = {
      {"hgrn", "HGRNForCausalLM"},          {"hgrn2", "HGRN2ForCausalLM"},
      {"gla", "GLAForCausalLM"},            {"retnet", "RetNetForCausalLM"},
      {"delta_net", "DeltaNetForCausalLM"}, {"gated_deltanet", "GatedDeltaNetForCausalLM"},
      {"transformer", "TransformerForCausalLM"}};
  for (const auto& [variant, variant_keys] : keys) {
    INFO(variant);
    hla::nn::ModelConfig m;
    m.variant = variant;
    m = hla::nn::with_variant_defaults(m);
    m.vocab_size = 100, m.hidden_size = 64, m.num_layers = 4;
    m.expand_ratio = 16, m.head_dim = 16, m.num_heads = 2;
    m.attn_num_heads = 4, m.attn_num_kv_heads = 2;
    if (variant == "transformer") m.attention = hla::nn::attention_layers("transformer", 4);
    const nlohmann::json j = to_hf_config(m, "float32");
    CHECK(j["model_type"] == variant);
    CHECK(j["architectures"] == nlohmann::json::array({architectures.at(variant)}));
    for (const char* key : {"vocab_size", "hidden_size", "num_hidden_layers", "hidden_ratio",
                            "intermediate_size", "norm_eps", "tie_word_embeddings", "attn"})
      CHECK(j.contains(key));
    for (const std::string& key : variant_keys) {
      INFO(key);
      CHECK(j.contains(key));
    }
    CHECK(j["hidden_size"] == 64);
    CHECK(j["attn"].is_null());
    if (variant == "hgrn2") CHECK(j["num_heads"] == 4);  // hidden / expand_ratio
    if (variant == "transformer") CHECK((j["num_heads"] == 4 && j["num_kv_heads"] == 2));
    if (variant == "retnet") CHECK(j["hidden_ratio"] == 2.0);
    const hla::run::HfConfig back = from_hf_config(j, "config.json");
    CHECK(back.notes.empty());
    CHECK(to_hf_config(back.model, "float32") == j);
    CHECK(back.model.attention == m.attention);
  }
}

TEST_CASE("hf config: a 3:1 hybrid writes the attn dict and reads it back", "[cli][interop]") {
  hla::nn::ModelConfig m;
  m.variant = "gla";
  m = hla::nn::with_variant_defaults(m);
  m.vocab_size = 100, m.hidden_size = 64, m.num_layers = 8, m.num_heads = 2;
  m.attention = hla::nn::attention_layers("3:1", 8);
  m.attn_num_heads = 4, m.attn_num_kv_heads = 2, m.attn_window = 64, m.attn_qkv_bias = true;
  m.rope_theta = 5e5;
  const nlohmann::json j = hla::run::to_hf_config(m, "bfloat16");
  CHECK(j["attn"] == nlohmann::json::parse(R"({"layers": [3, 7], "num_heads": 4,
        "num_kv_heads": 2, "qkv_bias": true, "window_size": 64, "rope_theta": 500000.0})"));
  CHECK(j["torch_dtype"] == "bfloat16");
  const hla::nn::ModelConfig back = hla::run::from_hf_config(j, "config.json").model;
  CHECK(back.attention == std::vector<int64_t>{3, 7});
  CHECK(back.attn_window == 64);
  CHECK(back.attn_qkv_bias);
  CHECK(back.rope_theta == 5e5);
}

TEST_CASE("hf config: fla defaults fill absent keys, lists of attn dicts merge, notes",
          "[cli][interop]") {
  const auto j = nlohmann::json::parse(R"({"model_type": "gated_deltanet", "hidden_size": 64,
      "num_heads": 2, "head_dim": 16, "num_hidden_layers": 3, "fuse_norm": true,
      "some_new_key": 1, "num_v_heads": null,
      "attn": [{"layers": [0], "num_heads": 4}, {"layers": [2], "num_heads": 4}]})");
  const hla::run::HfConfig c = hla::run::from_hf_config(j, "config.json");
  CHECK(c.model.vocab_size == 32000);
  CHECK(c.model.expand_v == 2.0);
  CHECK(c.model.use_output_gate);
  CHECK(c.model.use_short_conv);
  CHECK(c.model.norm_eps == 1e-6);
  CHECK(c.model.attention == std::vector<int64_t>{0, 2});
  CHECK(c.model.attn_num_kv_heads == 4);
  REQUIRE(c.notes.size() == 1);
  CHECK_THAT(c.notes[0], Catch::Contains("some_new_key"));

  const auto hgrn2 = nlohmann::json::parse(
      R"({"model_type": "hgrn2", "hidden_size": 64, "num_heads": 4, "expand_ratio": null})");
  CHECK(hla::run::from_hf_config(hgrn2, "c.json").model.expand_ratio == 16);
}

TEST_CASE("hf config: what hla cannot run fails naming the key", "[cli][interop]") {
  const auto fails = [](const std::string& text) {
    try {
      hla::run::from_hf_config(nlohmann::json::parse(text), "dir/config.json");
    } catch (const hla::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK_THAT(fails(R"({"model_type": "mamba"})"),
             Catch::Contains("dir/config.json: model_type") && Catch::Contains("gated_deltanet"));
  CHECK_THAT(fails(R"({"model_type": "gla", "hidden_size": 64, "feature_map": "hedgehog"})"),
             Catch::Contains("dir/config.json: feature_map") && Catch::Contains("\"hedgehog\"") &&
                 Catch::Contains("relu"));
  CHECK_THAT(fails(R"({"model_type": "retnet", "hidden_size": 64, "feature_map": "t2r"})"),
             Catch::Contains("feature_map") && Catch::Contains("\"t2r\""));
  CHECK_THAT(fails(R"({"model_type": "gla", "hidden_size": 64, "num_kv_heads": 3})"),
             Catch::Contains("dir/config.json: num_kv_heads") && Catch::Contains("got 3"));
  CHECK_THAT(fails(R"({"model_type": "gla", "hidden_size": 64, "clamp_min": "low"})"),
             Catch::Contains("clamp_min: a number"));
  CHECK_THAT(fails(R"({"model_type": "gla", "hidden_size": "64"})"),
             Catch::Contains("hidden_size: an integer"));
  CHECK_THAT(fails(R"({"model_type": "gla", "hidden_size": 64, "hidden_act": "gelu"})"),
             Catch::Contains("hidden_act"));
  CHECK_THAT(fails(R"({"model_type": "delta_net", "hidden_size": 64, "qk_norm": "max"})"),
             Catch::Contains("dir/config.json: qk_norm") && Catch::Contains("\"max\""));
  CHECK_THAT(fails(R"({"model_type": "delta_net", "hidden_size": 64, "qk_activation": "tanh"})"),
             Catch::Contains("dir/config.json: qk_activation") && Catch::Contains("\"tanh\""));
  CHECK_THAT(fails(R"({"model_type": "gated_deltanet", "hidden_size": 64, "num_heads": 4,
                     "num_v_heads": 6})"),
             Catch::Contains("dir/config.json: num_v_heads") && Catch::Contains("multiple"));
  CHECK_THAT(fails(R"({"model_type": "gla", "hidden_size": 64, "num_hidden_layers": 4,
                     "attn": {"layers": [4], "num_heads": 4}})"),
             Catch::Contains("attn: layers") && Catch::Contains("[0, 4)"));
  CHECK_THAT(fails(R"({"model_type": "gla", "hidden_size": 64, "num_hidden_layers": 4,
                     "attn": [{"layers": [1], "num_heads": 4}, {"layers": [3], "num_heads": 2}]})"),
             Catch::Contains("attn[1]") && Catch::Contains("one attention setting"));
  CHECK_THAT(fails(R"({"model_type": "gla", "hidden_size": 64, "num_hidden_layers": 4,
                     "attn": {"layers": [1]}})"),
             Catch::Contains("num_heads"));
  CHECK_THAT(fails(R"({"model_type": "gla", "hidden_size": 64, "num_heads": 3})"),
             Catch::Contains("a model hla can build"));
}

TEST_CASE("cli convert then export: every variant and a tied 3:1 hybrid give the same files",
          "[cli][interop]") {
  TempDir dir("interop_variants");
  write_text(dir.file("data.toml"), "[data]\ntask = \"mqar:vocab_size=32,pairs=2\"\n");
  // "<variant>+" runs the variant with its non-default fla options.
  for (const std::string variant :
       {"hgrn", "hgrn2", "gla", "retnet", "delta_net", "gated_deltanet", "transformer", "tied",
        "gla+", "retnet+", "delta_net+", "gated_deltanet+"}) {
    INFO(variant);
    const bool options = variant.back() == '+';
    hla::nn::ModelConfig m;
    m.variant = variant == "tied" ? "gla" : options ? variant.substr(0, variant.size() - 1) : variant;
    m = hla::nn::with_variant_defaults(m);
    m.vocab_size = 32, m.hidden_size = 32, m.num_layers = 4, m.num_heads = 2;
    m.expand_ratio = 16, m.head_dim = 16, m.attn_num_heads = 2, m.attn_num_kv_heads = 1;
    if (options) {
      m.num_kv_heads = 1, m.feature_map = m.variant == "gla" ? "relu" : "silu", m.clamp_min = -0.25;
      m.use_beta = false, m.qk_activation = "elu", m.qk_norm = "sum";
      m.num_v_heads = 4;
    }
    m.attention = hla::nn::attention_layers(variant == "transformer" ? "transformer" : "3:1", 4);
    m.tie_word_embeddings = variant == "tied";
    hla::Generator gen(7);
    hla::nn::HybridLM model(m, gen);
    std::vector<hla::Tensor> keep;
    std::vector<SafetensorsTensor> entries;
    for (const auto& [name, var] : model.named_parameters()) {
      keep.push_back(var.data().contiguous());
      entries.push_back({name, "F32", keep.back().shape(),
                         std::span<const std::byte>(static_cast<const std::byte*>(keep.back().raw_data()),
                                                    keep.back().numel() * 4)});
    }
    // A tied model saved with its lm_head copy: skipped with a note.
    if (variant == "tied") entries.push_back({"lm_head.weight", "F32", {32, 32}, entries[0].bytes});
    const std::string hf = dir.file("hf_" + variant), conv = dir.file("conv_" + variant),
                      back = dir.file("back_" + variant);
    fs::create_directories(hf);
    hla::data::write_safetensors(hf + "/model.safetensors", entries, {{"format", "pt"}});
    const nlohmann::json config = hla::run::to_hf_config(m, "float32");
    write_text(hf + "/config.json", config.dump());
    const Result c =
        run_hla("convert --from " + hf + " --out " + conv + " --config " + dir.file("data.toml"));
    INFO(c.output);
    REQUIRE(c.code == 0);
    CHECK_THAT(c.output, Catch::Contains(variant == "transformer" ? "attention layers [0, 1, 2, 3]"
                                                                  : "attention layers [3]"));
    if (variant == "tied") CHECK_THAT(c.output, Catch::Contains("note: skipped lm_head.weight"));
    REQUIRE(run_hla("export --checkpoint " + conv + " --out " + back).code == 0);
    if (variant == "tied") entries.pop_back();
    hla::data::write_safetensors(hf + "/model.safetensors", entries, {{"format", "pt"}});
    CHECK(read_text(hf + "/model.safetensors") == read_text(back + "/model.safetensors"));
    CHECK(nlohmann::json::parse(read_text(back + "/config.json")) == config);
    if (options) {  // the options arrive in the converted run config, and config.json has them
      const std::string toml = read_text(conv + "/config.toml");
      // Export then convert: the exported files convert to the same model and weights.
      const std::string again = dir.file("again_" + variant), back2 = dir.file("back2_" + variant);
      REQUIRE(run_hla("convert --from " + back + " --out " + again + " --config " +
                      dir.file("data.toml")).code == 0);
      const auto model_section = [](const std::string& t) {
        return t.substr(t.find("[model]"), t.find("[data]") - t.find("[model]"));
      };
      CHECK(model_section(read_text(again + "/config.toml")) == model_section(toml));
      REQUIRE(run_hla("export --checkpoint " + again + " --out " + back2).code == 0);
      CHECK(read_text(back2 + "/model.safetensors") == read_text(back + "/model.safetensors"));
      if (m.variant == "gla")
        CHECK((config["num_kv_heads"] == 1 && config["feature_map"] == "relu" &&
               config["clamp_min"] == -0.25));
      if (m.variant == "gla")
        CHECK_THAT(toml, Catch::Contains("feature_map = \"relu\"") &&
                             Catch::Contains("clamp_min = -0.25") &&
                             Catch::Contains("num_kv_heads = 1"));
      if (m.variant == "retnet")
        CHECK((config["num_kv_heads"] == 1 && config["feature_map"] == "silu"));
      if (m.variant == "delta_net")
        CHECK((config["use_beta"] == false && config["qk_activation"] == "elu" &&
               config["qk_norm"] == "sum"));
      if (m.variant == "delta_net")
        CHECK_THAT(toml, Catch::Contains("use_beta = false") &&
                             Catch::Contains("qk_activation = \"elu\""));
      if (m.variant == "gated_deltanet") CHECK(config["num_v_heads"] == 4);
      if (m.variant == "gated_deltanet") CHECK_THAT(toml, Catch::Contains("num_v_heads = 4"));
    }
  }
}
