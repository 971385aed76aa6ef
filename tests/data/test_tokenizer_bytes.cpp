// Tests: the byte tokenizer maps byte b to id b, "<|endoftext|>" to 256 through encode only, and
// round-trips every byte; load_tokenizer knows both names and rejects others.
#include <catch2/catch.hpp>

#include "data/tokenizer_bytes.h"
#include "tensor/error.h"

using hla::data::BytesTokenizer;

TEST_CASE("bytes: ids are the bytes, end-of-text is 256", "[data]") {
  BytesTokenizer tok;
  CHECK(tok.vocab_size() == 257);
  CHECK(tok.eot_id() == 256);
  CHECK(tok.encode("hi<|endoftext|>\xFF") == std::vector<int32_t>{104, 105, 256, 255});
  CHECK(tok.encode_ordinary("<|").size() == 2);
  CHECK(tok.encode_ordinary("a<|endoftext|>").size() == 14);
  CHECK(tok.encode("").empty());
}

TEST_CASE("bytes: every byte round-trips", "[data]") {
  BytesTokenizer tok;
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const auto ids = tok.encode(all + "<|endoftext|>" + all);
  CHECK(ids.size() == 513);
  CHECK(tok.decode(ids) == all + "<|endoftext|>" + all);
}

TEST_CASE("bytes: decode rejects ids outside [0, 257)", "[data]") {
  BytesTokenizer tok;
  const std::vector<int32_t> bad = {1, 257};
  REQUIRE_THROWS_WITH(tok.decode(bad),
                      Catch::Contains("bytes decode") && Catch::Contains("id 257 at position 1"));
}

TEST_CASE("load_tokenizer: known names, clear error otherwise", "[data]") {
  CHECK(hla::data::load_tokenizer("bytes")->name() == "bytes");
  const auto gpt2 = hla::data::load_tokenizer("gpt2");
  CHECK(gpt2->vocab_size() == 50257);
  REQUIRE_THROWS_WITH(hla::data::load_tokenizer("llama"),
                      Catch::Contains("one of: gpt2, bytes") && Catch::Contains("'llama'"));
}

TEST_CASE("load_tokenizer: a wrong HLA_ASSETS_DIR names the path and the variable", "[data]") {
  const char* old = std::getenv("HLA_ASSETS_DIR");
  const std::string saved = old ? old : "";
  setenv("HLA_ASSETS_DIR", "/nonexistent-hla-assets", 1);
  CHECK_THROWS_WITH(
      hla::data::load_tokenizer("gpt2"),
      Catch::Contains("/nonexistent-hla-assets/gpt2/") && Catch::Contains("HLA_ASSETS_DIR"));
  if (old) {
    setenv("HLA_ASSETS_DIR", saved.c_str(), 1);
  } else {
    unsetenv("HLA_ASSETS_DIR");
  }
}
