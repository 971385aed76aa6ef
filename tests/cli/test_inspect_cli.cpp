// Tests: `hla inspect` end to end through the built binary: a tiny HGRN 1:1 hybrid trained for
// three steps is inspected on MQAR and on text; the trace holds /tokens, every layer's datasets
// with their shapes and a description attribute on each; bad input fails naming the flag; and
// the plot script runs on the trace (skipped with a WARN without python3 + h5py + matplotlib).
#include <hdf5.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <vector>

#include "tests/data/temp_dir.h"
#include "tests/helpers/run_hla.h"

using hla::test::TempDir;
using hla::test::read_text;
using hla::test::run_hla;
using Result = hla::test::CliResult;
using hla::test::write_text;

namespace {

const std::string kTiny = R"(
[model]
variant = "hgrn"
layout = "1:1"
vocab_size = 257
hidden_size = 16
num_layers = 4
attn_num_heads = 2
attn_num_kv_heads = 2
[data]
task = "mqar:vocab_size=32,pairs=2"
[optim]
warmup_steps = 1
[train]
steps = 3
batch_size = 2
seq_len = 16
log_interval = 1
eval_interval = 3
eval_batches = 1
)";

// Every dataset in the file: path -> (shape, description attribute or "<none>").
struct Dataset {
  std::vector<hsize_t> shape;
  std::string description;
};

herr_t collect(hid_t loc, const char* name, const H5L_info_t*, void* data) {
  auto& out = *static_cast<std::map<std::string, Dataset>*>(data);
  const hid_t obj = H5Oopen(loc, name, H5P_DEFAULT);
  if (obj < 0) return -1;
  if (H5Iget_type(obj) == H5I_DATASET) {
    Dataset d;
    const hid_t space = H5Dget_space(obj);
    d.shape.resize(static_cast<size_t>(H5Sget_simple_extent_ndims(space)));
    H5Sget_simple_extent_dims(space, d.shape.data(), nullptr);
    H5Sclose(space);
    d.description = "<none>";
    if (H5Aexists(obj, "description") > 0) {
      const hid_t attr = H5Aopen(obj, "description", H5P_DEFAULT);
      const hid_t type = H5Aget_type(attr);
      char* s = nullptr;
      if (H5Tis_variable_str(type) > 0 && H5Aread(attr, type, &s) >= 0 && s) {
        d.description = s;
        H5free_memory(s);
      }
      H5Tclose(type);
      H5Aclose(attr);
    }
    out[name] = d;
  }
  H5Oclose(obj);
  return 0;
}

std::map<std::string, Dataset> datasets(const std::string& path) {
  std::map<std::string, Dataset> out;
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  REQUIRE(f >= 0);
  H5Lvisit(f, H5_INDEX_NAME, H5_ITER_NATIVE, collect, &out);
  H5Fclose(f);
  return out;
}

using Shape = std::vector<hsize_t>;

}  // namespace

TEST_CASE("cli inspect: MQAR and text traces with descriptions, plots", "[cli][inspect]") {
  TempDir dir("inspect_cli");
  write_text(dir.file("tiny.toml"), kTiny);
  const std::string run = dir.file("run");
  const Result train = run_hla("train --config " + dir.file("tiny.toml") + " --out " + run);
  REQUIRE(train.code == 0);

  const std::string trace = dir.file("trace.h5");
  const Result r = run_hla("inspect --checkpoint " + run + " --mqar 3 --batch 2 --out " + trace);
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("wrote"));
  const auto ds = datasets(trace);
  for (const auto& [path, d] : ds) {
    INFO(path);
    CHECK(d.description != "<none>");
    CHECK_FALSE(d.description.empty());
  }
  REQUIRE(ds.count("tokens"));
  CHECK(ds.at("tokens").shape == Shape{2, 16});
  CHECK(ds.at("targets").shape == Shape{2, 16});
  // Layers 1 and 3 are attention (1:1 of 4), 0 and 2 HGRN; only layer 2 has a lower bound.
  CHECK(ds.at("layer_00/hgrn/forget_gate").shape == Shape{2, 16, 16});
  CHECK(ds.at("layer_00/hgrn/state_norm").shape == Shape{2, 16, 1});
  CHECK(ds.at("layer_02/hgrn/lower_bound").shape == Shape{16});
  CHECK(ds.count("layer_00/hgrn/lower_bound") == 0);
  CHECK(ds.at("layer_01/attention/entropy").shape == Shape{2, 16, 2});
  CHECK(ds.at("layer_03/attention/distance").shape == Shape{2, 16, 2});

  // Text through the bytes tokenizer, chunk-boundary state norms.
  const std::string text_trace = dir.file("text.h5");
  const Result t = run_hla("inspect --checkpoint " + run + " --text 'hello inspection' --tokenizer bytes "
                           "--state-norms chunk --out " + text_trace);
  INFO(t.output);
  REQUIRE(t.code == 0);
  const auto tds = datasets(text_trace);
  CHECK(tds.at("tokens").shape == Shape{1, 16});  // truncated to train.seq_len
  CHECK(tds.at("layer_02/hgrn/state_norm_chunk").shape == Shape{1, 1, 1});
  CHECK(tds.count("layer_02/hgrn/state_norm") == 0);

  // Bad input names the flag.
  const Result none = run_hla("inspect --checkpoint " + run + " --out " + dir.file("x.h5"));
  CHECK(none.code == 1);
  CHECK_THAT(none.output, Catch::Contains("--text, --file, --mqar"));
  const Result bad = run_hla("inspect --checkpoint " + run + " --mqar 1 --state-norms maybe --out " +
                             dir.file("x.h5"));
  CHECK(bad.code == 1);
  CHECK_THAT(bad.output, Catch::Contains("--state-norms"));
  CHECK_FALSE(std::filesystem::exists(dir.file("x.h5")));

  // Plots (through hla, which finds experiments/plots/plot_trace.py in the source tree).
  if (hla::test::plotting_python().empty()) {
    WARN("SKIP plots: python3 with h5py and matplotlib not found (scripts/install-deps.sh)");
    return;
  }
  const std::string plots = dir.file("plots");
  const Result p = run_hla("inspect --checkpoint " + run + " --mqar 3 --out " + dir.file("p.h5") +
                           " --plots " + plots + " --plot-script " HLA_SOURCE_DIR
                           "/experiments/plots/plot_trace.py");
  INFO(p.output);
  REQUIRE(p.code == 0);
  for (const char* png : {"gates_layer_00_hgrn.png", "gates_layer_02_hgrn.png", "state_norms.png",
                          "horizons.png", "attention.png"}) {
    INFO(png);
    CHECK(std::filesystem::file_size(std::filesystem::path(plots) / png) > 1000);
  }
}
