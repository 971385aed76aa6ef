// defines: TokenSource, a read-only stream of token ids on disk that can be read at any offset
// without loading the whole file, and open_token_source, which opens any token file hla knows:
//
//   format   files                          what a source is
//   Hdf5     .h5 / .hdf5 from `hla data prepare` (token_dataset.h)   one split: "train" or "val"
//   LlmC     llm.c shards (llmc_shards.h): 1024-byte header, uint16  the whole shard
//   NanoGpt  nanoGPT train.bin / val.bin: headerless uint16          the whole file
//   Auto     by content: HDF5 signature -> Hdf5; llm.c magic -> LlmC; else a .bin is NanoGpt
//
// Every read checks that ids lie in [0, vocab_size()), so a file made with another tokenizer
// fails at the first bad id with its position, not later inside an embedding lookup. HDF5 files
// carry their vocabulary size; .bin files do not, so the caller states it (bin_vocab_size,
// GPT-2's 50257 by default).
//
// A source is not thread-safe (the HDF5 library is built without thread safety): read it from
// one thread at a time.
//
//   auto src = open_token_source("corpus.h5", "val");
//   std::vector<int32_t> ids(1025);
//   src->read(0, 1025, ids.data());
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace hla::data {

class TokenSource {
 public:
  virtual ~TokenSource() = default;
  virtual int64_t size() const = 0;          // number of tokens
  virtual int64_t vocab_size() const = 0;    // every id read is checked to be below this
  virtual std::string describe() const = 0;  // e.g. "corpus.h5 [val]", for messages

  // Tokens [start, start + count) into out[0, count). Throws hla::Error if the range is outside
  // [0, size()) or an id is outside [0, vocab_size()).
  void read(int64_t start, int64_t count, int32_t* out) const;

 protected:
  // Reads a range already checked to be inside the source.
  virtual void read_range(int64_t start, int64_t count, int32_t* out) const = 0;
};

enum class TokenFileFormat { Auto, Hdf5, LlmC, NanoGpt };

// Parses "auto", "hdf5", "llmc", "nanogpt"; throws hla::Error listing them otherwise.
TokenFileFormat parse_token_file_format(const std::string& name);

// Opens `path` (see the table above). `split` selects the HDF5 split and is ignored for .bin
// files, which hold one stream each.
std::unique_ptr<TokenSource> open_token_source(const std::string& path,
                                               const std::string& split = "train",
                                               TokenFileFormat format = TokenFileFormat::Auto,
                                               int64_t bin_vocab_size = 50257);

}  // namespace hla::data
