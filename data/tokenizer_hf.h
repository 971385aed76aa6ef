// defines: HfBpeTokenizer, the BPE tokenizers of Hugging Face `tokenizers` read from a
// tokenizer.json, as Llama-2 style models ship them (the tokenizers of fla's released models).
//
// What is read from tokenizer.json:
//   model          {"type": "BPE", "vocab": {token: id}, "merges": ["a b", ...] or [["a","b"], ...]
//                   (highest priority first), "unk_token", "byte_fallback", "fuse_unk"}
//   added_tokens   [{"id", "content", "special", ...}]: <unk>, <s>, </s>, ...
//   normalizer     null | Prepend {"prepend"} | Replace {"pattern": {"String"}, "content"} |
//                  Sequence of those (Llama-2: prepend "▁", replace " " with "▁")
//   pre_tokenizer  null | Metaspace {"replacement", "prepend_scheme": always | first | never,
//                  "split"} (newer Llama-style files put the "▁" handling here instead)
// Anything else (another model type, a regex pattern, lstrip/rstrip on added tokens, a
// continuing_subword_prefix) throws hla::Error naming the file and the key.
//
// Encoding one piece of text (what `tokenizers` does with add_special_tokens=False):
//   1. split off added-token literals (leftmost, longest first); each is its id
//   2. normalise each remaining segment (e.g. "hello world" -> "▁hello▁world")
//   3. split into UTF-8 characters; a character not in the vocab becomes its bytes' <0xXX>
//      tokens (byte_fallback), or <unk> when one is missing (consecutive <unk>s fused)
//   4. merge the adjacent pair of lowest merge rank (leftmost first) until none applies
// Decoding (the Llama decoder): "▁" -> " ", <0xXX> -> that byte, added tokens -> their content,
// and one leading space of the output dropped when the normaliser prepends "▁".
//
// The Tokenizer interface (data/tokenizer.h) on top of this:
//   encode_ordinary(text)  special added tokens are plain text (documents cannot forge <s> or
//                          </s>); non-special added tokens are matched
//   encode(text)           "<|endoftext|>" -> eot_id(), the rest as encode_ordinary
//   encode_added(text)     every added token matched: `tokenizers`' tok.encode(text,
//                          add_special_tokens=False).ids
//   eot_id()               "</s>" (else "<|endoftext|>" or "<|end_of_text|>"), decoded as
//                          "<|endoftext|>" like every hla tokenizer's end of text
// decode(encode_ordinary(x)) == x for text without "▁" (U+2581) and without added-token
// literals, when every byte token <0x00>..<0xFF> exists (invalid UTF-8 included), except for
// text that starts with a space encoded as a lone "▁" token (when the vocab lacks "▁▁"): decode
// strips the leading space once per leading empty piece, as it sees one token at a time.
//
//   HfBpeTokenizer tok("tests/fixtures/hf/tokenizer.json");  // or load_tokenizer("hf:PATH")
//   tok.encode_added("<s>hello world");                       // {1, 24, 29}
#pragma once

#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace hla::data {

class HfBpeTokenizer final : public Tokenizer {
 public:
  // Loads and checks tokenizer.json; throws hla::Error naming the file and the bad entry.
  explicit HfBpeTokenizer(const std::string& tokenizer_json_path);
  ~HfBpeTokenizer() override;

  std::string name() const override;  // "hf:<path>", which load_tokenizer accepts
  int32_t vocab_size() const override;
  int32_t eot_id() const override;
  std::vector<int32_t> encode_ordinary(std::string_view text) const override;
  std::vector<int32_t> encode_added(std::string_view text) const;

 protected:
  void append_bytes(int32_t id, std::string& out) const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hla::data
