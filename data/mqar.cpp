// defines: Mqar (see mqar.h).
#include "data/mqar.h"

#include <cmath>
#include <sstream>

#include "tensor/error.h"

namespace hla::data {

Mqar::Mqar(const MqarConfig& config) : c_(config) {
  const std::string op = "mqar";
  const int64_t V = c_.vocab_size, T = c_.seq_len, D = c_.pairs;
  if (T < 4 || T % 2 != 0) {
    throw Error(op, "an even seq_len >= 4", std::to_string(T));
  }
  if (D < 1 || 4 * D > T) {
    throw Error(op, "1 <= pairs <= seq_len / 4 (the kv block may fill at most half the sequence)",
                "pairs=" + std::to_string(D) + ", seq_len=" + std::to_string(T),
                "use more positions or fewer pairs");
  }
  if (D > V / 2 - 1 || D > V - V / 2) {
    throw Error(op,
                "vocab_size with room for pairs distinct keys in [1, V/2) and values in [V/2, V)",
                "vocab_size=" + std::to_string(V) + ", pairs=" + std::to_string(D));
  }
  if (!(c_.power_a > 0.0 && c_.power_a <= 1.0)) {
    throw Error(op, "0 < power_a <= 1", std::to_string(c_.power_a));
  }
  const int64_t slots = (T - 2 * D) / 2;
  slot_weight_.resize(slots);
  for (int64_t g = 0; g < slots; ++g) slot_weight_[g] = std::pow(g + 1.0, c_.power_a - 1.0);
}

std::string Mqar::describe() const {
  std::ostringstream os;
  os << "mqar:vocab_size=" << c_.vocab_size << ",seq_len=" << c_.seq_len << ",pairs=" << c_.pairs
     << ",power_a=" << c_.power_a;
  return os.str();
}

void Mqar::example(uint64_t seed, uint64_t index, int32_t* inputs, int32_t* targets) const {
  const int64_t V = c_.vocab_size, T = c_.seq_len, D = c_.pairs;
  Generator gen = example_generator(seed, index);
  const std::vector<int32_t> keys = draw_distinct(gen, 1, V / 2, D);
  const std::vector<int32_t> values = draw_distinct(gen, V / 2, V, D);

  // query slots: D draws without replacement, each proportional to the remaining weights
  std::vector<double> weight = slot_weight_;
  double total = 0;
  for (double w : weight) total += w;
  std::vector<int64_t> slot(D);
  for (int64_t i = 0; i < D; ++i) {
    double u = gen.uniform() * total;
    int64_t g = 0;
    // walk the CDF; the last positive weight catches rounding at the top end
    while (g + 1 < static_cast<int64_t>(weight.size()) && (weight[g] == 0.0 || u >= weight[g])) {
      u -= weight[g];
      ++g;
    }
    while (weight[g] == 0.0) --g;
    slot[i] = g;
    total -= weight[g];
    weight[g] = 0.0;
  }

  for (int64_t t = 0; t < T; ++t) {
    inputs[t] = static_cast<int32_t>(gen.below(V));  // filler, overwritten below where needed
    targets[t] = kIgnoreIndex;
  }
  for (int64_t i = 0; i < D; ++i) {
    inputs[2 * i] = keys[i];
    inputs[2 * i + 1] = values[i];
    const int64_t q = 2 * D + 2 * slot[i];
    inputs[q] = keys[i];
    targets[q] = values[i];
  }
}

}  // namespace hla::data
