// defines: Tokenizer (the interface every tokenizer implements) and load_tokenizer(name).
//
// A tokenizer maps text (any bytes; normally UTF-8) to token ids in [0, vocab_size()) and back.
// Both tokenizers of hla are lossless on bytes: decode(encode(x)) == x for every byte string x,
// valid UTF-8 or not.
//
// One special token exists, end-of-text, spelled "<|endoftext|>" (GPT-2's spelling, also used for
// the byte tokenizer). It separates documents in token datasets.
//   encode(text)          the literal "<|endoftext|>" becomes eot_id() (tiktoken's
//                         allowed_special="all"; what `hla data tokenize` prints)
//   encode_ordinary(text) the literal is plain text (what `hla data prepare` uses for documents,
//                         so a document can never forge a document boundary)
//   decode(ids)           eot_id() becomes "<|endoftext|>"; an id outside [0, vocab_size()) throws
//
//   auto tok = hla::data::load_tokenizer("gpt2");   // or "bytes", "hf:dir/tokenizer.json"
//   std::vector<int32_t> ids = tok->encode("hello world");   // {31373, 995}
//   std::string text = tok->decode(ids);
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hla::data {

inline constexpr std::string_view kEndOfText = "<|endoftext|>";

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::string name() const = 0;    // "gpt2", "bytes": stored in datasets
  virtual int32_t vocab_size() const = 0;  // ids are in [0, vocab_size())
  virtual int32_t eot_id() const = 0;      // the end-of-text id

  // Text to ids; "<|endoftext|>" is plain text.
  virtual std::vector<int32_t> encode_ordinary(std::string_view text) const = 0;
  // Text to ids; every "<|endoftext|>" becomes eot_id().
  std::vector<int32_t> encode(std::string_view text) const;
  // Ids to bytes. Throws hla::Error naming the first id outside [0, vocab_size()).
  std::string decode(std::span<const int32_t> ids) const;

 protected:
  // Appends the bytes of one id already known to be in range and not eot_id().
  virtual void append_bytes(int32_t id, std::string& out) const = 0;
};

// The tokenizer called `name`: "bytes", "gpt2" loaded from <assets>/gpt2/ (see assets.h), or
// "hf:PATH" for a Hugging Face tokenizer.json BPE (tokenizer_hf.h). Throws hla::Error for any
// other name, listing the known ones.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& name);

}  // namespace hla::data
