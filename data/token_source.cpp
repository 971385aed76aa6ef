// defines: TokenSource::read (range and vocabulary checks), parse_token_file_format,
// open_token_source (see token_source.h).
#include "data/token_source.h"

#include <filesystem>

#include "data/llmc_shards.h"
#include "data/token_dataset.h"
#include "tensor/error.h"

namespace hla::data {

void TokenSource::read(int64_t start, int64_t count, int32_t* out) const {
  if (start < 0 || count < 0 || start + count > size()) {
    throw Error("read " + describe(), "a token range inside [0, " + std::to_string(size()) + ")",
                "[" + std::to_string(start) + ", " + std::to_string(start + count) + ")");
  }
  read_range(start, count, out);
  const int64_t vocab = vocab_size();
  for (int64_t i = 0; i < count; ++i) {
    if (out[i] < 0 || out[i] >= vocab) {
      throw Error("read " + describe(), "token ids in [0, " + std::to_string(vocab) + ")",
                  "id " + std::to_string(out[i]) + " at token " + std::to_string(start + i),
                  "the file was written with a larger vocabulary than this model or tokenizer");
    }
  }
}

TokenFileFormat parse_token_file_format(const std::string& name) {
  if (name == "auto") return TokenFileFormat::Auto;
  if (name == "hdf5") return TokenFileFormat::Hdf5;
  if (name == "llmc") return TokenFileFormat::LlmC;
  if (name == "nanogpt") return TokenFileFormat::NanoGpt;
  throw Error("token file format", "one of: auto, hdf5, llmc, nanogpt", "'" + name + "'");
}

std::unique_ptr<TokenSource> open_token_source(const std::string& path, const std::string& split,
                                               TokenFileFormat format, int64_t bin_vocab_size) {
  if (format == TokenFileFormat::Auto) {
    if (!std::filesystem::is_regular_file(path)) {
      throw Error("open " + path, "an existing token file (.h5 or .bin)", "no such file");
    }
    const std::string ext = std::filesystem::path(path).extension().string();
    if (is_hdf5_file(path) || ext == ".h5" || ext == ".hdf5") {
      format = TokenFileFormat::Hdf5;  // a .h5 without the signature fails with a clear error
    } else if (has_llmc_magic(path)) {
      format = TokenFileFormat::LlmC;
    } else if (ext == ".bin") {
      format = TokenFileFormat::NanoGpt;
    } else {
      throw Error("open " + path,
                  "a token file: HDF5 from hla data prepare, an llm.c shard, or a nanoGPT .bin",
                  "a file that is none of these",
                  "text files must first be tokenized with hla data prepare");
    }
  }
  switch (format) {
    case TokenFileFormat::Hdf5:
      return std::make_unique<Hdf5TokenSplit>(path, split);
    case TokenFileFormat::LlmC:
      return std::make_unique<LlmcShard>(path, bin_vocab_size);
    case TokenFileFormat::NanoGpt:
      return std::make_unique<NanoGptBin>(path, bin_vocab_size);
    case TokenFileFormat::Auto:
      break;
  }
  HLA_CHECK(false, "unhandled token file format");
}

}  // namespace hla::data
