// Tests: safetensors round trip (F32, BF16, F16, metadata, empty tensors) and the strict reader's
// errors on corrupt or truncated files.
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>

#include "data/safetensors.h"
#include "tests/data/temp_dir.h"

using hla::data::SafetensorsFile;
using hla::data::SafetensorsTensor;
using hla::data::write_safetensors;
using hla::test::TempDir;
using hla::test::write_text;

namespace {

template <class T>
std::span<const std::byte> bytes_of(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

// A file with this header text (not padded) followed by `data_len` zero bytes.
std::string raw_file(const std::string& header, size_t data_len, uint64_t header_len = 0) {
  std::string s(8, '\0');
  const uint64_t n = header_len ? header_len : header.size();
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s + header + std::string(data_len, '\0');
}

std::string error_of(const std::string& path) {
  try {
    SafetensorsFile f(path);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("safetensors: write then read gives the same names, dtypes, shapes and bytes") {
  TempDir dir("st_roundtrip");
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
  const std::vector<uint16_t> b = {0x3f80, 0xc000, 0x7fc0};  // bf16 1, -2, NaN
  const std::vector<uint16_t> c = {0x3c00, 0x4000};          // f16 1, 2
  const std::string path = dir.file("m.safetensors");
  write_safetensors(path,
                    {{"model.a", "F32", {2, 3}, bytes_of(a)},
                     {"b", "BF16", {3}, bytes_of(b)},
                     {"c", "F16", {1, 2, 1}, bytes_of(c)},
                     {"empty", "F32", {0, 4}, {}}},
                    {{"format", "pt"}});
  SafetensorsFile f(path);
  REQUIRE(f.entries().size() == 4);
  CHECK(f.metadata().at("format") == "pt");
  const auto* ea = f.find("model.a");
  REQUIRE(ea);
  CHECK(ea->dtype == "F32");
  CHECK(ea->shape == std::vector<int64_t>{2, 3});
  REQUIRE(ea->bytes.size() == 24);
  CHECK(std::memcmp(ea->bytes.data(), a.data(), 24) == 0);
  const auto* eb = f.find("b");
  REQUIRE(eb);
  CHECK(eb->dtype == "BF16");
  CHECK(std::memcmp(eb->bytes.data(), b.data(), 6) == 0);
  CHECK(f.find("c")->shape == std::vector<int64_t>{1, 2, 1});
  CHECK(f.find("empty")->bytes.empty());
  CHECK(f.find("missing") == nullptr);
  // The header is padded to 8 bytes, so the data buffer starts aligned.
  std::ifstream in(path, std::ios::binary);
  unsigned char len = 0;
  in.read(reinterpret_cast<char*>(&len), 1);
  CHECK(len % 8 == 0);
}

TEST_CASE("safetensors: the writer rejects size mismatches, unknown dtypes and duplicate names") {
  TempDir dir("st_write_errors");
  const std::vector<float> a = {1, 2, 3};
  const std::string path = dir.file("m.safetensors");
  CHECK_THROWS_WITH(write_safetensors(path, {{"a", "F32", {2, 2}, bytes_of(a)}}),
                    Catch::Contains("16 bytes") && Catch::Contains("12 bytes"));
  CHECK_THROWS_WITH(write_safetensors(path, {{"a", "F64", {3}, bytes_of(a)}}),
                    Catch::Contains("F64"));
  CHECK_THROWS_WITH(
      write_safetensors(path, {{"a", "F32", {3}, bytes_of(a)}, {"a", "F32", {3}, bytes_of(a)}}),
      Catch::Contains("'a' twice"));
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("safetensors: corrupt or truncated files give clear errors") {
  TempDir dir("st_errors");
  const std::string p = dir.file("bad.safetensors");
  const std::string ok_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

  SECTION("valid baseline") {
    write_text(p, raw_file("{" + ok_entry + "}", 8));
    CHECK(error_of(p).empty());
  }
  SECTION("missing file") { CHECK_THAT(error_of(p + "x"), Catch::Contains("readable file")); }
  SECTION("shorter than the length field") {
    write_text(p, "abc");
    CHECK_THAT(error_of(p), Catch::Contains("at least 8 bytes") && Catch::Contains("bad.safetensors"));
  }
  SECTION("bad header length") {
    write_text(p, raw_file("{" + ok_entry + "}", 8, 1u << 30));
    CHECK_THAT(error_of(p), Catch::Contains("bad header length") && Catch::Contains("1073741824"));
  }
  SECTION("header not JSON") {
    write_text(p, raw_file("{not json", 0));
    CHECK_THAT(error_of(p), Catch::Contains("not JSON"));
  }
  SECTION("header JSON but not an object") {
    write_text(p, raw_file("[1,2]", 0));
    CHECK_THAT(error_of(p), Catch::Contains("JSON object") && Catch::Contains("array"));
  }
  SECTION("unknown dtype") {
    write_text(p, raw_file(R"({"w":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}})", 2));
    CHECK_THAT(error_of(p), Catch::Contains("unknown dtype \"I8\"") && Catch::Contains("'w'"));
  }
  SECTION("missing field") {
    write_text(p, raw_file(R"({"w":{"dtype":"F32","shape":[2]}})", 8));
    CHECK_THAT(error_of(p), Catch::Contains("data_offsets") && Catch::Contains("'w'"));
  }
  SECTION("offsets past the end (truncated data)") {
    write_text(p, raw_file("{" + ok_entry + "}", 5));
    CHECK_THAT(error_of(p), Catch::Contains("past the end") && Catch::Contains("truncated"));
  }
  SECTION("shape and size mismatch") {
    write_text(p, raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));
    CHECK_THAT(error_of(p), Catch::Contains("12 bytes for F32 [3]") && Catch::Contains("mismatch"));
  }
  SECTION("overlapping offsets") {
    write_text(p, raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                           12));
    CHECK_THAT(error_of(p), Catch::Contains("overlapping") && Catch::Contains("'b'"));
  }
  SECTION("a gap between tensors (misaligned offsets)") {
    write_text(p, raw_file(R"({"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                           8));
    CHECK_THAT(error_of(p), Catch::Contains("misaligned") && Catch::Contains("'b'"));
  }
  SECTION("trailing bytes") {
    write_text(p, raw_file("{" + ok_entry + "}", 12));
    CHECK_THAT(error_of(p), Catch::Contains("4 trailing bytes"));
  }
  SECTION("end before begin") {
    write_text(p, raw_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8));
    CHECK_THAT(error_of(p), Catch::Contains("begin <= end"));
  }
}
