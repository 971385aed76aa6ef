// defines: `hla export`, a checkpoint as a Hugging Face / fla model directory (docs/interop.md).
//
//   hla export --checkpoint RUN_DIR_OR_FILE --out HF_DIR [--dtype f32|bf16]
//
// writes
//   HF_DIR/config.json        fla's config schema (experiments/run/hf_config.h)
//   HF_DIR/model.safetensors  every parameter under its fla name and shape (F32 or BF16; bf16
//                             rounds to nearest even). A tied lm_head is not written, as
//                             transformers' save_pretrained does.
//   HF_DIR/tokenizer.json     a copy of the run's tokenizer when data.tokenizer is "hf:PATH"
// which fla loads with AutoModelForCausalLM.from_pretrained(HF_DIR) after `import fla`.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "data/pending_file.h"
#include "data/safetensors.h"
#include "experiments/cli/commands.h"
#include "experiments/run/checkpoint.h"
#include "experiments/run/config.h"
#include "experiments/run/hf_config.h"
#include "tensor/error.h"

namespace hla::cli {

namespace {

namespace fs = std::filesystem;

struct ExportArgs {
  std::string checkpoint;
  std::string out;
  std::string dtype = "f32";
};

void write_json(const std::string& path, const nlohmann::json& j) {
  data::PendingFile pending(path);
  {
    std::ofstream out(pending.temp_path(), std::ios::binary);
    out << j.dump(2) << "\n";
    if (!out) throw Error("export", "a writable file '" + path + "'", "a write error");
  }
  pending.commit();
}

void run_export(const ExportArgs& a) {
  if (a.dtype != "f32" && a.dtype != "bf16")
    throw Error("export --dtype", "f32 or bf16", "'" + a.dtype + "'");
  const DType dtype = a.dtype == "f32" ? DType::f32 : DType::bf16;
  const std::string path = run::resolve_checkpoint(a.checkpoint);
  const run::CheckpointInfo info = run::read_checkpoint_info(path);
  const run::RunConfig config = run::parse_run_config(info.config_toml, path + " (config)");
  if (config.model.vocab_size <= 0)
    throw Error("export " + path, "a checkpoint whose config records model.vocab_size",
                std::to_string(config.model.vocab_size), "was it written by `hla train`?");
  Generator gen(0);  // the values are overwritten by the checkpoint's
  nn::HybridLM model(config.model, gen);
  run::load_model_weights(path, model);

  // Keep the converted tensors alive while the writer reads their bytes.
  std::vector<Tensor> tensors;
  std::vector<data::SafetensorsTensor> entries;
  for (const auto& [name, var] : model.named_parameters()) {
    tensors.push_back(var.data().to(Device::CPU).to(dtype).contiguous());
    const Tensor& t = tensors.back();
    entries.push_back({name, dtype == DType::f32 ? "F32" : "BF16", t.shape(),
                       std::span<const std::byte>(static_cast<const std::byte*>(t.raw_data()),
                                                  t.numel() * dtype_size(dtype))});
  }
  fs::create_directories(a.out);
  const std::string weights = (fs::path(a.out) / "model.safetensors").string();
  const std::string config_json = (fs::path(a.out) / "config.json").string();
  data::write_safetensors(weights, entries, {{"format", "pt"}});
  write_json(config_json,
             run::to_hf_config(config.model, dtype == DType::f32 ? "float32" : "bfloat16"));
  // A Hugging Face tokenizer the run uses (e.g. kept from `hla convert`) travels with the model.
  if (config.data.tokenizer.rfind("hf:", 0) == 0) {
    const fs::path tokenizer = config.data.tokenizer.substr(3);
    if (!fs::exists(tokenizer))
      throw Error("export " + path, "the run's tokenizer " + tokenizer.string(), "no such file",
                  "the checkpoint's data.tokenizer names a file that has moved");
    fs::copy_file(tokenizer, fs::path(a.out) / "tokenizer.json",
                  fs::copy_options::overwrite_existing);
    std::printf("wrote %s\n", (fs::path(a.out) / "tokenizer.json").c_str());
  }
  std::printf("exported %s (step %lld): %s, %zu tensors (%s)\n", path.c_str(),
              (long long)info.state.step, config.model.variant.c_str(), entries.size(),
              a.dtype.c_str());
  std::printf("wrote %s\nwrote %s\n", config_json.c_str(), weights.c_str());
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* c = app.add_subcommand(
      "export", "Write a checkpoint as a Hugging Face / fla model (config.json + safetensors)");
  c->add_option("--checkpoint", a->checkpoint, "run directory or checkpoint .h5 file")->required();
  c->add_option("--out", a->out, "output directory (created)")->required();
  c->add_option("--dtype", a->dtype, "f32 or bf16")->capture_default_str();
  c->callback([a] { run_export(*a); });
}

}  // namespace hla::cli
