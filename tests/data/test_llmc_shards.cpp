// Tests: llm.c shards (header layout, write/read round trip, version 2 for large vocabularies),
// headerless nanoGPT files, format auto-detection, and every bad-file case.
#include <catch2/catch.hpp>
#include <cstring>

#include "data/file_io.h"
#include "data/llmc_shards.h"
#include "data/token_windows.h"
#include "tensor/error.h"
#include "tests/data/temp_dir.h"

using namespace hla::data;
using hla::test::TempDir;
using hla::test::write_text;

namespace {

std::vector<int32_t> read_all(const TokenSource& src) {
  std::vector<int32_t> out(src.size());
  src.read(0, src.size(), out.data());
  return out;
}

std::string raw_bytes(const void* data, size_t n) {
  return std::string(static_cast<const char*>(data), n);
}

}  // namespace

TEST_CASE("llm.c: header is 256 int32 (magic, version, count), then uint16 tokens", "[data]") {
  TempDir dir("llmc_header");
  const std::vector<int32_t> tokens = {50256, 0, 1, 15278, 31373, 995};
  write_llmc_shard(dir.file("s.bin"), tokens, 50257);
  const std::string bytes = read_file(dir.file("s.bin"), "test");
  REQUIRE(bytes.size() == 1024 + 2 * tokens.size());
  int32_t header[256];
  std::memcpy(header, bytes.data(), 1024);
  CHECK(header[0] == 20240520);
  CHECK(header[1] == 1);
  CHECK(header[2] == static_cast<int32_t>(tokens.size()));
  for (int i = 3; i < 256; ++i) REQUIRE(header[i] == 0);
  uint16_t first = 0;
  std::memcpy(&first, bytes.data() + 1024, 2);
  CHECK(first == 50256);

  LlmcShard shard(dir.file("s.bin"), 50257);
  CHECK(shard.version() == 1);
  CHECK(shard.size() == static_cast<int64_t>(tokens.size()));
  CHECK(read_all(shard) == tokens);
  std::vector<int32_t> middle(2);
  shard.read(2, 2, middle.data());
  CHECK(middle == std::vector<int32_t>{1, 15278});
  CHECK_FALSE(std::filesystem::exists(dir.file("s.bin.partial")));
}

TEST_CASE("llm.c: version 2 (uint32) for vocabularies above 65536", "[data]") {
  TempDir dir("llmc_v2");
  const std::vector<int32_t> tokens = {128000, 70000, 3};
  write_llmc_shard(dir.file("l.bin"), tokens, 128256);
  LlmcShard shard(dir.file("l.bin"), 128256);
  CHECK(shard.version() == 2);
  CHECK(read_all(shard) == tokens);
  CHECK(std::filesystem::file_size(dir.file("l.bin")) == 1024 + 4 * 3);
}

TEST_CASE("nanoGPT: headerless uint16 files", "[data]") {
  TempDir dir("nanogpt");
  const uint16_t raw[] = {464, 3139, 50256, 7};
  write_text(dir.file("train.bin"), raw_bytes(raw, sizeof raw));
  NanoGptBin bin(dir.file("train.bin"), 50257);
  CHECK(read_all(bin) == std::vector<int32_t>{464, 3139, 50256, 7});
  // auto-detection: no llm.c magic and a .bin name -> nanoGPT
  CHECK(open_token_source(dir.file("train.bin"))->size() == 4);
}

TEST_CASE("token sources: auto-detection and windows over .bin files", "[data]") {
  TempDir dir("bin_auto");
  std::vector<int32_t> tokens(3000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i * 7 % 50257);
  write_llmc_shard(dir.file("shard.dat"), tokens, 50257);  // detected by magic, not by name
  auto src = open_token_source(dir.file("shard.dat"));
  REQUIRE(dynamic_cast<LlmcShard*>(src.get()) != nullptr);
  RandomWindows windows(*src, 2, 64, 3);
  const TokenBatch b = windows.next();
  for (int64_t t = 0; t + 1 < 64; ++t) CHECK(b.inputs[t + 1] == b.targets[t]);
  CHECK(parse_token_file_format("llmc") == TokenFileFormat::LlmC);
  CHECK_THROWS_WITH(parse_token_file_format("npy"), Catch::Contains("auto, hdf5, llmc, nanogpt"));
  write_text(dir.file("notes.txt"), "plain text");
  CHECK_THROWS_WITH(open_token_source(dir.file("notes.txt")), Catch::Contains("hla data prepare"));
}

TEST_CASE("llm.c / nanoGPT: bad files give clear errors", "[data]") {
  TempDir dir("llmc_bad");
  std::vector<int32_t> header(256, 0);
  SECTION("bad magic") {
    header[0] = 12345;
    header[1] = 1;
    write_text(dir.file("m.bin"), raw_bytes(header.data(), 1024));
    CHECK_THROWS_WITH(LlmcShard(dir.file("m.bin"), 50257),
                      Catch::Contains("magic number 20240520") && Catch::Contains("12345"));
    CHECK_THROWS_WITH(open_token_source(dir.file("m.bin"), "train", TokenFileFormat::LlmC),
                      Catch::Contains("magic number 20240520"));
  }
  SECTION("unknown version") {
    header[0] = kLlmcMagic;
    header[1] = 7;
    write_text(dir.file("v.bin"), raw_bytes(header.data(), 1024));
    CHECK_THROWS_WITH(LlmcShard(dir.file("v.bin"), 50257), Catch::Contains("version 1"));
  }
  SECTION("truncated") {
    header[0] = kLlmcMagic;
    header[1] = 1;
    header[2] = 10;
    write_text(dir.file("t.bin"), raw_bytes(header.data(), 1024) + std::string(8, '\0'));
    CHECK_THROWS_WITH(LlmcShard(dir.file("t.bin"), 50257),
                      Catch::Contains("1024 + 10 x 2 bytes") && Catch::Contains("1032 bytes"));
    write_text(dir.file("short.bin"), "tiny");
    CHECK_THROWS_WITH(LlmcShard(dir.file("short.bin"), 50257), Catch::Contains("1024-byte header"));
  }
  SECTION("odd nanoGPT size") {
    write_text(dir.file("odd.bin"), "abc");
    CHECK_THROWS_WITH(NanoGptBin(dir.file("odd.bin"), 50257), Catch::Contains("even number"));
  }
  SECTION("token id >= vocab size") {
    write_llmc_shard(dir.file("ok.bin"), std::vector<int32_t>{1, 2, 60000}, 65536);
    LlmcShard shard(dir.file("ok.bin"), 50257);  // the reader's vocabulary is smaller
    std::vector<int32_t> out(3);
    CHECK_THROWS_WITH(shard.read(0, 3, out.data()),
                      Catch::Contains("id 60000 at token 2") && Catch::Contains("[0, 50257)"));
    CHECK_THROWS_WITH(write_llmc_shard(dir.file("w.bin"), std::vector<int32_t>{50257}, 50257),
                      Catch::Contains("id 50257 at index 0"));
  }
  SECTION("missing file") {
    CHECK_THROWS_WITH(LlmcShard(dir.file("none.bin"), 50257), Catch::Contains("no such file"));
    CHECK_THROWS_WITH(open_token_source(dir.file("none.bin")), Catch::Contains("no such file"));
  }
}
