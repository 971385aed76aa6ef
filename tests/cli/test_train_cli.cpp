// Tests: `hla train`, `hla eval` and `hla generate` end to end through the built binary on a
// tiny config: the run directory (config.toml, metrics.jsonl, checkpoints/latest.h5), resume
// that reproduces an uninterrupted run bit for bit, a NaN loss that stops the run and keeps the
// last good checkpoint, bad input that fails with a message naming the key or file, and
// train.precision = "bf16" and "pure_bf16" (CUDA only).
#include <sys/wait.h>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include "data/hdf5.h"
#include "experiments/cli/tensor_h5.h"
#include "tensor/storage.h"
#include "tests/data/temp_dir.h"
#include "tests/helpers/tiny_config.h"
#include "tests/helpers/require_gpu.h"
#include "tests/helpers/run_hla.h"

using hla::test::TempDir;
using hla::test::read_text;
using hla::test::run_hla;
using Result = hla::test::CliResult;
using hla::test::write_text;

namespace {

// The "loss" field of every metrics record, as written (exact digits).
std::vector<std::string> losses(const std::string& metrics_path) {
  std::vector<std::string> out;
  const std::string text = read_text(metrics_path);
  const std::regex loss("\"loss\": ([^,}]+)");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), loss); it != std::sregex_iterator();
       ++it)
    out.push_back((*it)[1]);
  return out;
}

const std::string kTiny = hla::test::kTinyHybridOnMqar + R"(
[optim]
lr = 1e-2
warmup_steps = 2
[train]
steps = 6
batch_size = 4
grad_accum = 2
seq_len = 16
log_interval = 1
eval_interval = 3
eval_batches = 2
)";

}  // namespace

TEST_CASE("cli train: the run directory holds the config, metrics and a checkpoint",
          "[cli][train]") {
  TempDir dir("cli_train");
  write_text(dir.file("tiny.toml"), kTiny);
  const std::string run = dir.file("run");
  const Result r = run_hla("train --config " + dir.file("tiny.toml") + " --out " + run);
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("step 6/6") && Catch::Contains("done: step 6/6"));
  CHECK_THAT(read_text(run + "/config.toml"),
             Catch::Contains("vocab_size = 32") && Catch::Contains("attention_layers = [1]"));
  const std::string metrics = read_text(run + "/metrics.jsonl");
  CHECK(losses(run + "/metrics.jsonl").size() == 6);
  for (const char* key : {"\"step\": 1,", "\"lr\":", "\"tokens_per_s\":", "\"grad_norm\":",
                          "\"val_loss\":", "\"val_accuracy\":"})
    CHECK_THAT(metrics, Catch::Contains(key));
  CHECK(std::filesystem::exists(run + "/checkpoints/latest.h5"));
  CHECK_FALSE(std::filesystem::exists(run + "/checkpoints/latest.h5.tmp"));

  const Result e = run_hla("eval --checkpoint " + run);
  INFO(e.output);
  CHECK(e.code == 0);
  CHECK_THAT(e.output, Catch::Contains("(step 6)") && Catch::Contains("val_loss ") &&
                           Catch::Contains("val_ppl ") && Catch::Contains("val_accuracy "));

  // --dump-logits: the first validation batch's tokens and logits, readable as plain arrays.
  const std::string dump = dir.file("logits.h5");
  const Result d = run_hla("eval --checkpoint " + run + " --dump-logits " + dump);
  INFO(d.output);
  REQUIRE(d.code == 0);
  hla::data::h5::Handle f(H5_CHECK(H5Fopen(dump.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Fclose);
  const hla::Tensor logits = hla::cli::read_tensor(f.get(), "logits", hla::DType::f64, dump);
  const hla::Tensor tokens = hla::cli::read_tensor(f.get(), "tokens", hla::DType::f64, dump);
  REQUIRE(tokens.dim() == 2);
  CHECK(logits.shape() == hla::Shape{tokens.size(0), tokens.size(1), 32});
  for (double x : logits.to_vector<double>()) REQUIRE(std::isfinite(x));
  for (double t : tokens.to_vector<double>()) CHECK((t >= 0 && t < 32));
}

TEST_CASE("cli train: the loss falls on a tiny MQAR run", "[cli][train]") {
  TempDir dir("cli_train_mqar");
  write_text(dir.file("tiny.toml"), kTiny);
  const std::string run = dir.file("run");
  const Result r = run_hla("train --config " + dir.file("tiny.toml") + " --out " + run +
                           " --steps 80 --set train.eval_interval=80 --set optim.lr=3e-3 "
                           "--set train.grad_accum=1 --set train.batch_size=16");
  INFO(r.output);
  REQUIRE(r.code == 0);
  const std::vector<std::string> l = losses(run + "/metrics.jsonl");
  REQUIRE(l.size() == 80);
  double first = 0, last = 0;
  for (int i = 0; i < 10; ++i) {
    first += std::stod(l[i]) / 10;
    last += std::stod(l[l.size() - 1 - i]) / 10;
  }
  INFO("mean loss of the first 10 steps " << first << ", of the last 10 " << last);
  CHECK(last < 0.8 * first);
}

TEST_CASE("cli train --resume: N/2 + N/2 steps equal N steps exactly", "[cli][train]") {
  TempDir dir("cli_resume");
  write_text(dir.file("tiny.toml"), kTiny);
  const std::string straight = dir.file("straight"), split = dir.file("split");
  REQUIRE(run_hla("train --config " + dir.file("tiny.toml") + " --out " + straight).code == 0);
  const Result first =
      run_hla("train --config " + dir.file("tiny.toml") + " --out " + split + " --stop-after 3");
  INFO(first.output);
  REQUIRE(first.code == 0);
  CHECK(losses(split + "/metrics.jsonl").size() == 3);
  const Result second = run_hla("train --out " + split + " --resume");
  INFO(second.output);
  REQUIRE(second.code == 0);
  CHECK_THAT(second.output, Catch::Contains("resumed at step 3"));
  const std::vector<std::string> a = losses(straight + "/metrics.jsonl"),
                                 b = losses(split + "/metrics.jsonl");
  REQUIRE(a.size() == 6);
  CHECK(a == b);
}

// On a machine with a GPU: the same run on both devices (f32; the GPU sums in other orders, so
// the losses agree to relative 2e-4, see tests/cuda/test_train_gpu.cpp), a GPU checkpoint that
// `hla eval` reads on either device, and a GPU run resumed on the CPU.
TEST_CASE("cli train --device cuda matches --device cpu; checkpoints cross devices",
          "[cli][train][cuda]") {
  HLA_REQUIRE_GPU();
  TempDir dir("cli_train_cuda");
  write_text(dir.file("tiny.toml"), kTiny);
  const std::string base = "train --config " + dir.file("tiny.toml") + " --out ";
  const std::string cpu = dir.file("cpu"), gpu = dir.file("gpu"), mixed = dir.file("mixed");
  REQUIRE(run_hla(base + cpu + " --device cpu").code == 0);
  const Result g = run_hla(base + gpu + " --device cuda");
  INFO(g.output);
  REQUIRE(g.code == 0);
  const std::vector<std::string> a = losses(cpu + "/metrics.jsonl"), b = losses(gpu + "/metrics.jsonl");
  REQUIRE(a.size() == 6);
  REQUIRE(b.size() == 6);
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("step " << i + 1 << ": cpu " << a[i] << ", cuda " << b[i]);
    CHECK(std::abs(std::stod(a[i]) - std::stod(b[i])) <= 2e-4 * std::abs(std::stod(a[i])));
  }
  const std::regex val_loss("val_loss ([0-9.]+)");
  std::smatch m_cpu, m_gpu;
  const Result e_cpu = run_hla("eval --checkpoint " + gpu + " --device cpu");
  const Result e_gpu = run_hla("eval --checkpoint " + gpu + " --device cuda");
  INFO(e_cpu.output << e_gpu.output);
  REQUIRE((e_cpu.code == 0 && e_gpu.code == 0));
  REQUIRE(std::regex_search(e_cpu.output, m_cpu, val_loss));
  REQUIRE(std::regex_search(e_gpu.output, m_gpu, val_loss));
  CHECK(std::abs(std::stod(m_cpu[1]) - std::stod(m_gpu[1])) <= 2e-4 * std::stod(m_cpu[1]));
  REQUIRE(run_hla(base + mixed + " --device cuda --stop-after 3").code == 0);
  const Result resumed = run_hla("train --out " + mixed + " --resume --device cpu");
  INFO(resumed.output);
  REQUIRE(resumed.code == 0);
  CHECK(losses(mixed + "/metrics.jsonl").size() == 6);
}

TEST_CASE("cli train --set train.precision=bf16|pure_bf16 fails on the CPU naming the key",
          "[cli][train]") {
  TempDir dir("cli_bf16_cpu");
  write_text(dir.file("tiny.toml"), kTiny);
  for (const std::string precision : {"bf16", "pure_bf16"}) {
    const Result r =
        run_hla("train --config " + dir.file("tiny.toml") + " --out " + dir.file(precision) +
                " --device cpu --set train.precision=" + precision);
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find("train.precision") != std::string::npos);
    CHECK(r.output.find("\"" + precision + "\" on cpu") != std::string::npos);
    CHECK(r.output.find("cuda") != std::string::npos);
  }
}

// bf16 activations over f32 master weights follow the fp32 run: relative 2e-2 per step (the
// bound of tests/cuda/test_mixed_precision.cpp); its checkpoint evaluates on the CPU in f32.
TEST_CASE("cli train --set train.precision=bf16 on cuda follows fp32", "[cli][train][cuda]") {
  HLA_REQUIRE_GPU();
  TempDir dir("cli_bf16_cuda");
  write_text(dir.file("tiny.toml"), kTiny);
  const std::string base = "train --config " + dir.file("tiny.toml") + " --device cuda --out ";
  const std::string fp32 = dir.file("fp32"), bf16 = dir.file("bf16");
  REQUIRE(run_hla(base + fp32).code == 0);
  const Result r = run_hla(base + bf16 + " --set train.precision=bf16");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(r.output.find("bf16 mixed precision") != std::string::npos);
  const std::vector<std::string> a = losses(fp32 + "/metrics.jsonl");
  const std::vector<std::string> b = losses(bf16 + "/metrics.jsonl");
  REQUIRE(a.size() == 6);
  REQUIRE(b.size() == 6);
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("step " << i + 1 << ": fp32 " << a[i] << ", bf16 " << b[i]);
    CHECK(std::abs(std::stod(a[i]) - std::stod(b[i])) <= 2e-2 * std::abs(std::stod(a[i])));
  }
  const Result e = run_hla("eval --checkpoint " + bf16 + " --device cpu");
  INFO(e.output);
  CHECK(e.code == 0);
}

// bf16 parameters and AdamW state: the first loss is fp32's within the bound of
// tests/cuda/test_mixed_precision.cpp (relative 5e-3: the parameters' and activations' bf16
// rounding); a run stopped after 3 steps and resumed from its checkpoint (bf16 tensors stored as
// f32, loaded back exactly) repeats the uninterrupted run's losses digit for digit, as the GPU's
// kernels are deterministic (docs/cuda.md); the checkpoint evaluates on the CPU in f32.
TEST_CASE("cli train --set train.precision=pure_bf16 on cuda: resume, eval on the CPU",
          "[cli][train][cuda]") {
  HLA_REQUIRE_GPU();
  TempDir dir("cli_pure_bf16_cuda");
  write_text(dir.file("tiny.toml"), kTiny);
  const std::string base = "train --config " + dir.file("tiny.toml") + " --device cuda --out ";
  const std::string fp32 = dir.file("fp32"), pure = dir.file("pure"), split = dir.file("split");
  const std::string pure_bf16 = " --set train.precision=pure_bf16";
  REQUIRE(run_hla(base + fp32).code == 0);
  const Result r = run_hla(base + pure + pure_bf16);
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(r.output.find("pure bf16") != std::string::npos);
  const std::vector<std::string> a = losses(fp32 + "/metrics.jsonl");
  const std::vector<std::string> b = losses(pure + "/metrics.jsonl");
  REQUIRE(a.size() == 6);
  REQUIRE(b.size() == 6);
  INFO("step 1: fp32 " << a[0] << ", pure bf16 " << b[0]);
  CHECK(std::abs(std::stod(a[0]) - std::stod(b[0])) <= 5e-3 * std::abs(std::stod(a[0])));

  REQUIRE(run_hla(base + split + pure_bf16 + " --stop-after 3").code == 0);
  const Result resumed = run_hla("train --out " + split + " --resume");
  INFO(resumed.output);
  REQUIRE(resumed.code == 0);
  CHECK_THAT(resumed.output, Catch::Contains("resumed at step 3") && Catch::Contains("pure bf16"));
  CHECK(losses(split + "/metrics.jsonl") == b);

  const Result e = run_hla("eval --checkpoint " + pure + " --device cpu");
  INFO(e.output);
  CHECK(e.code == 0);
}

TEST_CASE("cli train --resume: SGD with momentum resumes exactly too", "[cli][train]") {
  TempDir dir("cli_resume_sgd");
  write_text(dir.file("tiny.toml"), kTiny);
  const std::string base =
      "train --config " + dir.file("tiny.toml") + " --set optim.name=sgd --steps 4";
  REQUIRE(run_hla(base + " --out " + dir.file("straight")).code == 0);
  REQUIRE(run_hla(base + " --out " + dir.file("split") + " --stop-after 2").code == 0);
  const Result r = run_hla("train --out " + dir.file("split") + " --resume");
  INFO(r.output);
  REQUIRE(r.code == 0);
  const std::vector<std::string> a = losses(dir.file("straight/metrics.jsonl"));
  REQUIRE(a.size() == 4);
  CHECK(a == losses(dir.file("split/metrics.jsonl")));
}

TEST_CASE("cli train: activation checkpointing gives the same losses", "[cli][train]") {
  TempDir dir("cli_activation_checkpointing");
  write_text(dir.file("tiny.toml"), kTiny);
  const std::string base = "train --config " + dir.file("tiny.toml") + " --steps 3";
  REQUIRE(run_hla(base + " --out " + dir.file("plain")).code == 0);
  const Result r =
      run_hla(base + " --out " + dir.file("kept") + " --set train.activation_checkpointing=true");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(r.output.find("activation checkpointing") != std::string::npos);
  const std::vector<std::string> a = losses(dir.file("plain/metrics.jsonl"));
  REQUIRE(a.size() == 3);
  CHECK(a == losses(dir.file("kept/metrics.jsonl")));
  CHECK(read_text(dir.file("kept/config.toml")).find("activation_checkpointing = true") !=
        std::string::npos);
}

TEST_CASE("cli train: a NaN loss stops the run with its step, keeping the last checkpoint",
          "[cli][train]") {
  TempDir dir("cli_nan");
  write_text(dir.file("tiny.toml"), kTiny);
  const std::string run = dir.file("run");
  const Result r = run_hla("train --config " + dir.file("tiny.toml") + " --out " + run +
                           " --set optim.lr=1e30 --set optim.grad_clip=0 --set optim.warmup_steps=0"
                           " --set train.checkpoint_interval=1");
  INFO(r.output);
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("a finite") && Catch::Contains("at step") &&
                           Catch::Contains("latest.h5"));
  CHECK(std::filesystem::exists(run + "/checkpoints/latest.h5"));
  CHECK(run_hla("eval --checkpoint " + run).code == 0);
}

TEST_CASE("cli train: bad configs and devices fail before training, naming the key",
          "[cli][train]") {
  TempDir dir("cli_bad");
  write_text(dir.file("tiny.toml"), kTiny);
  const std::string base = "train --config " + dir.file("tiny.toml") + " --out " + dir.file("run");
  Result r = run_hla(base + " --set model.hidden_sise=64");
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("model.hidden_sise"));
  r = run_hla(base + " --set train.batch_size=big");
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("train.batch_size"));
  r = run_hla(base + " --set model.hidden_size=33");
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("hidden"));
  CHECK_FALSE(std::filesystem::exists(dir.file("run/checkpoints")));
  if (!hla::device_available(hla::Device::CUDA)) {  // a CPU-only machine, whatever the build
    r = run_hla(base + " --device cuda");
    CHECK(r.code == 1);
    CHECK_THAT(r.output, Catch::Contains("CUDA backend") && Catch::Contains("hint"));
    CHECK_FALSE(std::filesystem::exists(dir.file("run/checkpoints")));
  }
  r = run_hla(base + " --device tpu");
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("auto, cpu or cuda"));
  r = run_hla("eval --checkpoint " + dir.file("missing"));
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("missing"));
  std::filesystem::create_directories(dir.file("broken/checkpoints"));
  write_text(dir.file("broken/checkpoints/latest.h5"), "not an hdf5 file");
  r = run_hla("eval --checkpoint " + dir.file("broken"));
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("latest.h5") && Catch::Contains("corrupted"));
  r = run_hla("train --out " + dir.file("nothing") + " --resume");
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("latest.h5"));
}

TEST_CASE("cli generate: a byte-level model trained on a token dataset samples text",
          "[cli][train]") {
  TempDir dir("cli_generate");
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the cat sat on the mat. ";
  write_text(dir.file("corpus.txt"), text);
  REQUIRE(run_hla("data prepare --tokenizer bytes --in " + dir.file("corpus.txt") + " --out " +
                  dir.file("corpus.h5") + " --val-fraction 0.1")
              .code == 0);
  write_text(dir.file("bytes.toml"), R"(
[model]
variant = "gla"
layout = "1:1"
hidden_size = 32
num_layers = 2
num_heads = 2
attn_num_heads = 2
attn_num_kv_heads = 2
[data]
path = ")" + dir.file("corpus.h5") + R"("
[train]
steps = 4
batch_size = 2
seq_len = 32
eval_interval = 2
eval_batches = 2
)");
  const std::string run = dir.file("run");
  Result r = run_hla("train --config " + dir.file("bytes.toml") + " --out " + run);
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(read_text(run + "/metrics.jsonl"), Catch::Contains("\"val_loss\""));
  r = run_hla("generate --checkpoint " + run +
              " --prompt 'the cat' --max-tokens 8 --temperature 0");
  INFO(r.output);
  CHECK(r.code == 0);
  CHECK(r.output.rfind("the cat", 0) == 0);
  CHECK(r.output.size() >= std::string("the cat\n").size());
  r = run_hla("eval --checkpoint " + run);
  CHECK(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("val_ppl"));
}
