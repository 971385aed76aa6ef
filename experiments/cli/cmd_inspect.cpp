// defines: `hla inspect`, running a checkpoint on a text, a file or MQAR examples inside an
// inspect::RecordScope (nn/inspect.h) and writing every recorded gate, state norm, horizon and
// attention statistic to one HDF5 file, plus PNG plots (experiments/plots/plot_trace.py).
//
//   hla inspect --checkpoint RUN_DIR_OR_FILE (--text STRING | --file F | --mqar SEED)
//               --out trace.h5 [--plots DIR] [--state-norms exact|chunk|off] [--batch N]
//               [--max-tokens N] [--tokenizer bytes|gpt2] [--device auto|cpu|cuda]
//
// The model runs on --device (auto: the GPU when one is visible); every recorded tensor is copied
// to the host as it is recorded.
//
// trace.h5 (docs/inspect.md lists every dataset):
//   /                        attributes: format = "hla-trace", checkpoint, source, config
//   /tokens                  [B,T] int32, the inputs
//   /targets                 [B,T] int32 (MQAR only; -100 where no answer is scored)
//   /layer_03/gla/decay      [B,T,H,K] f32 ... one dataset per recorded tensor
// Every dataset carries a `description` attribute (h5py: f["layer_00/gla/decay"].attrs["description"]).
#include <hdf5.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "autograd/grad_mode.h"
#include "data/hdf5.h"
#include "data/pending_file.h"
#include "data/synthetic_task.h"
#include "data/token_dataset.h"
#include "data/tokenizer.h"
#include "experiments/cli/commands.h"
#include "experiments/cli/tensor_h5.h"
#include "experiments/run/checkpoint.h"
#include "experiments/run/config.h"
#include "experiments/run/trainer.h"
#include "nn/inspect.h"
#include "nn/model.h"

namespace hla::cli {

namespace {

namespace fs = std::filesystem;
using data::h5::Handle;

struct InspectArgs {
  std::string checkpoint;
  std::string text, file;
  int64_t mqar_seed = -1;
  std::string out;
  std::string plots;
  std::string state_norms = "exact";
  int64_t batch = 1;
  int64_t max_tokens = 0;  // 0: train.seq_len
  std::string tokenizer;
  std::string plot_script;
  std::string device = "auto";
};

inspect::StateNorms parse_state_norms(const std::string& s) {
  if (s == "exact") return inspect::StateNorms::Exact;
  if (s == "chunk") return inspect::StateNorms::ChunkBoundaries;
  if (s == "off") return inspect::StateNorms::Off;
  throw Error("inspect --state-norms", "exact, chunk or off", "'" + s + "'");
}

std::string tokenizer_name(const InspectArgs& a, const run::RunConfig& c) {
  if (!a.tokenizer.empty()) return a.tokenizer;
  if (!c.data.tokenizer.empty()) return c.data.tokenizer;
  if (!c.data.path.empty() && data::is_hdf5_file(c.data.path))
    return data::Hdf5TokenSplit(c.data.path, c.data.train_split).info().tokenizer;
  throw Error("inspect", "a tokenizer for this run's text",
              c.data.task.empty() ? "none known (data.path is not an HDF5 dataset)"
                                  : "none (a synthetic-task run has no text)",
              "pass --tokenizer bytes or gpt2, or use --mqar SEED for a synthetic-task run");
}

// The MQAR task of the run, or one sized to the model if the run trained on text.
std::string mqar_spec(const run::RunConfig& c) {
  std::string spec = c.data.task;
  if (spec.rfind("mqar", 0) != 0)
    spec = "mqar:vocab_size=" + std::to_string(c.model.vocab_size);
  if (spec.find("seq_len=") == std::string::npos)
    spec += std::string(spec.find(':') == std::string::npos ? ":" : ",") +
            "seq_len=" + std::to_string(c.train.seq_len);
  return spec;
}

}  // namespace

// ---- plot helpers (declared in commands.h; cmd_sweep.cpp uses them too)

std::string find_plot_script(const std::string& name, const std::string& given) {
  // --plot-script, ./experiments/plots, or the source tree above the build directory.
  if (!given.empty()) return given;
  std::vector<fs::path> candidates = {fs::path("experiments/plots") / name};
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back(exe.parent_path().parent_path() / "experiments/plots" / name);
    candidates.push_back(exe.parent_path() / "experiments/plots" / name);
  }
  for (const auto& c : candidates)
    if (fs::exists(c)) return c.string();
  throw Error("plots", "the plot script experiments/plots/" + name, "not found",
              "run from the source tree or pass --plot-script PATH");
}

std::string plot_python() {
  if (const char* p = std::getenv("HLA_PYTHON"); p && *p) return p;
  if (fs::exists("/usr/bin/python3")) return "/usr/bin/python3";
  return "python3";
}

namespace {

void write_int_dataset(hid_t file, const std::string& path, const Tensor& t,
                       const std::string& description) {
  const Tensor c = t.to(DType::i32).contiguous();
  std::vector<hsize_t> dims(c.shape().begin(), c.shape().end());
  Handle space(H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)), H5Sclose);
  Handle ds(H5_CHECK(H5Dcreate2(file, path.c_str(), H5T_STD_I32LE, space.get(), H5P_DEFAULT,
                                H5P_DEFAULT, H5P_DEFAULT)),
            H5Dclose);
  if (c.numel() > 0)
    H5_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, c.raw_data()));
  data::h5::write_attr(ds.get(), "description", description);
}

struct Trace {
  std::string source;  // what the inputs are
  Tensor targets;      // MQAR only
};

void write_trace(const std::string& out, inspect::Recorder& rec, const Trace& trace,
                 const std::string& checkpoint, const std::string& config_toml) {
  data::h5::silence_hdf5_errors();
  if (fs::path(out).has_parent_path()) fs::create_directories(fs::path(out).parent_path());
  data::PendingFile pending(out);
  {
    Handle file(H5_CHECK(H5Fcreate(pending.temp_path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)),
                H5Fclose);
    const hid_t f = file.get();
    data::h5::write_attr(f, "format", std::string("hla-trace"));
    data::h5::write_attr(f, "checkpoint", checkpoint);
    data::h5::write_attr(f, "source", trace.source);
    data::h5::write_attr(f, "config", config_toml);
    write_int_dataset(f, "tokens", rec.tokens(), "input token ids [B,T]");
    if (trace.targets.defined())
      write_int_dataset(f, "targets", trace.targets,
                        "MQAR targets [B,T]: the value to recall at each query, -100 elsewhere");
    for (const inspect::Entry& e : rec.entries()) {
      write_tensor(f, e.path, e.value);
      Handle ds(H5_CHECK(H5Dopen2(f, e.path.c_str(), H5P_DEFAULT)), H5Dclose);
      data::h5::write_attr(ds.get(), "description", e.description);
    }
  }
  pending.commit();
}

void run_inspect(const InspectArgs& a) {
  const int sources = (!a.text.empty()) + (!a.file.empty()) + (a.mqar_seed >= 0);
  if (sources != 1)
    throw Error("inspect", "exactly one of --text, --file, --mqar", std::to_string(sources) + " given");
  if (a.batch <= 0) throw Error("inspect --batch", "a positive batch", std::to_string(a.batch));
  const std::string path = run::resolve_checkpoint(a.checkpoint);
  const run::CheckpointInfo info = run::read_checkpoint_info(path);
  const run::RunConfig config = run::parse_run_config(info.config_toml, path + " (config)");
  const int64_t max_tokens = a.max_tokens > 0 ? a.max_tokens : config.train.seq_len;
  const Device device = run::resolve_device(a.device);

  Trace trace;
  Tensor tokens;
  if (a.mqar_seed >= 0) {
    const std::string spec = mqar_spec(config);
    const auto task = data::make_synthetic_task(spec);
    if (task->vocab_size() > config.model.vocab_size)
      throw Error("inspect --mqar", "a task vocabulary within the model's " +
                  std::to_string(config.model.vocab_size), spec);
    const data::TokenBatch b = task->batch(static_cast<uint64_t>(a.mqar_seed), 0, a.batch);
    const int64_t T = task->seq_len();
    tokens = Tensor::from_vector<int32_t>(b.inputs, {a.batch, T});
    trace.targets = Tensor::from_vector<int32_t>(b.targets, {a.batch, T});
    trace.source = task->describe() + ", seed " + std::to_string(a.mqar_seed);
  } else {
    std::string text = a.text;
    if (!a.file.empty()) {
      std::ifstream in(a.file, std::ios::binary);
      if (!in) throw Error("inspect --file", "a readable file", "'" + a.file + "'");
      std::ostringstream ss;
      ss << in.rdbuf();
      text = ss.str();
    }
    const auto tok = data::load_tokenizer(tokenizer_name(a, config));
    if (tok->vocab_size() > config.model.vocab_size)
      throw Error("inspect", "a tokenizer whose vocabulary fits the model's " +
                  std::to_string(config.model.vocab_size) + " ids",
                  tok->name() + " with " + std::to_string(tok->vocab_size()));
    std::vector<int32_t> ids = tok->encode(text);
    if (ids.empty()) throw Error("inspect", "a non-empty text", "no tokens");
    if (static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(static_cast<size_t>(max_tokens));
    tokens = Tensor::from_vector<int32_t>(ids, {1, static_cast<int64_t>(ids.size())});
    trace.source = (a.file.empty() ? std::string("text") : "file " + a.file) + ", " +
                   std::to_string(ids.size()) + " " + tok->name() + " tokens";
  }

  Generator init(0);  // overwritten by the checkpoint's weights
  nn::HybridLM model(config.model, init);
  run::load_model_weights(path, model);
  model.to(device);
  model.eval();
  inspect::Recorder rec({.state_norms = parse_state_norms(a.state_norms)});
  {
    NoGradGuard no_grad;
    inspect::RecordScope scope(rec);
    model.forward(tokens.to(device));
  }
  write_trace(a.out, rec, trace, path, info.config_toml);
  std::printf("checkpoint %s (step %lld)\n", path.c_str(), (long long)info.state.step);
  std::printf("inputs: %s, [%lld, %lld]\n", trace.source.c_str(), (long long)tokens.size(0),
              (long long)tokens.size(1));
  std::printf("wrote %zu datasets to %s\n", rec.entries().size() + 1 + trace.targets.defined(),
              a.out.c_str());

  if (!a.plots.empty()) {
    const std::string script = find_plot_script("plot_trace.py", a.plot_script);
    const std::string cmd = plot_python() + " '" + script + "' '" + a.out + "' --out '" + a.plots + "'";
    std::fflush(stdout);
    const int rc = std::system(cmd.c_str());
    if (rc != 0)
      throw Error("inspect --plots", "the plot script to succeed", "exit status " + std::to_string(rc) +
                  " from: " + cmd, "it needs python3-h5py and python3-matplotlib (scripts/install-deps.sh)");
  }
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto a = std::make_shared<InspectArgs>();
  CLI::App* c = app.add_subcommand(
      "inspect", "Record gates, state norms, memory horizons and attention statistics of a checkpoint to HDF5 (+ plots)");
  c->add_option("--checkpoint", a->checkpoint, "run directory or checkpoint .h5 file")->required();
  c->add_option("--text", a->text, "inspect on this text (encoded with the run's tokenizer)");
  c->add_option("--file", a->file, "inspect on the text of this file");
  c->add_option("--mqar", a->mqar_seed, "inspect on MQAR examples of this seed (the run's task, else one sized to the model)");
  c->add_option("--out", a->out, "the trace file to write (.h5)")->required();
  c->add_option("--plots", a->plots, "also write PNG plots into this directory (python3 + h5py + matplotlib)");
  c->add_option("--state-norms", a->state_norms, "exact (every step), chunk (chunk boundaries) or off")
      ->capture_default_str();
  c->add_option("--batch", a->batch, "MQAR examples to record")->capture_default_str();
  c->add_option("--max-tokens", a->max_tokens, "truncate text to this many tokens (default: train.seq_len)");
  c->add_option("--tokenizer", a->tokenizer, "bytes or gpt2 (default: the run's)");
  c->add_option("--device", a->device, "auto, cpu or cuda")->capture_default_str();
  c->add_option("--plot-script", a->plot_script, "path of plot_trace.py (default: found in the source tree)");
  c->callback([a] { run_inspect(*a); });
}

}  // namespace hla::cli
