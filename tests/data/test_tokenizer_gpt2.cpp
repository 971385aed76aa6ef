// Tests: the GPT-2 tokenizer agrees with tiktoken on every golden string and both Moby Dick
// chapters (tests/fixtures/gpt2/golden_ids.jsonl), and decode(encode(x)) == x for any bytes.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/file_io.h"
#include "data/tokenizer_gpt2.h"
#include "tensor/error.h"
#include "tensor/random.h"

using hla::data::Gpt2Tokenizer;

namespace {

const std::string kFixtures = HLA_SOURCE_DIR "/tests/fixtures/gpt2/";

// Loaded once: parsing encoder.json and vocab.bpe takes a fraction of a second.
const Gpt2Tokenizer& gpt2() {
  static const Gpt2Tokenizer tok(HLA_SOURCE_DIR "/data/assets/gpt2/encoder.json",
                                 HLA_SOURCE_DIR "/data/assets/gpt2/vocab.bpe");
  return tok;
}

// Random bytes; with `utf8`, a random string of code points from every plane, encoded as UTF-8.
std::string random_text(hla::Generator& gen, size_t n, bool utf8) {
  std::string s;
  while (s.size() < n) {
    if (!utf8) {
      s.push_back(static_cast<char>(gen.below(256)));
      continue;
    }
    // mostly ASCII (letters, digits, spaces, punctuation), some of every other range
    uint32_t cp;
    switch (gen.below(6)) {
      case 0:
      case 1:
      case 2:
        cp = static_cast<uint32_t>(0x20 + gen.below(0x5F));
        break;
      case 3:
        cp = static_cast<uint32_t>(gen.below(0x800));
        break;
      case 4:
        cp = static_cast<uint32_t>(0x800 + gen.below(0x10000 - 0x800));
        break;
      default:
        cp = static_cast<uint32_t>(0x10000 + gen.below(0x100000));
        break;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;  // surrogates are not characters
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  return s;
}

}  // namespace

TEST_CASE("gpt2: golden ids from tiktoken, strings and whole chapters", "[data]") {
  const auto& tok = gpt2();
  CHECK(tok.vocab_size() == 50257);
  CHECK(tok.eot_id() == 50256);
  std::ifstream in(kFixtures + "golden_ids.jsonl");
  REQUIRE(in);
  std::string line;
  int strings = 0, files = 0;
  while (std::getline(in, line)) {
    const auto rec = nlohmann::json::parse(line);
    const auto expected = rec.at("ids").get<std::vector<int32_t>>();
    std::string text;
    if (rec.contains("text")) {
      text = rec.at("text").get<std::string>();
      ++strings;
    } else {
      // "data/chapter_N.txt" names the copy in tests/fixtures/gpt2/
      const std::string file = rec.at("file").get<std::string>();
      text = hla::data::read_file(kFixtures + file.substr(file.rfind('/') + 1), "test");
      ++files;
    }
    INFO("text: " << text.substr(0, 80));
    CHECK(tok.encode(text) == expected);
    CHECK(tok.decode(expected) == text);
  }
  CHECK(strings == 14);
  CHECK(files == 2);
}

TEST_CASE("gpt2: special token only through encode, not encode_ordinary", "[data]") {
  const auto& tok = gpt2();
  const std::string text = "a<|endoftext|>b";
  const auto special = tok.encode(text);
  REQUIRE(special.size() == 3);
  CHECK(special[1] == 50256);
  const auto ordinary = tok.encode_ordinary(text);
  CHECK(std::find(ordinary.begin(), ordinary.end(), 50256) == ordinary.end());
  CHECK(tok.decode(ordinary) == text);
  CHECK(tok.decode(special) == text);
}

TEST_CASE("gpt2: decode(encode(x)) == x for random UTF-8 and random bytes", "[data]") {
  const auto& tok = gpt2();
  hla::Generator gen(7);
  for (int trial = 0; trial < 200; ++trial) {
    const bool utf8 = trial % 2 == 0;
    const std::string text = random_text(gen, 1 + gen.below(300), utf8);
    const auto ids = tok.encode(text);
    for (int32_t id : ids) REQUIRE((id >= 0 && id < tok.vocab_size()));
    REQUIRE(tok.decode(ids) == text);
  }
}

TEST_CASE("gpt2: invalid UTF-8 bytes are single byte tokens between valid stretches", "[data]") {
  const auto& tok = gpt2();
  // 0xFF never occurs in UTF-8; 0xC3 alone is a truncated sequence; 0xED 0xA0 0x80 a surrogate
  for (const std::string& text : {std::string("ab\xFF cd"), std::string("caf\xC3"),
                                  std::string("x\xED\xA0\x80y"), std::string("\x80\x80\x80")}) {
    const auto ids = tok.encode(text);
    CHECK(tok.decode(ids) == text);
  }
  const auto ids = tok.encode("hello\xFFworld");
  CHECK(ids == std::vector<int32_t>{31373, 187, 6894});  // "hello", byte 0xFF, "world"
}

TEST_CASE("gpt2: long runs of one character encode quickly and exactly", "[data]") {
  const auto& tok = gpt2();
  const std::string run(200000, '=');
  const auto ids = tok.encode(run);
  CHECK(ids.size() < run.size() / 4);
  CHECK(tok.decode(ids) == run);
}

TEST_CASE("gpt2: decode rejects ids outside the vocabulary", "[data]") {
  const auto& tok = gpt2();
  const std::vector<int32_t> bad = {31373, 50257};
  REQUIRE_THROWS_AS(tok.decode(bad), hla::Error);
  REQUIRE_THROWS_WITH(tok.decode(bad),
                      Catch::Contains("id 50257 at position 1") && Catch::Contains("[0, 50257)"));
  const std::vector<int32_t> negative = {-1};
  REQUIRE_THROWS_AS(tok.decode(negative), hla::Error);
}

TEST_CASE("gpt2: missing or mismatched files give clear errors", "[data]") {
  const std::string dir = HLA_SOURCE_DIR "/data/assets/gpt2/";
  REQUIRE_THROWS_WITH(Gpt2Tokenizer(dir + "nope.json", dir + "vocab.bpe"),
                      Catch::Contains("nope.json"));
  // vocab.bpe in place of encoder.json: not JSON
  REQUIRE_THROWS_WITH(Gpt2Tokenizer(dir + "vocab.bpe", dir + "vocab.bpe"), Catch::Contains("JSON"));
}
