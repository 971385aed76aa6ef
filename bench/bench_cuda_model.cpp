// GPU training throughput of the 340M layouts (experiments/configs/paper_340m: 24 layers, hidden
// 1024; vocab 32000 as in perf/ANCHORS.md) at B=8 sequences of T=2048 tokens on one GPU:
//   transformer, gla_pure, hgrn2_pure, gated_deltanet_pure, gla_3-1, hgrn2_3-1, gated_deltanet_3-1,
//   retnet_pure
// Each model is built from its shipped config file (run::load_run_config, with overrides
// model.vocab_size=32000, model.num_layers and train.precision), moved to the GPU, and trained on
// a fixed batch of random tokens with the config's optimizer settings: one step = forward, mean
// cross-entropy, backward, global-norm clipping (optim.grad_clip), AdamW (optim.lr, betas, weight
// decay).
//
// Precision (environment HLA_BENCH_PRECISION: fp32, bf16, pure_bf16, a comma list of them, both
// = fp32,bf16 (the default) or all = fp32,bf16,pure_bf16), as train.precision sets it for `hla
// train` (run::resolve_precision): fp32 computes in the f32 parameters; bf16 is mixed precision
// (HybridLM::set_compute_dtype(bf16): f32 master weights and AdamW state, bf16 activations and
// matmuls on tensor cores, f32 loss); pure_bf16 converts the parameters to bf16 as well
// (Module::to), so gradients and AdamW state are bf16 and no weight is cast. Names:
// model/<precision>/<config>, e.g. model/bf16/gla_pure, model/pure_bf16/gla_pure.
//
// Timing: 3 warm-up steps, then HLA_BENCH_STEPS (8) steps, each bracketed by
// cuda::synchronize() on the host clock (manual time); counters from the median step:
//   ms          milliseconds per step
//   tok/s       B * T / step time
//   peak_GiB    peak bytes in use in the GPU pool (cuda::memory_stats().used_peak_bytes, reset
//               before the model is built: weights, gradients, AdamW state, activations; the
//               analogue of torch.cuda.max_memory_allocated()); reserved_GiB: the pool's peak
//   state_GiB   bytes in use between steps, gradients dropped: parameters and AdamW moments
//   kept_GiB    bytes the forward adds (what it keeps for the backward); forward_peak_GiB and
//               backward_peak_GiB the peak bytes in use during each pass; all from one more
//               step after the timed ones, whose backward also names on stderr the node at
//               whose backward the peak falls (autograd/node.h: set_backward_observer)
//   params_M    parameters (model.num_parameters())
//   TFLOP/s     model FLOPs per step / step time, model FLOPs = 6 N B T + attention, where N
//               excludes the input embedding table (a lookup; an untied lm_head counts) and
//               each softmax-attention layer adds 6 B T^2 d (causal: half of the 12 B T^2 d of
//               PaLM's count, d = hidden size); the linear recurrences' own FLOPs are not counted
//   MFU_%       TFLOP/s over peak_TFLOP/s: HLA_PEAK_TFLOPS, else the H200 SXM datasheet's dense
//               rate of the precision: bf16 tensor cores (989.5) for bf16 and pure_bf16; FP32
//               (67) for fp32, or with HLA_TF32=1 the TF32 tensor-core rate (494.7)
//   loss_first, loss_last   the loss of the first warm-up step and of the last timed step
// Before timing, the first step must give a finite loss within 1 of ln(32000) = 10.37 (the
// uniform prediction of a freshly initialised model) and a finite gradient norm; otherwise, or if
// an op throws (no CUDA kernel yet), the case reports an error instead of a time.
//
// Environment (for a quick smoke run): HLA_BENCH_PRECISION (above), HLA_BENCH_B, HLA_BENCH_T,
// HLA_BENCH_LAYERS (24; the hybrids' attention layers follow the layout, e.g. 3:1 at 4 layers ->
// layer 3), HLA_BENCH_STEPS, HLA_TF32 (0: exact f32 matmul, the library default),
// HLA_PEAK_TFLOPS, HLA_BENCH_CHECKPOINT (1: HybridLM::set_block_checkpointing, the counter
// `checkpointing` says which).
//
//   HLA_BENCH_B=2 HLA_BENCH_T=256 HLA_BENCH_LAYERS=2 build-gpu/bench/bench_cuda_model
//   HLA_BENCH_PRECISION=bf16 build-gpu/bench/bench_cuda_model --benchmark_filter=gla_pure
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "experiments/run/config.h"
#include "experiments/run/trainer.h"
#include "kernels/cuda/memory_stats.h"
#include "kernels/cuda/ops_cuda.h"
#include "nn/model.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "tensor/storage.h"

namespace {

using namespace hla;

constexpr int64_t kVocab = 32000;
constexpr int kWarmupSteps = 3;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
// H200 SXM datasheet dense peaks, TFLOP/s.
constexpr double kPeakFp32 = 67.0;
constexpr double kPeakTf32 = 494.7;
constexpr double kPeakBf16 = 989.5;

int64_t env_int(const char* name, int64_t fallback) {
  const char* s = std::getenv(name);
  return s && *s ? std::atoll(s) : fallback;
}
double env_double(const char* name, double fallback) {
  const char* s = std::getenv(name);
  return s && *s ? std::atof(s) : fallback;
}

// The train.precision values HLA_BENCH_PRECISION asks for: one, a comma list, both (fp32 and
// bf16: the default) or all (fp32, bf16 and pure_bf16).
std::vector<std::string> bench_precisions() {
  const char* s = std::getenv("HLA_BENCH_PRECISION");
  const std::string v = s && *s ? s : "both";
  if (v == "both") return {"fp32", "bf16"};
  if (v == "all") return {"fp32", "bf16", "pure_bf16"};
  std::vector<std::string> out;
  for (size_t begin = 0; begin <= v.size();) {
    const size_t end = std::min(v.find(',', begin), v.size());
    const std::string p = v.substr(begin, end - begin);
    if (p != "fp32" && p != "bf16" && p != "pure_bf16")
      throw Error("HLA_BENCH_PRECISION", "fp32, bf16, pure_bf16, a comma list of them, both or all",
                  "'" + v + "'", "e.g. HLA_BENCH_PRECISION=bf16,pure_bf16");
    out.push_back(p);
    begin = end + 1;
  }
  return out;
}

// Batch, sequence length and layer count of the run.
struct RunShape {
  int64_t B, T, layers;
};

// Model FLOPs of one training step (see the header comment).
double model_flops(const nn::HybridLM& model, const RunShape& s) {
  const nn::ModelConfig& c = model.config();
  const double embedding = c.tie_word_embeddings ? 0.0 : double(c.vocab_size * c.hidden_size);
  const double n = double(model.num_parameters()) - embedding;
  const double tokens = double(s.B * s.T);
  const double attention = double(c.attention.size()) * 6.0 * double(s.B) * double(s.T) *
                           double(s.T) * double(c.hidden_size);
  return 6.0 * n * tokens + attention;
}

// inputs[b, t] and targets[b, t] = inputs[b, t + 1] from B random sequences of T + 1 tokens.
std::pair<Tensor, Tensor> token_batch(int64_t B, int64_t T, uint64_t seed) {
  Generator gen(seed);
  std::vector<int32_t> inputs(size_t(B * T)), targets(size_t(B * T));
  for (int64_t b = 0; b < B; ++b) {
    int32_t prev = int32_t(gen.below(kVocab));
    for (int64_t t = 0; t < T; ++t) {
      const int32_t next = int32_t(gen.below(kVocab));
      inputs[size_t(b * T + t)] = prev;
      targets[size_t(b * T + t)] = next;
      prev = next;
    }
  }
  return {Tensor::from_vector<int32_t>(inputs, {B, T}).to(Device::CUDA),
          Tensor::from_vector<int32_t>(targets, {B, T}).to(Device::CUDA)};
}

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  const size_t n = xs.size();
  return n == 0 ? NAN : n % 2 ? xs[n / 2] : 0.5 * (xs[n / 2 - 1] + xs[n / 2]);
}

void bm_train_step(benchmark::State& state, const std::string& name, const std::string& precision,
                   RunShape s, double peak_tflops) {
  try {
    const run::RunConfig config = run::load_run_config(
        std::string(HLA_SOURCE_DIR) + "/experiments/configs/paper_340m/" + name + ".toml",
        {"model.vocab_size=" + std::to_string(kVocab),
         "model.num_layers=" + std::to_string(s.layers), "train.precision=" + precision});
    const run::Precision dtypes = run::resolve_precision(config.train.precision, Device::CUDA);
    cuda::release_cached_memory();
    cuda::reset_peak_memory_stats();

    Generator gen(0);
    nn::HybridLM model(config.model, gen);
    // pure_bf16: bf16 parameters (hence gradients and AdamW state), converted before the move
    // so that no f32 copy reaches the GPU's peak
    model.to(dtypes.parameters);
    model.to(Device::CUDA);
    model.set_compute_dtype(dtypes.compute);
    model.set_block_checkpointing(env_int("HLA_BENCH_CHECKPOINT", 0) != 0);
    const std::vector<Var> params = model.parameters();
    const run::OptimConfig& o = config.optim;
    optim::AdamW opt(
        optim::optim_params(model.named_parameters()),
        {.beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps, .weight_decay = o.weight_decay});
    const auto [inputs, targets] = token_batch(s.B, s.T, 1);

    // One training step; returns {loss, gradient norm before clipping}.
    const auto step = [&]() -> std::pair<double, double> {
      opt.zero_grad();
      const Var loss = model.loss(inputs, targets);
      loss.backward();
      const double norm = optim::grad_norm(params);
      opt.step(o.lr, o.grad_clip > 0 ? optim::clip_coefficient(norm, o.grad_clip) : 1.0);
      return {loss.item(), norm};
    };

    const auto [loss_first, norm_first] = step();
    if (!(std::isfinite(loss_first) && std::abs(loss_first - std::log(double(kVocab))) < 1.0 &&
          std::isfinite(norm_first))) {
      state.SkipWithError((name + " (" + precision + "): initial loss " +
                           std::to_string(loss_first) +
                           " is not ~ln(32000) = 10.37, or the gradient norm " +
                           std::to_string(norm_first) + " is not finite")
                              .c_str());
      return;
    }
    for (int i = 1; i < kWarmupSteps; ++i) step();
    cuda::synchronize();

    std::vector<double> ms;
    double loss_last = NAN;
    for (auto _ : state) {
      const auto t0 = std::chrono::steady_clock::now();
      loss_last = step().first;
      cuda::synchronize();
      const double sec =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      state.SetIterationTime(sec);
      ms.push_back(sec * 1e3);
    }
    const double step_ms = median(ms);
    const cuda::MemoryStats mem = cuda::memory_stats();
    opt.zero_grad();
    cuda::synchronize();
    const uint64_t state_bytes = cuda::memory_stats().used_bytes;
    cuda::reset_peak_memory_stats();
    {
      const Var loss = model.loss(inputs, targets);
      cuda::synchronize();
      const cuda::MemoryStats forward = cuda::memory_stats();
      state.counters["kept_GiB"] = double(forward.used_bytes - state_bytes) / kGiB;
      state.counters["forward_peak_GiB"] = double(forward.used_peak_bytes) / kGiB;
      // The node whose backward reaches the pass's peak: the pool's watermark after each node,
      // reset for the next.
      struct {
        uint64_t peak = 0, in_use_before = 0;
        std::string node;
      } worst;
      uint64_t in_use = forward.used_bytes;
      cuda::reset_peak_memory_stats();
      const BackwardObserver previous = set_backward_observer([&](const Node& n) {
        const cuda::MemoryStats m = cuda::memory_stats();
        if (m.used_peak_bytes > worst.peak) worst = {m.used_peak_bytes, in_use, n.name()};
        in_use = m.used_bytes;
        cuda::reset_peak_memory_stats();
      });
      loss.backward();
      set_backward_observer(previous);
      cuda::synchronize();
      state.counters["backward_peak_GiB"] = double(worst.peak) / kGiB;
      std::fprintf(stderr, "%s (%s): backward peak %.2f GiB in %s (%.2f GiB in use before it)\n",
                   name.c_str(), precision.c_str(), double(worst.peak) / kGiB, worst.node.c_str(),
                   double(worst.in_use_before) / kGiB);
    }
    state.counters["state_GiB"] = double(state_bytes) / kGiB;
    const double tflops = model_flops(model, s) / (step_ms * 1e-3) / 1e12;
    state.counters["ms"] = step_ms;
    state.counters["tok/s"] = double(s.B * s.T) / (step_ms * 1e-3);
    state.counters["peak_GiB"] = double(mem.used_peak_bytes) / kGiB;
    state.counters["reserved_GiB"] = double(mem.reserved_peak_bytes) / kGiB;
    state.counters["params_M"] = double(model.num_parameters()) / 1e6;
    state.counters["checkpointing"] = model.block_checkpointing() ? 1 : 0;
    state.counters["TFLOP/s"] = tflops;
    state.counters["MFU_%"] = 100.0 * tflops / peak_tflops;
    state.counters["peak_TFLOP/s"] = peak_tflops;
    state.counters["loss_first"] = loss_first;
    state.counters["loss_last"] = loss_last;
  } catch (const std::exception& e) {
    state.SkipWithError((name + " (" + precision + "): " + e.what()).c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (!device_available(Device::CUDA)) {
    std::fprintf(stderr,
                 "bench_cuda_model: no CUDA device visible to this process; nothing to time "
                 "(run it on a GPU machine: bench/run_gpu.sh)\n");
    return 0;
  }
  const RunShape s{env_int("HLA_BENCH_B", 8), env_int("HLA_BENCH_T", 2048),
                   env_int("HLA_BENCH_LAYERS", 24)};
  const bool tf32 = env_int("HLA_TF32", 0) != 0;
  cuda::set_tf32(tf32);
  std::vector<std::string> precisions;
  try {
    precisions = bench_precisions();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_model: %s\n", e.what());
    return 1;
  }
  std::string precision_list;
  for (const std::string& p : precisions) precision_list += (precision_list.empty() ? "" : ",") + p;
  benchmark::AddCustomContext("hla_precision", precision_list);
  benchmark::AddCustomContext("hla_tf32", tf32 ? "1" : "0");
  benchmark::AddCustomContext("hla_shape", "B" + std::to_string(s.B) + "_T" + std::to_string(s.T) +
                                               "_L" + std::to_string(s.layers));
  // names: model/<precision>/<config>, e.g. model/bf16/gla_pure
  for (const std::string& precision : precisions) {
    const double peak = env_double("HLA_PEAK_TFLOPS", precision != "fp32" ? kPeakBf16
                                                      : tf32                ? kPeakTf32
                                                                            : kPeakFp32);
    for (const char* name : {"transformer", "gla_pure", "hgrn2_pure", "gated_deltanet_pure",
                             "gla_3-1", "hgrn2_3-1", "gated_deltanet_3-1", "retnet_pure",
                             "delta_net_pure", "hgrn_pure"})
      benchmark::RegisterBenchmark(("model/" + precision + "/" + name).c_str(), bm_train_step,
                                   std::string(name), precision, s, peak)
          ->Iterations(env_int("HLA_BENCH_STEPS", 8))
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
