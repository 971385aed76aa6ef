// Tests: MQAR examples have the Zoology layout (kv block, D queries of earlier keys in distinct
// slots, targets only at the queries), the query slots follow the power law, and the stream is
// deterministic per seed and independent of the batch size.
#include <catch2/catch.hpp>
#include <cmath>
#include <set>

#include "data/mqar.h"
#include "tensor/error.h"

using namespace hla::data;

namespace {

// One example's queries, recovered from the batch alone.
struct Query {
  int64_t pos, slot, pair;
};

std::vector<Query> check_layout(const MqarConfig& c, const int32_t* in, const int32_t* tg) {
  const int64_t V = c.vocab_size, T = c.seq_len, D = c.pairs;
  std::set<int32_t> keys, values;
  for (int64_t i = 0; i < D; ++i) {
    REQUIRE((in[2 * i] >= 1 && in[2 * i] < V / 2));          // key range
    REQUIRE((in[2 * i + 1] >= V / 2 && in[2 * i + 1] < V));  // value range
    keys.insert(in[2 * i]);
    values.insert(in[2 * i + 1]);
    REQUIRE(tg[2 * i] == kIgnoreIndex);
    REQUIRE(tg[2 * i + 1] == kIgnoreIndex);
  }
  REQUIRE(keys.size() == static_cast<size_t>(D));    // distinct keys
  REQUIRE(values.size() == static_cast<size_t>(D));  // distinct values
  std::vector<Query> queries;
  std::set<int64_t> pairs_seen;
  for (int64_t t = 2 * D; t < T; ++t) {
    REQUIRE((in[t] >= 0 && in[t] < V));
    if (tg[t] == kIgnoreIndex) continue;
    REQUIRE((t - 2 * D) % 2 == 0);  // queries sit on the first position of a slot
    int64_t pair = -1;
    for (int64_t i = 0; i < D; ++i) {
      if (in[2 * i] == in[t]) pair = i;
    }
    REQUIRE(pair >= 0);                  // the query is an earlier key
    REQUIRE(tg[t] == in[2 * pair + 1]);  // and its target is that key's value
    pairs_seen.insert(pair);
    queries.push_back({t, (t - 2 * D) / 2, pair});
  }
  REQUIRE(queries.size() == static_cast<size_t>(D));     // exactly D scored positions
  REQUIRE(pairs_seen.size() == static_cast<size_t>(D));  // every key asked once
  return queries;
}

}  // namespace

TEST_CASE("mqar: layout, ranges and masks over the usual grid", "[data]") {
  for (int64_t T : {64, 128, 256, 512}) {
    for (int64_t D : {4, 8, 16, 64}) {
      if (4 * D > T) continue;
      const MqarConfig c{8192, T, D, 0.01};
      const Mqar task(c);
      const TokenBatch b = task.batch(3, 0, 8);
      REQUIRE((b.B == 8 && b.T == T));
      CHECK(b.num_targets() == 8 * D);
      for (int64_t r = 0; r < b.B; ++r) {
        check_layout(c, b.inputs.data() + r * T, b.targets.data() + r * T);
      }
    }
  }
}

TEST_CASE("mqar: query slots follow the power law (g + 1)^(a - 1)", "[data]") {
  // with one pair, the slot distribution is exactly the normalised power law
  const MqarConfig c{512, 64, 1, 0.01};
  const Mqar task(c);
  const int64_t slots = (64 - 2) / 2, n = 20000;
  std::vector<double> p(slots);
  double total = 0;
  for (int64_t g = 0; g < slots; ++g) total += p[g] = std::pow(g + 1.0, c.power_a - 1.0);
  std::vector<int64_t> count(slots, 0);
  const TokenBatch b = task.batch(11, 0, n);
  for (int64_t r = 0; r < n; ++r) {
    const auto q = check_layout(c, b.inputs.data() + r * 64, b.targets.data() + r * 64);
    ++count[q[0].slot];
  }
  for (int64_t g = 0; g < slots; ++g) {
    INFO("slot " << g);
    // binomial std <= sqrt(0.25 / 20000) = 0.0035; 0.015 is over 4 sigma
    CHECK(std::abs(static_cast<double>(count[g]) / n - p[g] / total) < 0.015);
  }

  // with many pairs (drawn without replacement) early slots are still the most used
  const MqarConfig many{8192, 256, 16, 0.01};
  const Mqar task_many(many);
  const int64_t rows = 500, many_slots = (256 - 32) / 2;
  std::vector<int64_t> per_slot(many_slots, 0);
  const TokenBatch m = task_many.batch(5, 0, rows);
  for (int64_t r = 0; r < rows; ++r) {
    for (const auto& q :
         check_layout(many, m.inputs.data() + r * 256, m.targets.data() + r * 256)) {
      ++per_slot[q.slot];
    }
  }
  int64_t first_quarter = 0, last_quarter = 0;
  for (int64_t g = 0; g < many_slots / 4; ++g) {
    first_quarter += per_slot[g];
    last_quarter += per_slot[many_slots - 1 - g];
  }
  CHECK(first_quarter > 2 * last_quarter);
  CHECK(per_slot[0] > rows * 9 / 10);  // slot 0 has the largest weight: almost always taken
}

TEST_CASE("mqar: deterministic per seed, independent of batch size", "[data]") {
  const Mqar task({8192, 128, 8, 0.01});
  const TokenBatch a = task.batch(42, 0, 6), b = task.batch(42, 0, 6);
  CHECK(a.inputs == b.inputs);
  CHECK(a.targets == b.targets);
  // rows 2..5 of the first batch are examples 2..5, whatever batch they are drawn in
  const TokenBatch c = task.batch(42, 2, 4);
  CHECK(std::vector<int32_t>(a.inputs.begin() + 2 * 128, a.inputs.end()) == c.inputs);
  CHECK(std::vector<int32_t>(a.targets.begin() + 2 * 128, a.targets.end()) == c.targets);
  // another seed or another index gives another example
  CHECK(task.batch(43, 0, 6).inputs != a.inputs);
  std::vector<int32_t> x(128), y(128), tx(128), ty(128);
  task.example(42, 0, x.data(), tx.data());
  task.example(42, 1, y.data(), ty.data());
  CHECK(x != y);
  // a fixed example: the generator is the project's own, so this holds on every platform
  CHECK(x == std::vector<int32_t>(a.inputs.begin(), a.inputs.begin() + 128));
}

TEST_CASE("mqar: invalid configurations are rejected with the rule", "[data]") {
  CHECK_THROWS_WITH(Mqar({8192, 63, 4, 0.01}), Catch::Contains("even seq_len"));
  CHECK_THROWS_WITH(Mqar({8192, 64, 17, 0.01}), Catch::Contains("pairs <= seq_len / 4"));
  CHECK_THROWS_WITH(Mqar({16, 64, 8, 0.01}), Catch::Contains("vocab_size with room"));
  CHECK_THROWS_WITH(Mqar({8192, 64, 4, 0.0}), Catch::Contains("0 < power_a <= 1"));
}
