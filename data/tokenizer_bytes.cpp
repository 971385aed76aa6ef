// defines: BytesTokenizer (see tokenizer_bytes.h).
#include "data/tokenizer_bytes.h"

namespace hla::data {

std::vector<int32_t> BytesTokenizer::encode_ordinary(std::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

void BytesTokenizer::append_bytes(int32_t id, std::string& out) const {
  out.push_back(static_cast<char>(id));
}

}  // namespace hla::data
