// defines: SelectiveCopy (see selective_copy.h).
#include "data/selective_copy.h"

#include <algorithm>
#include <sstream>

#include "tensor/error.h"

namespace hla::data {

SelectiveCopy::SelectiveCopy(const SelectiveCopyConfig& config) : c_(config) {
  if (c_.vocab_size < 3) {
    throw Error("selective_copy", "vocab_size >= 3 (blank, separator, data tokens)",
                std::to_string(c_.vocab_size));
  }
  if (c_.tokens < 1 || 2 * c_.tokens > c_.seq_len) {
    throw Error("selective_copy", "1 <= tokens <= seq_len / 2",
                "tokens=" + std::to_string(c_.tokens) + ", seq_len=" + std::to_string(c_.seq_len));
  }
}

std::string SelectiveCopy::describe() const {
  std::ostringstream os;
  os << "selective_copy:vocab_size=" << c_.vocab_size << ",seq_len=" << c_.seq_len
     << ",tokens=" << c_.tokens;
  return os.str();
}

void SelectiveCopy::example(uint64_t seed, uint64_t index, int32_t* inputs,
                            int32_t* targets) const {
  const int64_t T = c_.seq_len, n = c_.tokens, L = T - n;
  Generator gen = example_generator(seed, index);
  std::vector<int32_t> positions = draw_distinct(gen, 0, L, n);
  std::sort(positions.begin(), positions.end());
  std::vector<int32_t> data(n);
  for (auto& d : data) d = static_cast<int32_t>(2 + gen.below(c_.vocab_size - 2));

  std::fill(inputs, inputs + T, kBlank);
  std::fill(targets, targets + T, kIgnoreIndex);
  for (int64_t i = 0; i < n; ++i) inputs[positions[i]] = data[i];
  inputs[L] = kSeparator;
  for (int64_t i = 0; i < n; ++i) {
    if (i + 1 < n) inputs[L + 1 + i] = data[i];
    targets[L + i] = data[i];
  }
}

}  // namespace hla::data
