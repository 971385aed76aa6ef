// Benchmarks the GPT-2 tokenizer on the shipped Moby Dick (1.2 MB): encode and decode
// throughput on one core, reported as bytes_per_second of text (the floor for encoding
// is 1 MB/s).
// Before timing, the tokenizer must reproduce a golden tiktoken encoding and round-trip the
// corpus, so a fast wrong tokenizer cannot report a number.
#include <benchmark/benchmark.h>

#include "data/assets.h"
#include "data/file_io.h"
#include "data/tokenizer.h"

namespace {

struct Fixture {
  std::unique_ptr<hla::data::Tokenizer> tok = hla::data::load_tokenizer("gpt2");
  std::string text = hla::data::read_file(hla::data::asset_path("moby_dick.txt"), "bench");
  std::vector<int32_t> ids = tok->encode(text);
};

const Fixture& fixture() {
  static const Fixture f;
  return f;
}

// Empty if the tokenizer is right, else what is wrong.
std::string validate(const Fixture& f) {
  // golden: js-tiktoken getEncoding('gpt2') (tests/fixtures/gpt2/golden_ids.jsonl)
  const std::vector<int32_t> golden = {40, 1101, 220, 220, 836, 470};
  if (f.tok->encode("I'm   don't") != golden) return "encode(\"I'm   don't\") != tiktoken's ids";
  if (f.tok->decode(f.ids) != f.text) return "decode(encode(moby_dick)) != moby_dick";
  return "";
}

void BM_Gpt2Encode(benchmark::State& state) {
  const Fixture& f = fixture();
  if (const std::string err = validate(f); !err.empty()) {
    state.SkipWithError(err.c_str());
    return;
  }
  for (auto _ : state) {
    auto ids = f.tok->encode(f.text);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(f.text.size()));
  state.counters["tokens"] = static_cast<double>(f.ids.size());
}

void BM_Gpt2Decode(benchmark::State& state) {
  const Fixture& f = fixture();
  if (const std::string err = validate(f); !err.empty()) {
    state.SkipWithError(err.c_str());
    return;
  }
  for (auto _ : state) {
    auto text = f.tok->decode(f.ids);
    benchmark::DoNotOptimize(text.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(f.text.size()));
}

}  // namespace

BENCHMARK(BM_Gpt2Encode)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Gpt2Decode)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
