// Tests: `hla data` end to end through the built binary: tokenize round trips, prepare writes a
// readable dataset, export-bin/info/task work, and bad inputs exit non-zero with a clear message
// and leave no output file.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>

#include "data/file_io.h"
#include "data/llmc_shards.h"
#include "data/token_dataset.h"
#include "tests/data/temp_dir.h"
#include "tests/helpers/run_hla.h"

using hla::test::TempDir;
using hla::test::read_text;
using hla::test::run_hla;
using Result = hla::test::CliResult;
using hla::test::write_text;

namespace {

std::string quoted(const std::string& path) {
  return "'" + path + "'";
}

}  // namespace

TEST_CASE("cli data tokenize: ids of the exact bytes, and --decode reverses them", "[data][cli]") {
  TempDir dir("cli_tokenize");
  write_text(dir.file("hw.txt"), "hello world");
  const Result ids =
      run_hla("data tokenize --tokenizer gpt2 --in " + quoted(dir.file("hw.txt")), true);
  CHECK(ids.code == 0);
  CHECK(ids.output == "31373 995\n");

  const std::string text = "Tabs\tand\r\nCRLF, caf\xC3\xA9 \xF0\x9F\x99\x82<|endoftext|>\n\n  ";
  for (const char* tokenizer : {"gpt2", "bytes"}) {
    write_text(dir.file("in.txt"), text);
    const Result enc = run_hla(std::string("data tokenize --tokenizer ") + tokenizer + " --in " +
                                   quoted(dir.file("in.txt")),
                               true);
    REQUIRE(enc.code == 0);
    write_text(dir.file("ids.txt"), enc.output);
    const Result dec = run_hla(std::string("data tokenize --decode --tokenizer ") + tokenizer +
                                   " --in " + quoted(dir.file("ids.txt")),
                               true);
    REQUIRE(dec.code == 0);
    CHECK(dec.output == text);
  }
}

TEST_CASE("cli data prepare: a readable dataset, info, export-bin", "[data][cli]") {
  TempDir dir("cli_prepare");
  write_text(dir.file("docs/a.txt"), "The first document.\n");
  write_text(dir.file("docs/b.txt"), "The second document, a little longer than the first.\n");
  const std::string out = dir.file("corpus.h5");
  const Result prep = run_hla("data prepare --tokenizer gpt2 --in " + quoted(dir.file("docs")) +
                              " --out " + quoted(out) + " --val-fraction 0.3");
  INFO(prep.output);
  REQUIRE(prep.code == 0);
  CHECK_THAT(prep.output, Catch::Contains("2 documents"));
  hla::data::Hdf5TokenSplit train(out, "train");
  CHECK(train.info().tokenizer == "gpt2");
  CHECK(train.size() > 0);

  const Result info = run_hla("data info " + quoted(out));
  CHECK(info.code == 0);
  CHECK_THAT(info.output, Catch::Contains("tokenizer gpt2") && Catch::Contains("train"));

  const Result exp = run_hla("data export-bin --in " + quoted(out) + " --split train --out " +
                             quoted(dir.file("train.bin")));
  REQUIRE(exp.code == 0);
  hla::data::LlmcShard shard(dir.file("train.bin"), 50257);
  CHECK(shard.size() == train.size());
  const Result bin_info = run_hla("data info " + quoted(dir.file("train.bin")));
  CHECK(bin_info.code == 0);
  CHECK_THAT(bin_info.output, Catch::Contains("llm.c shard version 1"));
}

TEST_CASE("cli data task: prints examples of a synthetic task", "[data][cli]") {
  const Result r = run_hla("data task mqar:seq_len=32,pairs=4 --rows 3 --seed 1", true);
  CHECK(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("mqar:vocab_size=8192,seq_len=32,pairs=4") &&
                           Catch::Contains("example 2"));
}

TEST_CASE("cli data: bad inputs exit non-zero with a clear message", "[data][cli]") {
  TempDir dir("cli_errors");
  write_text(dir.file("text.h5"), "not hdf5");
  write_text(dir.file("a.txt"), "x");
  write_text(dir.file("ids.txt"), "31373 99999");
  const auto fails = [](const std::string& args, const std::string& message) {
    const Result r = run_hla(args);
    INFO("hla " << args << "\n" << r.output);
    CHECK(r.code != 0);
    CHECK_THAT(r.output, Catch::Contains(message));
  };
  fails("data tokenize --in " + quoted(dir.file("missing.txt")), "missing.txt");
  fails("data tokenize --tokenizer llama --in " + quoted(dir.file("a.txt")), "one of: gpt2, bytes");
  fails("data tokenize --decode --in " + quoted(dir.file("a.txt")), "integer ids");
  fails("data tokenize --decode --in " + quoted(dir.file("ids.txt")), "id 99999 at position 1");
  fails("data info " + quoted(dir.file("text.h5")), "an HDF5 file");
  fails("data info " + quoted(dir.file("a.txt")), "hla data prepare");
  fails("data info --format llmc " + quoted(dir.file("a.txt")), "1024-byte header");
  fails("data task mqar:pairs=100,seq_len=64", "pairs <= seq_len / 4");
  fails("data task mqar --rows 0", "B > 0");
  const std::string out = dir.file("o.h5");
  fails("data prepare --in " + quoted(dir.file("a.txt")) + " --out " + quoted(out) +
            " --val-fraction 1.5",
        "--val-fraction in [0, 1)");
  fails("data prepare --in " + quoted(dir.file("nothing")) + " --out " + quoted(out),
        "no such path");
  CHECK_FALSE(std::filesystem::exists(out));
  CHECK_FALSE(std::filesystem::exists(out + ".partial"));
}
