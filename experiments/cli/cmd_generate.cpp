// defines: `hla generate`, sampling text from a checkpoint.
//
//   hla generate --checkpoint RUN_DIR_OR_FILE --prompt TEXT [--max-tokens 64]
//                [--temperature 0.8] [--top-k 40] [--seed 0] [--tokenizer bytes|gpt2]
//
// The prompt is encoded with the run's tokenizer (--tokenizer, else data.tokenizer, else the
// one recorded in the HDF5 dataset), run through HybridLM::decode once, then one token at a
// time: linear layers carry their O(1) recurrent state, attention layers a KV cache. Each
// sampled token's bytes are written to stdout as soon as it is drawn; generation stops at
// --max-tokens or end-of-text.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "autograd/grad_mode.h"
#include "data/token_dataset.h"
#include "data/tokenizer.h"
#include "experiments/cli/commands.h"
#include "experiments/run/checkpoint.h"
#include "experiments/run/config.h"
#include "experiments/run/sampling.h"
#include "experiments/run/trainer.h"

namespace hla::cli {

namespace {

struct GenerateArgs {
  std::string checkpoint;
  std::string prompt;
  int64_t max_tokens = 64;
  double temperature = 0.8;
  int64_t top_k = 40;
  int64_t seed = 0;
  std::string tokenizer;
  std::string device = "auto";
};

std::string tokenizer_name(const GenerateArgs& a, const run::RunConfig& c) {
  if (!a.tokenizer.empty()) return a.tokenizer;
  if (!c.data.tokenizer.empty()) return c.data.tokenizer;
  if (!c.data.path.empty() && data::is_hdf5_file(c.data.path))
    return data::Hdf5TokenSplit(c.data.path, c.data.train_split).info().tokenizer;
  throw Error("generate", "a tokenizer for this run",
              std::string("none known (") +
                  (c.data.task.empty() ? "data.path is not an HDF5 dataset"
                                       : "a synthetic-task run has no text") +
                  ")",
              "pass --tokenizer bytes or gpt2 (its vocabulary must fit the model's)");
}

void run_generate(const GenerateArgs& a) {
  if (a.temperature < 0)
    throw Error("generate", "--temperature >= 0", std::to_string(a.temperature));
  if (a.top_k < 0) throw Error("generate", "--top-k >= 0", std::to_string(a.top_k));
  const std::string path = run::resolve_checkpoint(a.checkpoint);
  run::RunConfig config =
      run::parse_run_config(run::read_checkpoint_info(path).config_toml, path + " (config)");
  const Device device = run::resolve_device(a.device);
  const std::unique_ptr<data::Tokenizer> tok = data::load_tokenizer(tokenizer_name(a, config));
  if (config.model.vocab_size < tok->vocab_size())
    throw Error("generate",
                "a tokenizer whose vocabulary fits the model's " +
                    std::to_string(config.model.vocab_size) + " ids",
                tok->name() + " with " + std::to_string(tok->vocab_size()));
  Generator init(0);  // the weights are overwritten by the checkpoint's
  nn::HybridLM model(config.model, init);
  run::load_model_weights(path, model);
  model.to(device);
  model.eval();

  std::vector<int32_t> prompt = tok->encode(a.prompt);
  if (prompt.empty()) prompt.push_back(tok->eot_id());
  std::fwrite(a.prompt.data(), 1, a.prompt.size(), stdout);
  std::fflush(stdout);

  NoGradGuard no_grad;
  Generator gen(static_cast<uint64_t>(a.seed));
  const run::SamplingOptions sampling{.temperature = a.temperature, .top_k = a.top_k};
  const std::unique_ptr<nn::DecodeState> decode_state = model.start_decoding(1);
  nn::DecodeState& state = *decode_state;
  Tensor input = Tensor::from_vector<int32_t>(prompt, {1, static_cast<int64_t>(prompt.size())});
  for (int64_t i = 0; i < a.max_tokens; ++i) {
    const Var logits = model.decode(input.to(device), state);  // [1, T, vocab]
    const int64_t T = logits.size(1), V = logits.size(2);
    const Tensor last = logits.data().select(1, T - 1).to(Device::CPU).to(DType::f32).contiguous();
    // Only ids the tokenizer knows can be sampled (the model's vocabulary may be padded).
    const int32_t id = run::sample_token(last.data<float>(),
                                         std::min<int64_t>(V, tok->vocab_size()), sampling, gen);
    if (id == tok->eot_id()) break;
    const std::string bytes = tok->decode(std::vector<int32_t>{id});
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    std::fflush(stdout);
    input = Tensor::from_vector<int32_t>({id}, {1, 1});
  }
  std::fputc('\n', stdout);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* c =
      app.add_subcommand("generate", "Sample text from a checkpoint (recurrent decoding)");
  c->add_option("--checkpoint", a->checkpoint, "run directory or checkpoint .h5 file")->required();
  c->add_option("--prompt", a->prompt, "text to continue")->required();
  c->add_option("--max-tokens", a->max_tokens, "tokens to sample")->capture_default_str();
  c->add_option("--temperature", a->temperature, "0: greedy")->capture_default_str();
  c->add_option("--top-k", a->top_k, "sample among the k most likely tokens (0: all)")
      ->capture_default_str();
  c->add_option("--seed", a->seed, "sampling seed")->capture_default_str();
  c->add_option("--tokenizer", a->tokenizer, "bytes or gpt2 (default: the run's)");
  c->add_option("--device", a->device, "auto, cpu or cuda")->capture_default_str();
  c->callback([a] { run_generate(*a); });
}

}  // namespace hla::cli
