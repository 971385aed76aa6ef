// defines: `hla data`, the command line over hla::data (docs/data.md has the full reference).
//
//   hla data tokenize --tokenizer gpt2|bytes --in FILE [--decode]
//       ids of FILE's exact bytes, space-separated, on stdout ("-" reads stdin); --decode reads
//       whitespace-separated ids and writes the bytes they stand for
//   hla data prepare --tokenizer gpt2 --in FILES_OR_DIRS... --out corpus.h5 [--val-fraction 0.01]
//       text files -> HDF5 token dataset (format in data/token_dataset.h); Ctrl-C leaves no file
//   hla data info FILE [--format auto|hdf5|llmc|nanogpt] [--vocab-size N] [--preview N]
//       summary of a token file, after checking every id against the vocabulary
//   hla data export-bin --in corpus.h5 [--split train] --out train.bin
//       one split of a dataset as an llm.c shard
//   hla data task SPEC [--seed S] [--index I] [--rows N]
//       prints examples of a synthetic task, e.g. "mqar:seq_len=64,pairs=4"
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>

#include "data/corpus_prepare.h"
#include "data/file_io.h"
#include "data/llmc_shards.h"
#include "data/synthetic_task.h"
#include "data/token_dataset.h"
#include "data/tokenizer.h"
#include "experiments/cli/commands.h"
#include "tensor/error.h"

namespace hla::cli {

namespace {

// ---- helpers

// Set by SIGINT/SIGTERM while `data prepare` runs; prepare_corpus polls it between files.
volatile std::sig_atomic_t g_interrupted = 0;

void on_interrupt(int) {
  g_interrupted = 1;
}

// Installs on_interrupt for the lifetime of the object and restores the previous handlers.
class InterruptScope {
 public:
  InterruptScope() {
    g_interrupted = 0;
    old_int_ = std::signal(SIGINT, on_interrupt);
    old_term_ = std::signal(SIGTERM, on_interrupt);
  }
  ~InterruptScope() {
    std::signal(SIGINT, old_int_);
    std::signal(SIGTERM, old_term_);
  }

 private:
  void (*old_int_)(int);
  void (*old_term_)(int);
};

std::string read_input(const std::string& path) {
  if (path != "-") return data::read_file(path, "data tokenize");
  std::ostringstream os;
  os << std::cin.rdbuf();
  return std::move(os).str();
}

void write_stdout(const std::string& bytes) {
  if (std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size()) {
    throw Error("data", "to write to stdout", "a write error");
  }
}

// "1,234,567"
std::string with_commas(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// ---- tokenize

struct TokenizeArgs {
  std::string tokenizer = "gpt2", in;
  bool decode = false;
};

void run_tokenize(const TokenizeArgs& a) {
  const auto tok = data::load_tokenizer(a.tokenizer);
  const std::string input = read_input(a.in);
  if (!a.decode) {
    std::string out;
    for (int32_t id : tok->encode(input)) {
      if (!out.empty()) out += ' ';
      out += std::to_string(id);
    }
    write_stdout(out + "\n");
    return;
  }
  std::vector<int32_t> ids;
  std::istringstream words(input);
  std::string word;
  while (words >> word) {
    size_t used = 0;
    long long id = -1;
    try {
      id = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || id < INT32_MIN || id > INT32_MAX) {
      throw Error("data tokenize --decode " + a.in, "whitespace-separated integer ids",
                  "'" + word + "' after " + std::to_string(ids.size()) + " ids");
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  write_stdout(tok->decode(ids));
}

// ---- prepare

struct PrepareArgs {
  std::string tokenizer = "gpt2", out;
  std::vector<std::string> in;
  double val_fraction = 0.01;
};

void run_prepare(const PrepareArgs& a) {
  data::PrepareOptions opt;
  opt.tokenizer = a.tokenizer;
  opt.inputs = a.in;
  opt.out = a.out;
  opt.val_fraction = a.val_fraction;
  const bool tty = ::isatty(STDERR_FILENO);
  const auto t0 = std::chrono::steady_clock::now();
  opt.on_progress = [&](const data::PrepareProgress& p) {
    if (!tty) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "\rprepare: %lld/%lld files, %.1f/%.1f MB (%.0f%%), %s tokens, %.1f MB/s ",
                 static_cast<long long>(p.files_done), static_cast<long long>(p.files_total),
                 p.bytes_done / 1e6, p.bytes_total / 1e6,
                 p.bytes_total ? 100.0 * p.bytes_done / p.bytes_total : 100.0,
                 with_commas(p.tokens).c_str(), s > 0 ? p.bytes_done / 1e6 / s : 0.0);
    std::fflush(stderr);
  };
  opt.should_stop = [] { return g_interrupted != 0; };
  data::PrepareSummary s;
  {
    InterruptScope interrupts;
    try {
      s = data::prepare_corpus(opt);
    } catch (...) {
      if (tty) std::fputs("\n", stderr);
      throw;
    }
  }
  if (tty) std::fputs("\n", stderr);
  std::printf(
      "wrote %s: %s documents (%.2f MB, tokenizer %s); train %s tokens in %s documents, "
      "val %s tokens in %s documents\n",
      a.out.c_str(), with_commas(s.documents).c_str(), s.bytes / 1e6, a.tokenizer.c_str(),
      with_commas(s.train_tokens).c_str(), with_commas(s.train_documents).c_str(),
      with_commas(s.val_tokens).c_str(), with_commas(s.val_documents).c_str());
}

// ---- info

struct InfoArgs {
  std::string path, format = "auto";
  int64_t vocab_size = 50257;
  int64_t preview = 0;
};

// Reads every id of `src` (which checks each against the vocabulary); returns the first `keep`.
std::vector<int32_t> scan(const data::TokenSource& src, int64_t keep) {
  std::vector<int32_t> first, block;
  const int64_t step = 1 << 20;
  for (int64_t at = 0; at < src.size(); at += step) {
    const int64_t n = std::min(step, src.size() - at);
    block.resize(n);
    src.read(at, n, block.data());
    for (int64_t i = 0; i < n && static_cast<int64_t>(first.size()) < keep; ++i) {
      first.push_back(block[i]);
    }
  }
  return first;
}

void run_info(const InfoArgs& a) {
  const auto format = data::parse_token_file_format(a.format);
  const auto source = data::open_token_source(a.path, "train", format, a.vocab_size);
  if (const auto* h5 = dynamic_cast<const data::Hdf5TokenSplit*>(source.get())) {
    const auto& info = h5->info();
    std::printf("%s: hla token dataset, tokenizer %s, vocab_size %lld, eot_id %lld\n",
                a.path.c_str(), info.tokenizer.c_str(), static_cast<long long>(info.vocab_size),
                static_cast<long long>(info.eot_id));
    for (const char* split : {"train", "val"}) {
      const data::Hdf5TokenSplit src(a.path, split);
      const auto head = scan(src, a.preview);
      std::printf("  %-5s %s tokens, %s documents, every id < vocab_size\n", split,
                  with_commas(src.size()).c_str(),
                  with_commas(static_cast<int64_t>(src.doc_offsets().size()) - 1).c_str());
      if (a.preview > 0) {
        std::printf("        begins: %s\n",
                    data::load_tokenizer(info.tokenizer)->decode(head).c_str());
      }
    }
    return;
  }
  const auto* shard = dynamic_cast<const data::LlmcShard*>(source.get());
  const auto head = scan(*source, a.preview);
  std::printf("%s: %s, %s tokens, every id < %lld\n", a.path.c_str(),
              shard ? ("llm.c shard version " + std::to_string(shard->version())).c_str()
                    : "headerless nanoGPT uint16 file",
              with_commas(source->size()).c_str(), static_cast<long long>(a.vocab_size));
  if (a.preview > 0) {
    std::string ids;
    for (int32_t id : head) ids += std::to_string(id) + " ";
    std::printf("  begins: %s\n", ids.c_str());
  }
}

// ---- export-bin

struct ExportArgs {
  std::string in, split = "train", out;
};

void run_export(const ExportArgs& a) {
  const data::Hdf5TokenSplit src(a.in, a.split);
  std::vector<int32_t> tokens(src.size());
  src.read(0, src.size(), tokens.data());
  data::write_llmc_shard(a.out, tokens, src.vocab_size());
  std::printf("wrote %s: llm.c shard, %s tokens of %s\n", a.out.c_str(),
              with_commas(src.size()).c_str(), src.describe().c_str());
}

// ---- task

struct TaskArgs {
  std::string spec;
  uint64_t seed = 0, index = 0;
  int64_t rows = 2;
};

void run_task(const TaskArgs& a) {
  const auto task = data::make_synthetic_task(a.spec);
  const data::TokenBatch b = task->batch(a.seed, a.index, a.rows);
  std::printf("%s (vocab %lld, seed %llu); '.' = no target\n", task->describe().c_str(),
              static_cast<long long>(task->vocab_size()), static_cast<unsigned long long>(a.seed));
  for (int64_t r = 0; r < b.B; ++r) {
    std::string in, tg;
    for (int64_t t = 0; t < b.T; ++t) {
      const int32_t x = b.inputs[r * b.T + t], y = b.targets[r * b.T + t];
      const std::string xs = std::to_string(x);
      const std::string ys = y == data::kIgnoreIndex ? "." : std::to_string(y);
      const size_t w = std::max(xs.size(), ys.size()) + 1;
      in += std::string(w - xs.size(), ' ') + xs;
      tg += std::string(w - ys.size(), ' ') + ys;
    }
    std::printf("example %llu\n  input: %s\n  target:%s\n",
                static_cast<unsigned long long>(a.index + r), in.c_str(), tg.c_str());
  }
}

}  // namespace

void add_data_command(CLI::App& app) {
  CLI::App* data = app.add_subcommand("data", "Tokenizers, token datasets, synthetic tasks");
  data->require_subcommand(1);

  auto tok = std::make_shared<TokenizeArgs>();
  CLI::App* c = data->add_subcommand("tokenize", "Print the token ids of a file (or decode ids)");
  c->add_option("--tokenizer", tok->tokenizer, "gpt2 or bytes")->capture_default_str();
  c->add_option("--in", tok->in, "input file ('-' for stdin)")->required();
  c->add_flag("--decode", tok->decode, "read ids, write the text they stand for");
  c->callback([tok] { run_tokenize(*tok); });

  auto prep = std::make_shared<PrepareArgs>();
  c = data->add_subcommand("prepare", "Tokenize text files into an HDF5 token dataset");
  c->add_option("--tokenizer", prep->tokenizer, "gpt2 or bytes")->capture_default_str();
  c->add_option("--in", prep->in, "text files and directories (each file is a document)")
      ->required();
  c->add_option("--out", prep->out, "the .h5 file to write")->required();
  c->add_option("--val-fraction", prep->val_fraction, "share of tokens held out for val")
      ->capture_default_str();
  c->callback([prep] { run_prepare(*prep); });

  auto info = std::make_shared<InfoArgs>();
  c = data->add_subcommand("info", "Summarise and check a token file (.h5, llm.c or nanoGPT .bin)");
  c->add_option("file", info->path, "the token file")->required();
  c->add_option("--format", info->format, "auto, hdf5, llmc or nanogpt")->capture_default_str();
  c->add_option("--vocab-size", info->vocab_size, "vocabulary of a .bin file")
      ->capture_default_str();
  c->add_option("--preview", info->preview, "show the first N tokens");
  c->callback([info] { run_info(*info); });

  auto exp = std::make_shared<ExportArgs>();
  c = data->add_subcommand("export-bin", "Write one split of a dataset as an llm.c shard");
  c->add_option("--in", exp->in, "the .h5 dataset")->required();
  c->add_option("--split", exp->split, "train or val")->capture_default_str();
  c->add_option("--out", exp->out, "the .bin shard to write")->required();
  c->callback([exp] { run_export(*exp); });

  auto task = std::make_shared<TaskArgs>();
  c = data->add_subcommand("task",
                           "Print examples of a synthetic task (mqar, selective_copy, "
                           "noisy_recall)");
  c->add_option("spec", task->spec, "e.g. mqar:seq_len=64,pairs=4")->required();
  c->add_option("--seed", task->seed, "stream seed")->capture_default_str();
  c->add_option("--index", task->index, "first example")->capture_default_str();
  c->add_option("--rows", task->rows, "number of examples")->capture_default_str();
  c->callback([task] { run_task(*task); });
}

}  // namespace hla::cli
