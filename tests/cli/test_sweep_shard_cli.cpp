// Tests: `hla sweep --shard I/N` through the built binary on a 3-cell grid (GLA pure, 1:1 and a
// transformer, 2 steps): two shards split the cells without overlap and write their own shard
// files (no results.csv); a run without --shard trains nothing and merges them; bad shards fail.
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "tests/data/temp_dir.h"
#include "tests/helpers/run_hla.h"

using hla::test::TempDir;
using hla::test::read_text;
using hla::test::run_hla;
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
transformer = true

[base.model]
hidden_size = 16
num_layers = 2
num_heads = 2
attn_num_heads = 2
attn_num_kv_heads = 2
[base.optim]
warmup_steps = 1
[base.train]
steps = 2
batch_size = 2
log_interval = 1
eval_interval = 2
eval_batches = 1
device = "cpu"

[tasks.mqar]
metric = "accuracy"
set = ["data.task=mqar:vocab_size=32,pairs=2", "train.seq_len=16"]
)";

}  // namespace

TEST_CASE("cli sweep --shard: shards split the cells, a plain run merges them", "[cli][sweep]") {
  TempDir dir("sweep_shard_cli");
  write_text(dir.file("grid.toml"), kGrid);
  const std::string out = dir.file("out");
  const std::string base = "sweep --grid " + dir.file("grid.toml") + " --out " + out + " --no-plots";

  const auto s0 = run_hla(base + " --shard 0/2");
  INFO(s0.output);
  REQUIRE(s0.code == 0);
  CHECK_THAT(s0.output, Catch::Contains("shard 0/2: 2 ran"));
  const auto s1 = run_hla(base + " --shard 1/2");
  INFO(s1.output);
  REQUIRE(s1.code == 0);
  CHECK_THAT(s1.output, Catch::Contains("shard 1/2: 1 ran"));
  CHECK_FALSE(std::filesystem::exists(out + "/results.csv"));
  const std::string a = read_text(out + "/results.shard-0-of-2.csv");
  const std::string b = read_text(out + "/results.shard-1-of-2.csv");
  CHECK(count(a, ",ok\n") == 2);
  CHECK(count(b, ",ok\n") == 1);
  for (const char* cell : {"mqar__gla__pure__s0,", "mqar__gla__1-1__s0,", "mqar__transformer__"})
    CHECK(count(a, cell) + count(b, cell) == 1);

  const auto merged = run_hla(base);
  INFO(merged.output);
  REQUIRE(merged.code == 0);
  CHECK_THAT(merged.output, Catch::Contains("0 ran, 3 skipped"));
  const std::string csv = read_text(out + "/results.csv");
  CHECK(count(csv, ",ok\n") == 3);
  CHECK_THAT(read_text(out + "/results.md"), Catch::Contains("| gla |"));

  for (const char* bad : {"2/2", "-1/2", "1", "a/b", "0/0"}) {
    const auto r = run_hla(base + " --shard " + bad);
    CHECK(r.code == 1);
    CHECK_THAT(r.output, Catch::Contains("--shard") && Catch::Contains("I/N"));
  }
}
