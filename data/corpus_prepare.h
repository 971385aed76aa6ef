// defines: prepare_corpus, text files -> an HDF5 token dataset (the library side of
// `hla data prepare`; the format is in token_dataset.h).
//
// Documents: every input file is one document; a directory contributes every regular file below
// it (recursively, sorted by path, skipping names that start with '.'). Inputs keep the order
// given. Each document is encoded with encode_ordinary (so the text "<|endoftext|>" inside a file
// stays text) and preceded by the end-of-text token.
//
// Split: the concatenated stream of N tokens is cut at N - round(val_fraction * N). Tokens before
// the cut are train, tokens after are val; if the cut falls inside a document, the val part of
// that document gets its own leading end-of-text token. One rule, deterministic, and it works for
// a single file (the shipped Moby Dick), as nanoGPT's Shakespeare split does.
//
// The output is written to <out>.partial and renamed when complete, so an error or an interrupt
// (should_stop returning true) never leaves a partial file at <out>. The same inputs give the
// same file, byte for byte.
//
//   PrepareOptions opt;
//   opt.inputs = {"data/assets/moby_dick.txt"};
//   opt.out = "moby.h5";
//   PrepareSummary s = prepare_corpus(opt);
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace hla::data {

struct PrepareProgress {
  int64_t files_done = 0, files_total = 0;
  int64_t bytes_done = 0, bytes_total = 0;
  int64_t tokens = 0;  // so far, end-of-text tokens included
};

struct PrepareOptions {
  std::string tokenizer = "gpt2";                           // a name for load_tokenizer
  std::vector<std::string> inputs;                          // files and directories
  std::string out;                                          // the .h5 to write
  double val_fraction = 0.01;                               // in [0, 1)
  std::function<void(const PrepareProgress&)> on_progress;  // called after each file
  std::function<bool()> should_stop;  // polled after each file and before the final rename
};

struct PrepareSummary {
  int64_t documents = 0, bytes = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  int64_t train_documents = 0, val_documents = 0;
};

// The document files named by `inputs`, in order (see above), leaving out `exclude` (the output
// path and its .partial, so that a rerun into an input directory does not read its own output).
// Throws hla::Error for a missing input or when no file is found.
std::vector<std::string> list_documents(const std::vector<std::string>& inputs,
                                        const std::string& exclude = "");

PrepareSummary prepare_corpus(const PrepareOptions& options);

}  // namespace hla::data
