// defines: SyntheticTask::batch, example_generator, draw_distinct, make_synthetic_task (see
// synthetic_task.h).
#include "data/synthetic_task.h"

#include <map>
#include <set>
#include <unordered_map>

#include "data/mqar.h"
#include "data/noisy_recall.h"
#include "data/selective_copy.h"
#include "tensor/error.h"

namespace hla::data {

namespace {

// The key=value parameters of a spec; each task reads the keys it knows, and finish() rejects
// any key left over.
class SpecArgs {
 public:
  SpecArgs(const std::string& spec, const std::string& name, const std::string& params)
      : spec_(spec), name_(name) {
    size_t at = 0;
    while (at < params.size()) {
      size_t end = params.find(',', at);
      if (end == std::string::npos) end = params.size();
      const std::string item = params.substr(at, end - at);
      const size_t eq = item.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
        throw Error("task " + spec_, "parameters key=value separated by commas", "'" + item + "'");
      }
      values_[item.substr(0, eq)] = item.substr(eq + 1);
      at = end + 1;
    }
  }

  int64_t get(const std::string& key, int64_t fallback) {
    return read(key, fallback,
                [](const std::string& s, size_t* used) { return std::stoll(s, used); });
  }
  double get(const std::string& key, double fallback) {
    return read(key, fallback,
                [](const std::string& s, size_t* used) { return std::stod(s, used); });
  }

  void finish() const {
    for (const auto& [key, value] : values_) {
      if (!known_.count(key)) {
        std::string list;
        for (const auto& k : known_) list += (list.empty() ? "" : ", ") + k;
        throw Error("task " + spec_, name_ + " parameters among: " + list, "'" + key + "'");
      }
    }
  }

 private:
  template <class T, class Parse>
  T read(const std::string& key, T fallback, Parse parse) {
    known_.insert(key);
    const auto it = values_.find(key);
    if (it == values_.end()) return fallback;
    size_t used = 0;
    T value{};
    try {
      value = parse(it->second, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != it->second.size()) {
      throw Error("task " + spec_, key + " a number", "'" + it->second + "'");
    }
    return value;
  }

  std::string spec_, name_;
  std::map<std::string, std::string> values_;
  std::set<std::string> known_;  // ordered, for the error listing
};

}  // namespace

TokenBatch SyntheticTask::batch(uint64_t seed, uint64_t first, int64_t B) const {
  if (B <= 0) throw Error("task " + describe(), "a batch size B > 0", std::to_string(B));
  const int64_t T = seq_len();
  TokenBatch out{B, T, std::vector<int32_t>(B * T), std::vector<int32_t>(B * T)};
  for (int64_t b = 0; b < B; ++b) {
    example(seed, first + b, out.inputs.data() + b * T, out.targets.data() + b * T);
  }
  return out;
}

Generator example_generator(uint64_t seed, uint64_t index) {
  // two SplitMix64 outputs as a hash: H(index ^ H(seed))
  const uint64_t seed_hash = Generator(seed).next_u64();
  return Generator(Generator(index ^ seed_hash).next_u64());
}

std::vector<int32_t> draw_distinct(Generator& gen, int64_t lo, int64_t hi, int64_t n) {
  HLA_CHECK(n >= 0 && n <= hi - lo,
            "draw_distinct: n=" << n << " from [" << lo << ", " << hi << ")");
  // a virtual array a[i] = lo + i, of which only the swapped entries are stored
  std::unordered_map<int64_t, int64_t> swapped;
  const auto at = [&](int64_t i) {
    const auto it = swapped.find(i);
    return it == swapped.end() ? lo + i : it->second;
  };
  std::vector<int32_t> out(n);
  const int64_t range = hi - lo;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = i + static_cast<int64_t>(gen.below(range - i));
    const int64_t vi = at(i), vj = at(j);
    out[i] = static_cast<int32_t>(vj);
    swapped[j] = vi;
  }
  return out;
}

std::unique_ptr<SyntheticTask> make_synthetic_task(const std::string& spec) {
  const size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  SpecArgs args(spec, name, colon == std::string::npos ? "" : spec.substr(colon + 1));
  std::unique_ptr<SyntheticTask> task;
  if (name == "mqar") {
    MqarConfig c;
    c.vocab_size = args.get("vocab_size", c.vocab_size);
    c.seq_len = args.get("seq_len", c.seq_len);
    c.pairs = args.get("pairs", c.pairs);
    c.power_a = args.get("power_a", c.power_a);
    args.finish();
    task = std::make_unique<Mqar>(c);
  } else if (name == "selective_copy") {
    SelectiveCopyConfig c;
    c.vocab_size = args.get("vocab_size", c.vocab_size);
    c.seq_len = args.get("seq_len", c.seq_len);
    c.tokens = args.get("tokens", c.tokens);
    args.finish();
    task = std::make_unique<SelectiveCopy>(c);
  } else if (name == "noisy_recall") {
    NoisyRecallConfig c;
    c.vocab_size = args.get("vocab_size", c.vocab_size);
    c.seq_len = args.get("seq_len", c.seq_len);
    c.distance = args.get("distance", c.distance);
    c.max_distance = args.get("max_distance", c.max_distance);
    c.distractors = args.get("distractors", c.distractors);
    args.finish();
    task = std::make_unique<NoisyRecall>(c);
  } else {
    throw Error("task", "one of: mqar, selective_copy, noisy_recall", "'" + name + "'",
                "e.g. mqar:seq_len=256,pairs=16");
  }
  return task;
}

}  // namespace hla::data
