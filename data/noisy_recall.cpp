// defines: NoisyRecall (see noisy_recall.h).
#include "data/noisy_recall.h"

#include <sstream>

#include "tensor/error.h"

namespace hla::data {

NoisyRecall::NoisyRecall(const NoisyRecallConfig& config) : c_(config) {
  const std::string op = "noisy_recall";
  if (c_.max_distance < c_.distance) c_.max_distance = c_.distance;
  const int64_t T = c_.seq_len;
  if (c_.vocab_size < 8) throw Error(op, "vocab_size >= 8", std::to_string(c_.vocab_size));
  if (T < 16) throw Error(op, "seq_len >= 16", std::to_string(T));
  if (c_.distance < 2 || c_.max_distance > T - 1) {
    throw Error(op, "2 <= distance <= max_distance <= seq_len - 1",
                "distance=" + std::to_string(c_.distance) + ", max_distance=" +
                    std::to_string(c_.max_distance) + ", seq_len=" + std::to_string(T));
  }
  if (c_.distractors < 0 || 4 * (c_.distractors + 1) > T || c_.distractors >= c_.vocab_size / 4) {
    throw Error(op, "0 <= distractors, 2 * (distractors + 1) <= seq_len / 2, distractors < V/4",
                "distractors=" + std::to_string(c_.distractors) + ", seq_len=" + std::to_string(T) +
                    ", vocab_size=" + std::to_string(c_.vocab_size));
  }
}

std::string NoisyRecall::describe() const {
  std::ostringstream os;
  os << "noisy_recall:vocab_size=" << c_.vocab_size << ",seq_len=" << c_.seq_len
     << ",distance=" << c_.distance << ",max_distance=" << c_.max_distance
     << ",distractors=" << c_.distractors;
  return os.str();
}

void NoisyRecall::example(uint64_t seed, uint64_t index, int32_t* inputs, int32_t* targets) const {
  const int64_t V = c_.vocab_size, T = c_.seq_len, K = V / 4;
  Generator gen = example_generator(seed, index);
  const int64_t d =
      c_.distance + static_cast<int64_t>(gen.below(c_.max_distance - c_.distance + 1));
  const int64_t p = T - 1 - d;
  // keys[0] is the probed key, the rest belong to distractors
  const std::vector<int32_t> keys = draw_distinct(gen, 0, K, c_.distractors + 1);
  const auto value = [&] { return static_cast<int32_t>(K + gen.below(K)); };

  for (int64_t t = 0; t < T; ++t) {
    inputs[t] = static_cast<int32_t>(2 * K + gen.below(V - 2 * K));
    targets[t] = kIgnoreIndex;
  }
  std::vector<bool> used(T, false);
  const int32_t v = value();
  inputs[p] = keys[0];
  inputs[p + 1] = v;
  inputs[T - 1] = keys[0];
  targets[T - 1] = v;
  used[p] = used[p + 1] = used[T - 1] = true;

  std::vector<int64_t> starts;
  for (int64_t i = 1; i <= c_.distractors; ++i) {
    starts.clear();
    for (int64_t s = 0; s + 1 < T - 1; ++s) {
      if (!used[s] && !used[s + 1]) starts.push_back(s);
    }
    HLA_CHECK(!starts.empty(), "no room for distractor " << i << " in " << describe());
    const int64_t s = starts[gen.below(starts.size())];
    inputs[s] = keys[i];
    inputs[s + 1] = value();
    used[s] = used[s + 1] = true;
  }
}

}  // namespace hla::data
