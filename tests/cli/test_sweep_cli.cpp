// Tests: `hla sweep` through the built binary on a 2-cell grid (GLA pure and 1:1, 3 steps):
// results.csv / results.md, resume that skips finished cells without retraining and reruns a
// failed one, the plot script (skipped with a WARN without python3 + matplotlib), and the shipped
// grids resolving every cell's config (--dry-run); --shard I/N splitting the cells into shard
// files that a plain run merges; --only; a stopped cell continuing from its checkpoint.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "tests/data/temp_dir.h"
#include "tests/helpers/run_hla.h"

using hla::test::TempDir;
using hla::test::read_text;
using hla::test::run_hla;
using Result = hla::test::CliResult;
using hla::test::write_text;

namespace {

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

const std::string kGrid = R"(
[sweep]
variants = ["gla"]
ratios = ["pure", "1:1"]
seeds = [0]

[base.model]
hidden_size = 16
num_layers = 2
num_heads = 2
attn_num_heads = 2
attn_num_kv_heads = 2
[base.optim]
warmup_steps = 1
[base.train]
steps = 3
batch_size = 2
log_interval = 1
eval_interval = 3
eval_batches = 1

[tasks.mqar]
metric = "accuracy"
set = ["data.task=mqar:vocab_size=32,pairs=2", "train.seq_len=16"]
)";

// "step:loss" of every training record of a metrics.jsonl, in order.
std::vector<std::string> step_losses(const std::string& jsonl) {
  static const std::regex record(R"re("step": (\d+), "loss": ([^,]+),)re");
  std::vector<std::string> out;
  for (std::sregex_iterator it(jsonl.begin(), jsonl.end(), record), end; it != end; ++it)
    out.push_back((*it)[1].str() + ":" + (*it)[2].str());
  return out;
}

}  // namespace

TEST_CASE("cli sweep: results, resume skips finished cells, plots", "[cli][sweep]") {
  TempDir dir("sweep_cli");
  write_text(dir.file("grid.toml"), kGrid);
  const std::string out = dir.file("out");
  const std::string base = "sweep --grid " + dir.file("grid.toml") + " --out " + out;

  const Result first = run_hla(base + " --no-plots");
  INFO(first.output);
  REQUIRE(first.code == 0);
  CHECK_THAT(first.output, Catch::Contains("2 ran, 0 skipped"));
  const std::string csv = read_text(out + "/results.csv");
  CHECK(count(csv, "\n") == 3);  // header + 2 cells
  CHECK(count(csv, ",ok\n") == 2);
  CHECK_THAT(csv, Catch::Contains("mqar__gla__pure__s0,mqar,gla,pure,0,accuracy,"));
  CHECK_THAT(csv, Catch::Contains("mqar__gla__1-1__s0,mqar,gla,1:1,0,accuracy,"));
  const std::string md = read_text(out + "/results.md");
  CHECK_THAT(md, Catch::Contains("| variant | pure | 1:1 |"));
  CHECK_THAT(md, Catch::Contains("| gla |"));

  // Resume: nothing retrains; the cells' checkpoints stay as they were.
  const auto ckpt = std::filesystem::path(out) / "cells/mqar__gla__pure__s0/checkpoints/latest.h5";
  REQUIRE(std::filesystem::exists(ckpt));
  const auto mtime = std::filesystem::last_write_time(ckpt);
  const Result again = run_hla(base + " --no-plots");
  INFO(again.output);
  REQUIRE(again.code == 0);
  CHECK_THAT(again.output, Catch::Contains("0 ran, 2 skipped"));
  CHECK(std::filesystem::last_write_time(ckpt) == mtime);
  CHECK(read_text(out + "/results.csv") == csv);

  // A failed cell (as a crash would leave it) is rerun; the finished one is not.
  write_text(out + "/results.csv",
             std::regex_replace(csv, std::regex("(mqar__gla__1-1__s0,[^\n]*),ok\n"), "$1,error: killed\n"));
  const Result retry = run_hla(base + " --no-plots");
  INFO(retry.output);
  REQUIRE(retry.code == 0);
  CHECK_THAT(retry.output, Catch::Contains("1 ran, 1 skipped"));
  CHECK(count(read_text(out + "/results.csv"), ",ok\n") == 2);

  // A bad key fails before anything trains, naming the key.
  const Result bad = run_hla(base + " --set model.hidden_sise=3 --no-plots");
  CHECK(bad.code == 1);
  CHECK_THAT(bad.output, Catch::Contains("hidden_sise"));

  if (hla::test::plotting_python().empty()) {
    WARN("SKIP plots: python3 with h5py and matplotlib not found (scripts/install-deps.sh)");
    return;
  }
  const Result plots = run_hla(base + " --plot-script " HLA_SOURCE_DIR "/experiments/plots/plot_sweep.py");
  INFO(plots.output);
  REQUIRE(plots.code == 0);
  CHECK(std::filesystem::file_size(std::filesystem::path(out) / "mqar.png") > 1000);
  CHECK(std::filesystem::file_size(std::filesystem::path(out) / "mqar_loss.png") > 1000);
}

TEST_CASE("cli sweep: --only trains and tabulates the selected task alone", "[cli][sweep]") {
  TempDir dir("sweep_only");
  write_text(dir.file("grid.toml"), kGrid + R"(
[tasks.mqar_long]
metric = "accuracy"
set = ["data.task=mqar:vocab_size=32,pairs=4", "train.seq_len=32"]
)");
  const std::string out = dir.file("out");
  const Result r = run_hla("sweep --grid " + dir.file("grid.toml") + " --out " + out +
                           " --no-plots --only mqar_long");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("2 ran, 0 skipped"));
  const std::string csv = read_text(out + "/results.csv");
  CHECK(count(csv, ",mqar_long,") == 2);
  CHECK(count(csv, ",mqar,") == 0);
  const std::string md = read_text(out + "/results.md");
  CHECK_THAT(md, Catch::Contains("## mqar_long (accuracy)"));
  CHECK_THAT(md, !Catch::Contains("## mqar (accuracy)"));
}

TEST_CASE("cli sweep: a stopped cell continues from its checkpoint, bit for bit", "[cli][sweep]") {
  TempDir dir("sweep_stopped");
  write_text(dir.file("grid.toml"), kGrid);
  const std::string out = dir.file("out");
  const std::string base =
      "sweep --grid " + dir.file("grid.toml") + " --out " + out + " --no-plots --only pure";
  REQUIRE(run_hla(base).code == 0);
  const std::string cell = out + "/cells/mqar__gla__pure__s0";
  const std::vector<std::string> whole = step_losses(read_text(cell + "/metrics.jsonl"));
  REQUIRE(whole.size() == 3);
  const std::string csv = read_text(out + "/results.csv");
  write_text(dir.file("cell.toml"), read_text(cell + "/config.toml"));

  // What a sweep killed after step 1 leaves: the cell's run with a checkpoint, no results row.
  auto stop_after_one_step = [&] {
    std::filesystem::remove_all(cell);
    write_text(out + "/results.csv", csv.substr(0, csv.find('\n') + 1));
    const Result part =
        run_hla("train --config " + dir.file("cell.toml") + " --out " + cell + " --stop-after 1");
    INFO(part.output);
    REQUIRE(part.code == 0);
  };
  stop_after_one_step();
  const Result resumed = run_hla(base);
  INFO(resumed.output);
  REQUIRE(resumed.code == 0);
  CHECK_THAT(resumed.output, Catch::Contains("resumed at step 1") && Catch::Contains("1 ran"));
  CHECK(step_losses(read_text(cell + "/metrics.jsonl")) == whole);
  CHECK(count(read_text(out + "/results.csv"), ",ok\n") == 1);

  // Under another config (here --set) the checkpoint is not this cell's: it starts over.
  stop_after_one_step();
  const Result changed = run_hla(base + " --set optim.lr=1e-3");
  INFO(changed.output);
  REQUIRE(changed.code == 0);
  CHECK_THAT(changed.output, !Catch::Contains("resumed"));
  CHECK(step_losses(read_text(cell + "/metrics.jsonl")).size() == 3);
}

TEST_CASE("cli sweep: the shipped grids resolve every cell (--dry-run)", "[cli][sweep]") {
  const Result cpu = run_hla("sweep --dry-run --grid " HLA_SOURCE_DIR "/experiments/grids/cpu_small.toml");
  INFO(cpu.output);
  CHECK(cpu.code == 0);
  CHECK_THAT(cpu.output, Catch::Contains("20 cells"));
  const Result gpu = run_hla("sweep --dry-run --grid " HLA_SOURCE_DIR "/experiments/grids/gpu_paper.toml");
  INFO(gpu.output);
  CHECK(gpu.code == 0);
  CHECK_THAT(gpu.output, Catch::Contains("mqar"));
  CHECK_THAT(gpu.output, Catch::Contains("layers 24"));
  const Result quick = run_hla("sweep --dry-run --grid " HLA_SOURCE_DIR "/experiments/grids/gpu_quick.toml");
  INFO(quick.output);
  CHECK(quick.code == 0);
  CHECK_THAT(quick.output, Catch::Contains("62 cells") && Catch::Contains("layers 24, hidden 128"));
}

TEST_CASE("cli sweep --shard: shards split the cells, a plain run merges them", "[cli][sweep]") {
  TempDir dir("sweep_shard_cli");
  write_text(dir.file("grid.toml"), kGrid);
  const std::string out = dir.file("out");
  const std::string base = "sweep --grid " + dir.file("grid.toml") + " --out " + out + " --no-plots";

  for (const char* shard : {"0/2", "1/2"}) {
    const Result r = run_hla(base + " --shard " + shard);
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK_THAT(r.output, Catch::Contains(std::string("shard ") + shard + ": 1 ran"));
  }
  CHECK_FALSE(std::filesystem::exists(out + "/results.csv"));
  const std::string a = read_text(out + "/results.shard-0-of-2.csv");
  const std::string b = read_text(out + "/results.shard-1-of-2.csv");
  CHECK(count(a, ",ok\n") == 1);
  CHECK(count(b, ",ok\n") == 1);
  for (const char* cell : {"mqar__gla__pure__s0,", "mqar__gla__1-1__s0,"})
    CHECK(count(a, cell) + count(b, cell) == 1);

  const Result merged = run_hla(base);
  INFO(merged.output);
  REQUIRE(merged.code == 0);
  CHECK_THAT(merged.output, Catch::Contains("0 ran, 2 skipped"));
  CHECK(count(read_text(out + "/results.csv"), ",ok\n") == 2);
  CHECK_THAT(read_text(out + "/results.md"), Catch::Contains("| gla |"));

  // --collect after one shard of another run merges its cell and trains nothing.
  const std::string part_out = dir.file("partial");
  const std::string part_base = "sweep --grid " + dir.file("grid.toml") + " --out " + part_out + " --no-plots";
  REQUIRE(run_hla(part_base + " --shard 1/2").code == 0);
  const Result part = run_hla(part_base + " --collect");
  INFO(part.output);
  REQUIRE(part.code == 0);
  CHECK_THAT(part.output, Catch::Contains("1 of 2 cells finished"));
  CHECK(count(read_text(part_out + "/results.csv"), ",ok\n") == 1);
  CHECK_THAT(read_text(part_out + "/results.md"), Catch::Contains(" - |"));
  CHECK(run_hla(part_base + " --collect --shard 0/2").code == 1);

  for (const char* bad : {"2/2", "-1/2", "1", "a/b", "0/0"}) {
    const Result r = run_hla(base + " --shard " + bad);
    CHECK(r.code == 1);
    CHECK_THAT(r.output, Catch::Contains("--shard") && Catch::Contains("I/N"));
  }
}
