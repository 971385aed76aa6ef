// defines: list_documents, prepare_corpus (see corpus_prepare.h).
#include "data/corpus_prepare.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "data/file_io.h"
#include "data/pending_file.h"
#include "data/token_dataset.h"
#include "data/tokenizer.h"
#include "tensor/error.h"

namespace fs = std::filesystem;

namespace hla::data {

namespace {

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

bool same_file(const fs::path& a, const fs::path& b) {
  return fs::weakly_canonical(a) == fs::weakly_canonical(b);
}

void check_stop(const PrepareOptions& opt) {
  if (opt.should_stop && opt.should_stop()) {
    throw Error("data prepare", "to run to completion", "an interrupt",
                "nothing was written to " + opt.out);
  }
}

}  // namespace

std::vector<std::string> list_documents(const std::vector<std::string>& inputs,
                                        const std::string& exclude) {
  std::vector<std::string> files;
  const auto keep = [&](const fs::path& p) {
    return exclude.empty() || (!same_file(p, exclude) && !same_file(p, exclude + ".partial"));
  };
  for (const std::string& input : inputs) {
    if (fs::is_regular_file(input)) {
      if (keep(input)) files.push_back(input);
    } else if (fs::is_directory(input)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(input); it != fs::end(it); ++it) {
        if (hidden(it->path())) {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file() && keep(it->path())) found.push_back(it->path().string());
      }
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      throw Error("data prepare", "input files or directories", "no such path " + input);
    }
  }
  if (files.empty()) {
    throw Error("data prepare", "at least one text file in the inputs", "none",
                "pass files or directories that contain text files");
  }
  return files;
}

PrepareSummary prepare_corpus(const PrepareOptions& opt) {
  if (!(opt.val_fraction >= 0.0 && opt.val_fraction < 1.0)) {
    throw Error("data prepare", "--val-fraction in [0, 1)", std::to_string(opt.val_fraction));
  }
  if (opt.out.empty()) throw Error("data prepare", "an output path (--out)", "none");
  const auto tokenizer = load_tokenizer(opt.tokenizer);
  const std::vector<std::string> files = list_documents(opt.inputs, opt.out);
  PendingFile pending(opt.out);

  PrepareProgress progress;
  progress.files_total = static_cast<int64_t>(files.size());
  for (const auto& f : files) progress.bytes_total += static_cast<int64_t>(fs::file_size(f));

  // the whole stream: end-of-text, document 0, end-of-text, document 1, ...
  std::vector<int32_t> stream;
  std::vector<int64_t> starts;
  for (const auto& f : files) {
    const std::string text = read_file(f, "data prepare");
    starts.push_back(static_cast<int64_t>(stream.size()));
    stream.push_back(tokenizer->eot_id());
    const std::vector<int32_t> ids = tokenizer->encode_ordinary(text);
    stream.insert(stream.end(), ids.begin(), ids.end());
    ++progress.files_done;
    progress.bytes_done += static_cast<int64_t>(text.size());
    progress.tokens = static_cast<int64_t>(stream.size());
    if (opt.on_progress) opt.on_progress(progress);
    check_stop(opt);
  }

  const int64_t n = static_cast<int64_t>(stream.size());
  const int64_t cut = n - std::llround(opt.val_fraction * static_cast<double>(n));
  TokenSplit train, val;
  train.tokens.assign(stream.begin(), stream.begin() + cut);
  for (int64_t s : starts) {
    if (s < cut) train.doc_offsets.push_back(s);
  }
  train.doc_offsets.push_back(cut);
  val.doc_offsets.push_back(0);
  if (cut < n) {
    const bool cut_at_start = std::binary_search(starts.begin(), starts.end(), cut);
    if (!cut_at_start) val.tokens.push_back(tokenizer->eot_id());  // the split document's tail
    for (int64_t s : starts) {
      if (s > cut) val.doc_offsets.push_back(s - cut + (cut_at_start ? 0 : 1));
    }
    val.tokens.insert(val.tokens.end(), stream.begin() + cut, stream.end());
    val.doc_offsets.push_back(static_cast<int64_t>(val.tokens.size()));
  }

  const TokenDatasetInfo info{tokenizer->name(), tokenizer->vocab_size(), tokenizer->eot_id()};
  write_token_dataset(pending.temp_path(), info, train, val);
  check_stop(opt);
  pending.commit();

  PrepareSummary summary;
  summary.documents = static_cast<int64_t>(files.size());
  summary.bytes = progress.bytes_done;
  summary.train_tokens = static_cast<int64_t>(train.tokens.size());
  summary.val_tokens = static_cast<int64_t>(val.tokens.size());
  summary.train_documents = static_cast<int64_t>(train.doc_offsets.size()) - 1;
  summary.val_documents = static_cast<int64_t>(val.doc_offsets.size()) - 1;
  return summary;
}

}  // namespace hla::data
