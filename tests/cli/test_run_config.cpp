// Tests: the run config (experiments/run/config.h): defaults and variant defaults, --set
// overrides, the attention layout, errors that name the key, the TOML round trip and
// train.precision (with the trainer's resolve_precision); and the
// checkpoint file (experiments/run/checkpoint.h): round trip (bf16 parameters and moments of pure
// bf16 training exactly, into a bf16 or an f32 model), atomic replacement, clear errors.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "experiments/run/checkpoint.h"
#include "experiments/run/config.h"
#include "experiments/run/trainer.h"
#include "optim/adamw.h"
#include "tests/data/temp_dir.h"
#include "tests/helpers/tiny_config.h"

using namespace hla;
using hla::test::TempDir;
using hla::test::write_text;

namespace {
const std::string kTiny = hla::test::kTinyHybridOnMqar + R"(
[train]
steps = 4
batch_size = 4
seq_len = 16
)";
}  // namespace

TEST_CASE("run config: defaults, variant defaults, overrides and the layout", "[cli][config]") {
  const run::RunConfig c = run::parse_run_config(kTiny, "tiny.toml");
  CHECK(c.model.variant == "gla");
  CHECK(c.model.expand_k == 0.5);  // GLA's fla default
  CHECK(c.model.attention == std::vector<int64_t>{1});
  CHECK(c.model.vocab_size == 0);  // from the data
  CHECK(c.optim.name == "adamw");

  const run::RunConfig r = run::parse_run_config(
      kTiny, "tiny.toml",
      {"model.variant=retnet", "optim.lr=1e-2", "train.steps=7", "model.layout=\"pure\""});
  CHECK(r.model.variant == "retnet");
  CHECK(r.model.expand_v == 2.0);  // RetNet's default, set because it was not given
  CHECK(r.optim.lr == 1e-2);
  CHECK(r.train.steps == 7);
  CHECK(r.model.attention.empty());

  const run::RunConfig custom =
      run::parse_run_config(kTiny + "", "t", {"model.layout=custom", "model.attention_layers=[0]"});
  CHECK(custom.model.attention == std::vector<int64_t>{0});

  const run::RunConfig paper =
      run::parse_run_config("[model]\nlayout = \"3:1\"\n[data]\ntask = \"mqar\"\n", "p");
  CHECK(paper.model.num_layers == 24);
  CHECK(paper.model.attention == std::vector<int64_t>{3, 7, 11, 15, 19, 23});
}

TEST_CASE("run config: to_toml round trips every key", "[cli][config]") {
  const run::RunConfig c =
      run::parse_run_config(kTiny, "tiny.toml", {"optim.min_lr=1e-5", "data.tokenizer=bytes"});
  const std::string text = run::to_toml(c);
  const run::RunConfig back = run::parse_run_config(text, "resolved");
  CHECK(run::to_toml(back) == text);
  CHECK(back.optim.min_lr == 1e-5);
  CHECK(back.data.tokenizer == "bytes");
  CHECK(back.model.attention == c.model.attention);
  // fla's None of clamp_min is -inf, which TOML writes and reads back.
  CHECK_THAT(text, Catch::Contains("clamp_min = -inf") && Catch::Contains("feature_map = \"none\"") &&
                       Catch::Contains("num_kv_heads = 0") && Catch::Contains("use_beta = true") &&
                       Catch::Contains("qk_activation = \"silu\"") &&
                       Catch::Contains("qk_norm = \"l2\"") && Catch::Contains("num_v_heads = 0"));
  CHECK(std::isinf(back.model.clamp_min));
}

TEST_CASE("run config: the fla layer options are [model] keys and round trip", "[cli][config]") {
  const run::RunConfig gla = run::parse_run_config(
      kTiny, "t", {"model.num_kv_heads=1", "model.feature_map=relu", "model.clamp_min=-0.25"});
  CHECK(gla.model.num_kv_heads == 1);
  CHECK(gla.model.feature_map == "relu");
  CHECK(gla.model.clamp_min == -0.25);
  const run::RunConfig delta = run::parse_run_config(
      kTiny, "t", {"model.variant=delta_net", "model.use_beta=false", "model.qk_activation=elu",
                   "model.qk_norm=sum"});
  CHECK_FALSE(delta.model.use_beta);
  CHECK(delta.model.qk_activation == "elu");
  CHECK(delta.model.qk_norm == "sum");
  const run::RunConfig gdn = run::parse_run_config(
      kTiny, "t", {"model.variant=gated_deltanet", "model.head_dim=8", "model.num_v_heads=4"});
  CHECK(gdn.model.num_v_heads == 4);
  for (const run::RunConfig* c : {&gla, &delta, &gdn})
    CHECK(run::to_toml(run::parse_run_config(run::to_toml(*c), "resolved")) == run::to_toml(*c));
  CHECK_THROWS_WITH(run::parse_run_config(kTiny, "t", {"model.feature_map=hedgehog"}),
                    Catch::Contains("model.feature_map") && Catch::Contains("hedgehog"));
  CHECK_THROWS_WITH(run::parse_run_config(kTiny, "t", {"model.num_kv_heads=3"}),
                    Catch::Contains("model.num_kv_heads"));
}

TEST_CASE("run config: errors name the key", "[cli][config]") {
  using Catch::Contains;
  CHECK_THROWS_WITH(run::parse_run_config(kTiny + "[optim]\nlearning_rate = 1.0\n", "tiny.toml"),
                    Contains("optim.learning_rate") && Contains("tiny.toml"));
  CHECK_THROWS_WITH(run::parse_run_config(kTiny, "t", {"model.hiden_size=64"}),
                    Contains("model.hiden_size") && Contains("did you mean 'model.hidden_size'"));
  CHECK_THROWS_WITH(run::parse_run_config(kTiny, "t", {"train.steps=many"}),
                    Contains("train.steps") && Contains("an integer") && Contains("a string"));
  CHECK_THROWS_WITH(run::parse_run_config(kTiny, "t", {"optim.lr=\"fast\""}),
                    Contains("optim.lr") && Contains("a number"));
  CHECK_THROWS_WITH(run::parse_run_config(kTiny, "t", {"model.num_heads=3"}),
                    Contains("num_heads"));
  CHECK_THROWS_WITH(run::parse_run_config(kTiny, "t", {"train.grad_accum=3"}),
                    Contains("train.grad_accum"));
  CHECK_THROWS_WITH(run::parse_run_config(kTiny, "t", {"train.device=tpu"}),
                    Contains("train.device"));
  CHECK_THROWS_WITH(run::parse_run_config(kTiny, "t", {"model.attention_layers=[0]"}),
                    Contains("model.attention_layers") && Contains("custom"));
  CHECK_THROWS_WITH(run::parse_run_config("steps = 3\n", "t"), Contains("'steps'"));
  CHECK_THROWS_WITH(run::parse_run_config("[train\n", "bad.toml"),
                    Contains("bad.toml") && Contains("line 1"));
  CHECK_THROWS_WITH(run::parse_run_config(kTiny, "t", {"data.path=x.h5"}), Contains("data.task"));
  CHECK_THROWS_WITH(run::load_run_config("/nonexistent/config.toml"),
                    Contains("/nonexistent/config.toml"));
}

TEST_CASE("run config: train.precision, fp32 by default, bf16 and pure_bf16 on CUDA only",
          "[cli][config]") {
  using Catch::Contains;
  CHECK(run::parse_run_config(kTiny, "t").train.precision == "fp32");
  for (const std::string p : {"bf16", "pure_bf16"}) {
    INFO(p);
    const run::RunConfig c = run::parse_run_config(kTiny, "t", {"train.precision=" + p});
    CHECK(c.train.precision == p);
    CHECK(run::parse_run_config(run::to_toml(c), "resolved").train.precision == p);
    CHECK_THROWS_WITH(run::resolve_precision(p, Device::CPU),
                      Contains("train.precision") && Contains("\"" + p + "\" on cpu") &&
                          Contains("--device cuda"));
  }
  CHECK_THROWS_WITH(run::parse_run_config(kTiny, "t", {"train.precision=fp16"}),
                    Contains("train.precision") && Contains("fp16") && Contains("pure_bf16"));
  CHECK_THROWS_WITH(run::resolve_precision("fp16", Device::CUDA),
                    Contains("train.precision") && Contains("fp16") && Contains("pure_bf16"));
  const run::Precision fp32 = run::resolve_precision("fp32", Device::CPU);
  CHECK((fp32.compute == DType::f32 && fp32.parameters == DType::f32));
  const run::Precision mixed = run::resolve_precision("bf16", Device::CUDA);
  CHECK((mixed.compute == DType::bf16 && mixed.parameters == DType::f32));
  const run::Precision pure = run::resolve_precision("pure_bf16", Device::CUDA);
  CHECK((pure.compute == DType::bf16 && pure.parameters == DType::bf16));
}

TEST_CASE("checkpoint: weights, optimizer state and train state round trip", "[cli][checkpoint]") {
  TempDir dir("checkpoint_roundtrip");
  run::RunConfig c = run::parse_run_config(kTiny, "tiny.toml");
  c.model.vocab_size = 32;
  Generator gen(1);
  nn::HybridLM model(c.model, gen);
  optim::AdamW opt(optim::optim_params(model.named_parameters()));
  for (auto& [name, p] : model.named_parameters()) p.set_grad(Tensor::ones(p.shape(), p.dtype()));
  opt.step(1e-3);
  run::TrainState state{.step = 5, .tokens_seen = 320, .data_rng = {12345, true, -0.25}};
  const std::string path = run::latest_checkpoint_path(dir.path());
  run::save_checkpoint(path, run::to_toml(c), model, "adamw", opt, state);
  CHECK(std::filesystem::exists(path));
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));

  const run::CheckpointInfo info = run::read_checkpoint_info(run::resolve_checkpoint(dir.path()));
  CHECK(info.config_toml == run::to_toml(c));
  CHECK(info.optimizer == "adamw");
  CHECK(info.optimizer_steps == 1);
  CHECK(info.state.step == 5);
  CHECK(info.state.tokens_seen == 320);
  CHECK(info.state.data_rng.counter == 12345);
  CHECK(info.state.data_rng.has_spare);
  CHECK(info.state.data_rng.spare == -0.25);

  Generator other(2);
  nn::HybridLM copy(c.model, other);
  optim::AdamW copy_opt(optim::optim_params(copy.named_parameters()));
  run::load_model_weights(path, copy);
  run::load_optimizer_state(path, copy_opt);
  const auto a = model.state_dict(), b = copy.state_dict();
  for (const auto& [name, t] : a) CHECK(t.to_vector<float>() == b.at(name).to_vector<float>());
  CHECK(copy_opt.steps() == 1);
  const auto sa = opt.state(), sb = copy_opt.state();
  for (size_t i = 0; i < sa.size(); ++i)
    CHECK(sa[i].second.to_vector<float>() == sb[i].second.to_vector<float>());
}

// A pure_bf16 run's checkpoint: bf16 tensors stored as f32 datasets, read back into bf16 bit for
// bit (a pure_bf16 resume) and into f32 with the same values (an fp32 resume, `hla eval`).
TEST_CASE("checkpoint: bf16 parameters and moments round trip exactly, into bf16 or f32",
          "[cli][checkpoint]") {
  TempDir dir("checkpoint_bf16");
  run::RunConfig c = run::parse_run_config(kTiny, "tiny.toml", {"train.precision=pure_bf16"});
  c.model.vocab_size = 32;
  Generator gen(1), grads(3);
  nn::HybridLM model(c.model, gen);
  model.to(DType::bf16);
  optim::AdamW opt(optim::optim_params(model.named_parameters()));
  for (auto& [name, p] : model.named_parameters())
    p.set_grad(Tensor::randn(p.shape(), grads).to(DType::bf16));
  opt.step(1e-2);
  const std::string path = dir.file("bf16.h5");
  run::save_checkpoint(path, run::to_toml(c), model, "adamw", opt, {});

  const auto bits = [](const Tensor& t) {
    std::vector<uint16_t> out;
    for (const bf16 b : t.to_vector<bf16>()) out.push_back(b.bits);
    return out;
  };
  Generator other(2);
  nn::HybridLM copy(c.model, other);
  copy.to(DType::bf16);
  optim::AdamW copy_opt(optim::optim_params(copy.named_parameters()));
  run::load_model_weights(path, copy);
  run::load_optimizer_state(path, copy_opt);
  const auto a = model.state_dict(), b = copy.state_dict();
  for (const auto& [name, t] : a) {
    INFO(name);
    REQUIRE(b.at(name).dtype() == DType::bf16);
    CHECK(bits(t) == bits(b.at(name)));
  }
  const auto sa = opt.state(), sb = copy_opt.state();
  REQUIRE(sa.size() == sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    INFO(sa[i].first);
    REQUIRE(sb[i].second.dtype() == DType::bf16);
    CHECK(bits(sa[i].second) == bits(sb[i].second));
  }
  CHECK(bits(sa.back().second) != std::vector<uint16_t>(sa.back().second.numel(), 0));

  Generator third(2);
  nn::HybridLM wide(c.model, third);
  optim::AdamW wide_opt(optim::optim_params(wide.named_parameters()));
  run::load_model_weights(path, wide);
  run::load_optimizer_state(path, wide_opt);
  const auto w = wide.state_dict();
  for (const auto& [name, t] : a) {
    INFO(name);
    REQUIRE(w.at(name).dtype() == DType::f32);
    CHECK(t.to_vector<float>() == w.at(name).to_vector<float>());
  }
  const auto sw = wide_opt.state();
  for (size_t i = 0; i < sa.size(); ++i)
    CHECK(sa[i].second.to_vector<float>() == sw[i].second.to_vector<float>());
}

TEST_CASE("checkpoint: missing, corrupted and mismatched files give clear errors",
          "[cli][checkpoint]") {
  using Catch::Contains;
  TempDir dir("checkpoint_errors");
  CHECK_THROWS_WITH(run::resolve_checkpoint(dir.path()),
                    Contains("latest.h5") && Contains(dir.path()));
  CHECK_THROWS_WITH(run::read_checkpoint_info(dir.file("none.h5")),
                    Contains("none.h5") && Contains("does not exist"));
  write_text(dir.file("garbage.h5"), std::string(4096, 'x'));
  CHECK_THROWS_WITH(run::read_checkpoint_info(dir.file("garbage.h5")),
                    Contains("garbage.h5") && Contains("corrupted"));

  run::RunConfig c = run::parse_run_config(kTiny, "tiny.toml");
  c.model.vocab_size = 32;
  Generator gen(1);
  nn::HybridLM model(c.model, gen);
  optim::AdamW opt(optim::optim_params(model.named_parameters()));
  const std::string path = dir.file("ok.h5");
  run::save_checkpoint(path, run::to_toml(c), model, "adamw", opt, {});
  c.model.hidden_size = 64;
  nn::HybridLM bigger(c.model, gen);
  CHECK_THROWS_WITH(run::load_model_weights(path, bigger),
                    Contains("ok.h5") && Contains("model.embeddings.weight"));

  // A crash while writing leaves only <path>.tmp behind: the last good checkpoint still reads.
  write_text(path + ".tmp", "partial");
  CHECK(run::read_checkpoint_info(path).optimizer == "adamw");
}

TEST_CASE("shipped configs: every file parses, the paper layouts have the paper's shape",
          "[cli][config]") {
  namespace fs = std::filesystem;
  int paper = 0, tiny = 0;
  for (const auto& entry :
       fs::recursive_directory_iterator(HLA_SOURCE_DIR "/experiments/configs")) {
    if (entry.path().extension() != ".toml") continue;
    INFO(entry.path().string());
    const run::RunConfig c = run::load_run_config(entry.path().string());
    if (entry.path().parent_path().filename() == "paper_340m") {
      ++paper;
      CHECK(c.model.num_layers == 24);
      CHECK(c.model.hidden_size == 1024);
      const std::string name = entry.path().stem().string();
      if (name.ends_with("_3-1"))
        CHECK(c.model.attention == std::vector<int64_t>{3, 7, 11, 15, 19, 23});
      if (name.ends_with("_24-1")) CHECK(c.model.attention == std::vector<int64_t>{23});
      if (name.ends_with("_pure")) CHECK(c.model.attention.empty());
      if (name == "transformer") CHECK(c.model.attention.size() == 24);
    } else {
      ++tiny;
    }
  }
  CHECK(paper == 6 * 5 + 1);
  CHECK(tiny >= 8);
}

TEST_CASE("run config: the embedded default is a tiny GLA 3:1 hybrid on MQAR", "[cli][config]") {
  const run::RunConfig c = run::parse_run_config(run::default_config_toml(), "<default>");
  CHECK(c.model.variant == "gla");
  CHECK(c.model.attention == std::vector<int64_t>{3});
  CHECK(c.data.task.rfind("mqar", 0) == 0);
}
