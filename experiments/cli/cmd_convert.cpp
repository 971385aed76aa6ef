// defines: `hla convert`, a Hugging Face / fla model directory as an hla checkpoint
// (docs/interop.md).
//
//   hla convert --from HF_DIR --out RUN_DIR|FILE.h5 [--config RUN.toml] [--set k=v ...]
//
// HF_DIR holds config.json (fla's schema, experiments/run/hf_config.h) and either
// model.safetensors or model.safetensors.index.json with its shards (F32, BF16 or F16; stored
// as f32). The model section of the run config comes from config.json; the other sections from
// --config (default: hla's defaults) and --set, so that `hla eval` / `hla train --resume` know
// their data. With a tokenizer.json in HF_DIR, data.tokenizer is set to "hf:<its path>".
//
// --out RUN_DIR writes RUN_DIR/config.toml and RUN_DIR/checkpoints/latest.h5 (step 0, fresh
// optimizer state); --out FILE.h5 writes only that checkpoint.
//
// Parameters are matched by fla name and shape: any missing or unknown name fails, listing them
// all. Legacy extras that fla models no longer use are skipped with a note: Gated DeltaNet's
// model.layers.{i}.attn.D, and lm_head.weight of a model with tied embeddings.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>

#include "data/pending_file.h"
#include "data/safetensors.h"
#include "experiments/cli/commands.h"
#include "experiments/run/checkpoint.h"
#include "experiments/run/config.h"
#include "experiments/run/hf_config.h"
#include "optim/adamw.h"
#include "optim/sgd.h"
#include "tensor/error.h"

namespace hla::cli {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct ConvertArgs {
  std::string from;
  std::string out;
  std::string config;
  std::vector<std::string> sets;
};

json read_json(const fs::path& path, const std::string& hint) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("convert", "a readable " + path.filename().string(),
                       "'" + path.string() + "' cannot be opened", hint);
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    throw Error("convert " + path.string(), "valid JSON", "text that does not parse");
  return j;
}

// The safetensors files of a model directory, by tensor name.
struct Weights {
  std::vector<std::unique_ptr<data::SafetensorsFile>> files;
  std::map<std::string, const data::SafetensorsEntry*> by_name;
};

Weights open_weights(const fs::path& dir) {
  Weights w;
  const fs::path single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
  std::map<std::string, std::string> expected_file;  // from the index: tensor -> shard
  if (fs::exists(single)) {
    w.files.push_back(std::make_unique<data::SafetensorsFile>(single.string()));
  } else if (fs::exists(index)) {
    const json j = read_json(index, "");
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw Error("convert " + index.string(), "an object with \"weight_map\": {name: file}",
                  j.dump().substr(0, 200));
    std::set<std::string> shards;
    for (auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string())
        throw Error("convert " + index.string(), "weight_map['" + name + "'] a file name",
                    file.dump());
      expected_file[name] = file.get<std::string>();
      shards.insert(file.get<std::string>());
    }
    for (const std::string& shard : shards)
      w.files.push_back(std::make_unique<data::SafetensorsFile>((dir / shard).string()));
  } else {
    throw Error("convert " + dir.string(), "model.safetensors or model.safetensors.index.json",
                "neither", "pytorch_model.bin is not read: save with safe_serialization=True");
  }
  for (const auto& f : w.files)
    for (const data::SafetensorsEntry& e : f->entries()) {
      if (w.by_name.count(e.name))
        throw Error("convert " + f->path(), "each tensor in one file",
                    "'" + e.name + "' also in another shard");
      const auto it = expected_file.find(e.name);
      if (!expected_file.empty() &&
          (it == expected_file.end() || (dir / it->second).string() != f->path()))
        throw Error("convert " + index.string(), "weight_map to name the shard of '" + e.name + "'",
                    it == expected_file.end() ? "no entry" : "'" + it->second + "'",
                    "the index does not match the shards");
      w.by_name[e.name] = &e;
    }
  return w;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
  if (exponent == 0 && mantissa == 0) {
    bits = sign;
  } else if (exponent == 0) {  // subnormal: normalise into f32's range
    exponent = 113;
    while (!(mantissa & 0x400u)) mantissa <<= 1, --exponent;
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  } else if (exponent == 31) {  // inf / NaN
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// The entry's values as a CPU tensor (F32 and BF16 as stored, F16 widened to f32). Safetensors
// data is little-endian, as is every machine hla builds on.
Tensor to_tensor(const data::SafetensorsEntry& e) {
  if (e.dtype == "F16") {
    Tensor t = Tensor::empty(e.shape, DType::f32);
    float* out = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      uint16_t h;
      std::memcpy(&h, e.bytes.data() + 2 * i, 2);
      out[i] = half_to_float(h);
    }
    return t;
  }
  Tensor t = Tensor::empty(e.shape, e.dtype == "F32" ? DType::f32 : DType::bf16);
  std::memcpy(t.raw_data(), e.bytes.data(), e.bytes.size());
  return t;
}

std::unique_ptr<optim::Optimizer> fresh_optimizer(const run::OptimConfig& o,
                                                  const nn::HybridLM& model) {
  auto params = optim::optim_params(model.named_parameters());
  if (o.name == "sgd")
    return std::make_unique<optim::Sgd>(
        std::move(params),
        optim::SgdOptions{
            .momentum = o.momentum, .weight_decay = o.weight_decay, .nesterov = o.nesterov});
  return std::make_unique<optim::AdamW>(
      std::move(params),
      optim::AdamWOptions{
          .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps, .weight_decay = o.weight_decay});
}

void write_text(const std::string& path, const std::string& text) {
  data::PendingFile pending(path);
  {
    std::ofstream out(pending.temp_path(), std::ios::binary);
    out << text;
    if (!out) throw Error("convert", "a writable file '" + path + "'", "a write error");
  }
  pending.commit();
}

void run_convert(const ConvertArgs& a) {
  const fs::path dir(a.from);
  const std::string config_path = (dir / "config.json").string();
  run::HfConfig hf = run::from_hf_config(
      read_json(dir / "config.json", "--from must be a directory with fla's config.json"),
      config_path);

  // The run config: data/optim/train from --config and --set, the model from config.json.
  run::RunConfig config;
  try {
    config = a.config.empty() ? run::parse_run_config("", "<default>", a.sets)
                              : run::load_run_config(a.config, a.sets);
  } catch (const Error& e) {
    throw Error("convert", "a run config naming the data `hla eval` and `hla train` use",
                e.what(), "pass --config RUN.toml or --set data.path=corpus.h5");
  }
  config.model = hf.model;
  config.layout = hf.model.variant == "transformer" ? "transformer"
                  : hf.model.attention.empty()      ? "pure"
                                                    : "custom";
  const fs::path tokenizer_json = dir / "tokenizer.json";
  if (fs::exists(tokenizer_json))
    config.data.tokenizer = "hf:" + fs::absolute(tokenizer_json).string();
  const std::string toml = run::to_toml(config);
  config = run::parse_run_config(toml, config_path + " (as an hla config)");

  const Weights weights = open_weights(dir);
  Generator gen(0);  // every value is overwritten below
  nn::HybridLM model(config.model, gen);
  const std::regex legacy_gdn_d(R"(model\.layers\.\d+\.attn\.D)");
  std::map<std::string, Tensor> state;
  for (const auto& [name, entry] : weights.by_name) {
    if (config.model.variant == "gated_deltanet" && std::regex_match(name, legacy_gdn_d)) {
      hf.notes.push_back("skipped legacy parameter " + name + " (unused by fla's Gated DeltaNet)");
      continue;
    }
    if (config.model.tie_word_embeddings && name == "lm_head.weight") {
      hf.notes.push_back("skipped lm_head.weight (tied to model.embeddings.weight)");
      continue;
    }
    state[name] = to_tensor(*entry);
  }
  try {
    model.load_state_dict(state);
  } catch (const Error& e) {
    throw Error("convert " + a.from, "parameters matching config.json (" +
                                         config.model.variant + ", " +
                                         std::to_string(config.model.num_layers) + " layers)",
                e.what(), "is config.json the one these weights were saved with?");
  }

  const bool file_out = fs::path(a.out).extension() == ".h5";
  const std::string checkpoint = file_out ? a.out : run::latest_checkpoint_path(a.out);
  if (!file_out) {
    fs::create_directories(a.out);
    write_text((fs::path(a.out) / "config.toml").string(), toml);
  }
  const auto optimizer = fresh_optimizer(config.optim, model);
  run::save_checkpoint(checkpoint, toml, model, config.optim.name, *optimizer, run::TrainState{});

  std::map<std::string, int> dtypes;
  for (const auto& [name, entry] : weights.by_name) ++dtypes[entry->dtype];
  std::string counts;
  for (const auto& [dtype, n] : dtypes) counts += (counts.empty() ? "" : ", ") + std::to_string(n) + " " + dtype;
  std::printf("converted %s: %s, %lld layers, attention layers [", a.from.c_str(),
              config.model.variant.c_str(), (long long)config.model.num_layers);
  for (size_t i = 0; i < config.model.attention.size(); ++i)
    std::printf("%s%lld", i ? ", " : "", (long long)config.model.attention[i]);
  std::printf("], %zu files, tensors: %s\n", weights.files.size(), counts.c_str());
  for (const std::string& note : hf.notes) std::printf("note: %s\n", note.c_str());
  std::printf("wrote %s\n", checkpoint.c_str());
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  CLI::App* c = app.add_subcommand(
      "convert", "Read a Hugging Face / fla model (config.json + safetensors) into a checkpoint");
  c->add_option("--from", a->from, "directory with config.json and model.safetensors")->required();
  c->add_option("--out", a->out, "run directory, or a checkpoint file ending in .h5")->required();
  c->add_option("--config", a->config,
                "run config whose data/optim/train sections the checkpoint records");
  c->add_option("--set", a->sets, "override section.key=value (repeatable)");
  c->callback([a] { run_convert(*a); });
}

}  // namespace hla::cli
