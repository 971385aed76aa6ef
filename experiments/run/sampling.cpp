#include "experiments/run/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace hla::run {

int32_t sample_token(const float* logits, int64_t V, const SamplingOptions& options,
                     Generator& gen) {
  if (options.temperature == 0.0)
    return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> ids(static_cast<size_t>(V));
  std::iota(ids.begin(), ids.end(), 0);
  const int64_t k = options.top_k > 0 ? std::min(options.top_k, V) : V;
  // The k largest logits first (ties by id, so the order is deterministic).
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  std::vector<double> weights(static_cast<size_t>(k));
  const double top = logits[ids[0]];
  for (int64_t i = 0; i < k; ++i)
    weights[i] = std::exp((logits[ids[i]] - top) / options.temperature);
  double u = gen.uniform() * std::accumulate(weights.begin(), weights.end(), 0.0);
  for (int64_t i = 0; i < k; ++i) {
    u -= weights[i];
    if (u < 0) return ids[i];
  }
  return ids[k - 1];
}

}  // namespace hla::run
