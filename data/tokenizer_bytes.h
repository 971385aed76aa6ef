// defines: BytesTokenizer, the byte-level tokenizer: id b is the byte b (0..255), id 256 is
// end-of-text; vocab_size() = 257. Needs no files; every byte string round-trips exactly.
//
//   BytesTokenizer tok;
//   tok.encode("hi<|endoftext|>");   // {104, 105, 256}
#pragma once

#include "data/tokenizer.h"

namespace hla::data {

class BytesTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "bytes"; }
  int32_t vocab_size() const override { return 257; }
  int32_t eot_id() const override { return 256; }
  std::vector<int32_t> encode_ordinary(std::string_view text) const override;

 protected:
  void append_bytes(int32_t id, std::string& out) const override;
};

}  // namespace hla::data
