// defines: Gpt2Tokenizer, GPT-2's byte-level BPE (Radford et al. 2019), 50,257 ids, read from
// OpenAI's two files:
//   encoder.json  {"token": id, ...}: each token is a byte string written through GPT-2's
//                 byte-to-unicode table (byte b -> a printable code point; e.g. ' ' -> 'Ġ')
//   vocab.bpe     "#version" line, then 50,000 merges "a b", highest priority first
// and "<|endoftext|>" = 50256 as the special end-of-text token.
//
// Encoding, as OpenAI's encoder.py and tiktoken do:
//   1. pre-tokenise with GPT-2's pattern (PCRE2, Unicode properties):
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   2. in each piece, start from one token per byte and repeatedly merge the adjacent pair of
//      lowest merge rank (leftmost first) until no listed merge applies.
// Input that is not valid UTF-8 is still encoded losslessly: each invalid byte is a piece of its
// own (its byte token), and the valid stretches around it are pre-tokenised as usual.
//
// Thread safety: encode/decode are const and may run concurrently.
//
//   Gpt2Tokenizer tok(asset_path("gpt2/encoder.json"), asset_path("gpt2/vocab.bpe"));
//   tok.encode("I'm   don't");   // {40, 1101, 220, 220, 836, 470}
#pragma once

#include <memory>

#include "data/tokenizer.h"

namespace hla::data {

class Gpt2Tokenizer final : public Tokenizer {
 public:
  // Loads and checks both files; throws hla::Error naming the file and the bad entry.
  Gpt2Tokenizer(const std::string& encoder_json_path, const std::string& vocab_bpe_path);
  ~Gpt2Tokenizer() override;

  std::string name() const override { return "gpt2"; }
  int32_t vocab_size() const override;
  int32_t eot_id() const override;
  std::vector<int32_t> encode_ordinary(std::string_view text) const override;

 protected:
  void append_bytes(int32_t id, std::string& out) const override;

 private:
  struct Impl;  // the tables and the compiled PCRE2 pattern
  std::unique_ptr<Impl> impl_;
};

}  // namespace hla::data
