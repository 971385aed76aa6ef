// Generator: the project's own seeded random numbers, so that the same seed gives the same
// numbers with every compiler and standard library (std::normal_distribution does not).
//
//   Generator gen(42);
//   double u = gen.uniform();   // [0, 1)
//   double n = gen.normal();    // N(0, 1), Box-Muller
//
// The engine is SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state, one add and a mix per draw.
// The full state is two words (the counter and a cached normal), so it can be checkpointed.
#pragma once

#include <cmath>
#include <cstdint>

namespace hla {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : state_(seed) {}

  uint64_t next_u64() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; bias < 2^-32 for n < 2^32).
  uint64_t below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next_u64()) * n) >> 64);
  }
  // Standard normal by Box-Muller; the second value of each pair is kept for the next call.
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double th = 6.283185307179586476925 * u2;
    spare_ = r * std::sin(th);
    has_spare_ = true;
    return r * std::cos(th);
  }

  // State for checkpoints: {counter, has_spare, spare bits}.
  struct State {
    uint64_t counter;
    bool has_spare;
    double spare;
  };
  State state() const { return {state_, has_spare_, spare_}; }
  void set_state(const State& s) {
    state_ = s.counter;
    has_spare_ = s.has_spare;
    spare_ = s.spare;
  }

 private:
  uint64_t state_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace hla
