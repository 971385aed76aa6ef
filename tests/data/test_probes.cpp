// Tests: the selective-copying and noisy-recall probes have their documented layouts (ranges,
// exact distances, distractors, masks), are deterministic per seed, and make_synthetic_task
// parses specs, round-trips describe(), and rejects bad names, keys and values.
#include <catch2/catch.hpp>
#include <set>

#include "data/mqar.h"
#include "data/noisy_recall.h"
#include "data/selective_copy.h"
#include "tensor/error.h"

using namespace hla::data;

TEST_CASE("selective copy: data tokens among blanks, copied in order after the separator",
          "[data]") {
  const SelectiveCopyConfig c{16, 128, 12};
  const SelectiveCopy task(c);
  const int64_t T = 128, n = 12, L = T - n;
  const TokenBatch b = task.batch(1, 0, 50);
  CHECK(b.num_targets() == 50 * n);
  std::set<int64_t> first_positions;
  for (int64_t r = 0; r < b.B; ++r) {
    const int32_t* in = b.inputs.data() + r * T;
    const int32_t* tg = b.targets.data() + r * T;
    std::vector<int32_t> seen;
    for (int64_t t = 0; t < L; ++t) {
      REQUIRE(tg[t] == kIgnoreIndex);
      if (in[t] != SelectiveCopy::kBlank) {
        REQUIRE((in[t] >= 2 && in[t] < 16));
        if (seen.empty()) first_positions.insert(t);
        seen.push_back(in[t]);
      }
    }
    REQUIRE(seen.size() == static_cast<size_t>(n));
    REQUIRE(in[L] == SelectiveCopy::kSeparator);
    for (int64_t i = 0; i < n; ++i) {
      REQUIRE(tg[L + i] == seen[i]);                     // copied in order
      if (i + 1 < n) REQUIRE(in[L + 1 + i] == seen[i]);  // teacher forcing
    }
  }
  CHECK(first_positions.size() > 10);  // the positions move from example to example
  CHECK(task.batch(1, 0, 50).inputs == b.inputs);
  CHECK(task.batch(2, 0, 50).inputs != b.inputs);
  CHECK_THROWS_WITH(SelectiveCopy({16, 20, 11}), Catch::Contains("tokens <= seq_len / 2"));
  CHECK_THROWS_WITH(SelectiveCopy({2, 64, 4}), Catch::Contains("vocab_size >= 3"));
}

TEST_CASE("noisy recall: one pair queried at exactly the chosen distance", "[data]") {
  const NoisyRecallConfig c{512, 256, 100, -1, 3};
  const NoisyRecall task(c);
  const int64_t T = 256, K = 128;
  const TokenBatch b = task.batch(9, 0, 40);
  CHECK(b.num_targets() == 40);
  for (int64_t r = 0; r < b.B; ++r) {
    const int32_t* in = b.inputs.data() + r * T;
    const int32_t* tg = b.targets.data() + r * T;
    const int32_t key = in[T - 1];
    REQUIRE(key < K);
    const int64_t p = T - 1 - 100;
    REQUIRE(in[p] == key);            // the key sits exactly `distance` positions back
    REQUIRE(tg[T - 1] == in[p + 1]);  // the target is its value
    REQUIRE((in[p + 1] >= K && in[p + 1] < 2 * K));
    int64_t keys = 0;
    std::set<int32_t> distinct;
    for (int64_t t = 0; t < T - 1; ++t) {
      REQUIRE(tg[t] == kIgnoreIndex);
      if (in[t] < K) {  // a key: followed by a value
        ++keys;
        distinct.insert(in[t]);
        REQUIRE((in[t + 1] >= K && in[t + 1] < 2 * K));
      } else if (in[t] >= 2 * K) {
        REQUIRE(in[t] < 512);  // noise
      }
    }
    REQUIRE(keys == 4);  // the probed pair and three distractors, all with distinct keys
    REQUIRE(distinct.size() == 4);
  }
}

TEST_CASE("noisy recall: a distance range is covered uniformly", "[data]") {
  const NoisyRecall task({64, 64, 10, 13, 0});
  std::set<int64_t> distances;
  const TokenBatch b = task.batch(0, 0, 200);
  for (int64_t r = 0; r < b.B; ++r) {
    const int32_t* in = b.inputs.data() + r * 64;
    for (int64_t d = 10; d <= 13; ++d) {
      if (in[63 - d] == in[63]) distances.insert(d);
    }
  }
  CHECK(distances == std::set<int64_t>{10, 11, 12, 13});
  CHECK_THROWS_WITH(NoisyRecall({512, 64, 64, -1, 0}),
                    Catch::Contains("max_distance <= seq_len - 1"));
  CHECK_THROWS_WITH(NoisyRecall({512, 64, 1, -1, 0}), Catch::Contains("2 <= distance"));
  CHECK_THROWS_WITH(NoisyRecall({512, 64, 8, -1, 40}), Catch::Contains("distractors"));
}

TEST_CASE("make_synthetic_task: specs, describe round trip, errors", "[data]") {
  const auto mqar = make_synthetic_task("mqar:seq_len=64,pairs=4");
  CHECK(mqar->seq_len() == 64);
  CHECK(mqar->vocab_size() == 8192);
  CHECK(mqar->describe() == "mqar:vocab_size=8192,seq_len=64,pairs=4,power_a=0.01");
  for (const std::string spec :
       {"mqar", "selective_copy:tokens=8", "noisy_recall:distance=30,distractors=2"}) {
    const auto task = make_synthetic_task(spec);
    const auto again = make_synthetic_task(task->describe());
    CHECK(again->describe() == task->describe());
    CHECK(again->batch(5, 10, 2).inputs == task->batch(5, 10, 2).inputs);
  }
  CHECK_THROWS_WITH(make_synthetic_task("copying"),
                    Catch::Contains("one of: mqar, selective_copy, noisy_recall"));
  CHECK_THROWS_WITH(
      make_synthetic_task("mqar:pears=4"),
      Catch::Contains("'pears'") && Catch::Contains("pairs, power_a, seq_len, vocab_size"));
  CHECK_THROWS_WITH(make_synthetic_task("mqar:pairs=four"), Catch::Contains("pairs a number"));
  CHECK_THROWS_WITH(make_synthetic_task("mqar:pairs"), Catch::Contains("key=value"));
}

TEST_CASE("masked_accuracy counts only scored positions", "[data]") {
  const auto task = make_synthetic_task("mqar:seq_len=64,pairs=4");
  const TokenBatch b = task->batch(0, 0, 2);
  std::vector<int32_t> predicted = b.targets;  // perfect where scored, -100 elsewhere
  CHECK(masked_accuracy(b, predicted).value() == 1.0);
  CHECK(masked_accuracy(b, predicted).total == 8);
  for (auto& p : predicted) p = 0;
  CHECK(masked_accuracy(b, predicted).correct == 0);
  CHECK_THROWS_WITH(masked_accuracy(b, std::vector<int32_t>(3)), Catch::Contains("[B,T]=[2,64]"));
}
