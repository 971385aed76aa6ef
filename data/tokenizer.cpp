// defines: the shared parts of Tokenizer (special-token splitting, checked decode) and
// load_tokenizer.
#include "data/tokenizer.h"

#include "data/assets.h"
#include "data/tokenizer_bytes.h"
#include "data/tokenizer_gpt2.h"
#include "data/tokenizer_hf.h"
#include "tensor/error.h"

namespace hla::data {

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  for (;;) {
    const size_t at = text.find(kEndOfText);
    const std::vector<int32_t> piece = encode_ordinary(text.substr(0, at));
    ids.insert(ids.end(), piece.begin(), piece.end());
    if (at == std::string_view::npos) return ids;
    ids.push_back(eot_id());
    text.remove_prefix(at + kEndOfText.size());
  }
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  out.reserve(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size()) {
      throw Error(name() + " decode", "ids in [0, " + std::to_string(vocab_size()) + ")",
                  "id " + std::to_string(id) + " at position " + std::to_string(i),
                  "were these ids made by another tokenizer?");
    }
    if (id == eot_id()) {
      out += kEndOfText;
    } else {
      append_bytes(id, out);
    }
  }
  return out;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& name) {
  if (name == "bytes") return std::make_unique<BytesTokenizer>();
  if (name == "gpt2") {
    return std::make_unique<Gpt2Tokenizer>(asset_path("gpt2/encoder.json"),
                                           asset_path("gpt2/vocab.bpe"));
  }
  // A Hugging Face tokenizer.json (e.g. shipped with a model that `hla convert` read).
  if (name.rfind("hf:", 0) == 0) return std::make_unique<HfBpeTokenizer>(name.substr(3));
  throw Error("tokenizer", "one of: gpt2, bytes, hf:PATH/tokenizer.json", "'" + name + "'");
}

}  // namespace hla::data
