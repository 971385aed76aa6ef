// Tests: the Hugging Face tokenizer.json BPE tokenizer on the hand-written fixture
// tests/fixtures/hf/tokenizer.json (its README lists the ids): merges by rank, the metaspace
// normaliser, byte fallback, <unk> fusion, added tokens, decoding and round trips, and clear
// errors for unsupported files.
#include <catch2/catch.hpp>
#include <fstream>

#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "data/tokenizer_hf.h"
#include "tests/data/temp_dir.h"

using hla::data::HfBpeTokenizer;
using Ids = std::vector<int32_t>;

namespace {

const std::string kFixture = HLA_SOURCE_DIR "/tests/fixtures/hf/tokenizer.json";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const HfBpeTokenizer& tok() {
  static const HfBpeTokenizer t(kFixture);
  return t;
}

}  // namespace

TEST_CASE("hf tokenizer: sizes, names and the end-of-text id", "[data][tokenizer]") {
  CHECK(tok().vocab_size() == 33);
  CHECK(tok().eot_id() == 2);  // </s>
  CHECK(tok().name() == "hf:" + kFixture);
  const auto loaded = hla::data::load_tokenizer("hf:" + kFixture);
  CHECK(loaded->vocab_size() == 33);
  CHECK(loaded->encode_ordinary("hello world") == Ids{24, 29});
}

TEST_CASE("hf tokenizer: merges apply by rank, after the metaspace normaliser", "[data][tokenizer]") {
  // "▁hello▁world": ▁h(0) ll(1) ▁he(2) llo(3) ▁hello(4) ▁w(5) or(6) ▁wor(7) ld(8) ▁world(9).
  CHECK(tok().encode_ordinary("hello world") == Ids{24, 29});
  // "▁that": "a t" (rank 10) merges before "▁ t" (rank 11) although ▁t is leftmost; "▁ h" cannot
  // apply because ▁ is followed by t.
  CHECK(tok().encode_ordinary("that") == Ids{31, 11, 30});
  // " hello  world" -> "▁▁hello▁▁world": the first ▁ of each pair stays alone.
  CHECK(tok().encode_ordinary(" hello  world") == Ids{10, 24, 10, 29});
  CHECK(tok().encode_ordinary("").empty());
}

TEST_CASE("hf tokenizer: byte fallback and fused <unk>", "[data][tokenizer]") {
  // é = C3 A9 and ! = 21 are not in the vocab as characters: their byte tokens.
  CHECK(tok().encode_ordinary("hé!") == Ids{20, 5, 6, 4});
  // € = E2 82 AC.
  CHECK(tok().encode_ordinary("€") == Ids{10, 7, 8, 9});
  CHECK(tok().encode_ordinary("a\n") == Ids{10, 18, 3});
  // z (7A) has no byte token: <unk>, and consecutive <unk>s fuse into one.
  CHECK(tok().encode_ordinary("hzz") == Ids{20, 0});
  CHECK(tok().encode_ordinary("hzzo") == Ids{20, 0, 14});
  // An invalid UTF-8 byte (a lone C3) is a character of its own and takes its byte token.
  CHECK(tok().encode_ordinary("h\xc3") == Ids{20, 5});
}

TEST_CASE("hf tokenizer: added tokens", "[data][tokenizer]") {
  // encode_added matches every added token, as tokenizers' encode(add_special_tokens=False);
  // each text segment is normalised on its own (so "world" after </s> gets its ▁).
  CHECK(tok().encode_added("<s>hello</s>") == Ids{1, 24, 2});
  CHECK(tok().encode_added("<s>hello world</s>world") == Ids{1, 24, 29, 2, 29});
  // encode_ordinary keeps special tokens as text: "▁<s>hello" -> ▁ <unk>(< s >) h e llo.
  CHECK(tok().encode_ordinary("<s>hello") == Ids{10, 0, 11, 12, 23});
  // Non-special added tokens are matched by both.
  CHECK(tok().encode_ordinary("hello<tag>") == Ids{24, 32});
  CHECK(tok().encode_added("hello<tag>") == Ids{24, 32});
  // encode: "<|endoftext|>" is the end of text, </s>.
  CHECK(tok().encode("hello<|endoftext|>world") == Ids{24, 2, 29});
}

TEST_CASE("hf tokenizer: decode and round trips", "[data][tokenizer]") {
  CHECK(tok().decode(Ids{24, 29}) == "hello world");
  CHECK(tok().decode(Ids{31, 11, 30}) == "that");
  CHECK(tok().decode(Ids{20, 5, 6, 4}) == "hé!");
  // Added tokens decode to their content; the end of text as hla spells it.
  CHECK(tok().decode(Ids{1, 24, 32}) == "<s> hello<tag>");
  CHECK(tok().decode(Ids{24, 2}) == "hello<|endoftext|>");
  CHECK(tok().decode(Ids{0}) == "<unk>");
  for (const std::string text : {"hello world", "that", "hello  world", "hé!", "€!", "a\n",
                                 "what a world\n", "", "h\xc3", "a  "}) {
    INFO(text);
    CHECK(tok().decode(tok().encode_ordinary(text)) == text);
  }
  // The known limit: a leading lone "▁" (this vocab has no "▁▁") strips the next space too.
  CHECK(tok().decode(Ids{10, 24, 10, 29}) == "hello  world");
  CHECK_THROWS_WITH(tok().decode(Ids{33}), Catch::Contains("id 33"));
}

TEST_CASE("hf tokenizer: a Metaspace pre-tokeniser splits words at ▁", "[data][tokenizer]") {
  hla::test::TempDir dir("hf_tok_metaspace");
  std::string text = read_file(kFixture);
  const std::string normalizer = text.substr(text.find("\"normalizer\""),
                                             text.find("\"post_processor\"") - text.find("\"normalizer\""));
  text.replace(text.find(normalizer), normalizer.size(),
               "\"normalizer\": null, \"pre_tokenizer\": {\"type\": \"Metaspace\", "
               "\"replacement\": \"▁\", \"prepend_scheme\": \"always\", \"split\": true},\n  ");
  hla::test::write_text(dir.file("tokenizer.json"), text);
  const HfBpeTokenizer t(dir.file("tokenizer.json"));
  CHECK(t.encode_ordinary("hello world") == Ids{24, 29});
  CHECK(t.encode_ordinary("that") == Ids{31, 11, 30});
  // Text that starts with a space gets no second ▁ (so, as in tokenizers, the decoder's strip
  // drops that space).
  CHECK(t.encode_ordinary(" hello  world") == Ids{24, 10, 29});
  CHECK(t.decode(t.encode_ordinary("what a world")) == "what a world");
}

TEST_CASE("hf tokenizer: unreadable or unsupported files give clear errors", "[data][tokenizer]") {
  hla::test::TempDir dir("hf_tok_errors");
  const std::string fixture = read_file(kFixture);
  const auto error_with = [&](const std::string& from, const std::string& to) {
    std::string text = fixture;
    REQUIRE(text.find(from) != std::string::npos);
    text.replace(text.find(from), from.size(), to);
    hla::test::write_text(dir.file("tokenizer.json"), text);
    try {
      HfBpeTokenizer t(dir.file("tokenizer.json"));
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK_THROWS_WITH(HfBpeTokenizer(dir.file("missing.json")), Catch::Contains("missing.json"));
  CHECK_THAT(error_with("\"type\": \"BPE\"", "\"type\": \"WordPiece\""),
             Catch::Contains("model.type") && Catch::Contains("WordPiece"));
  CHECK_THAT(error_with("\"a t\"", "\"a z\""),
             Catch::Contains("model.merges[10]") && Catch::Contains("'z'"));
  CHECK_THAT(error_with("\"Prepend\", \"prepend\"", "\"Lowercase\", \"prepend\""),
             Catch::Contains("normalizer.type") && Catch::Contains("Lowercase"));
  CHECK_THAT(error_with("\"pre_tokenizer\": null", "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}"),
             Catch::Contains("pre_tokenizer.type"));
  CHECK_THAT(error_with("\"</s>\": 2,", "\"</s>\": 2, \"extra\": 40,"),
             Catch::Contains("no token with id 33"));
  CHECK_THAT(error_with("{\n  \"version\"", "[\n  \"version\""), Catch::Contains("JSON object"));
  CHECK_THAT(error_with("\"content\": \"</s>\"", "\"content\": \"<eos>\""),
             Catch::Contains("one token per id") && Catch::Contains("'<eos>'"));
}

TEST_CASE("hf tokenizer: ids equal Hugging Face tokenizers' on the reference fixture",
          "[data][tokenizer]") {
  // reference_ids.jsonl was written by tests/fixtures/hf/make_reference_ids.py with the
  // `tokenizers` library (0.23.3): encode(text, add_special_tokens=False).
  std::ifstream in(std::string(HLA_SOURCE_DIR) + "/tests/fixtures/hf/reference_ids.jsonl");
  REQUIRE(in.good());
  std::string line;
  int cases = 0;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    const std::string text = j.at("text");
    const Ids want = j.at("ids").get<Ids>();
    INFO("text: '" << text << "'");
    CHECK(tok().encode_added(text) == want);
    ++cases;
  }
  CHECK(cases == 30);
}
