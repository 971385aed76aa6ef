// defines: the HDF5 token dataset format ("hla-tokens", version 1): write_token_dataset, and
// Hdf5TokenSplit, which reads one split by hyperslab without loading the corpus.
//
// File layout (h5py: f["train/tokens"][i:j]):
//   /                    attributes: format = "hla-tokens", format_version = 1,
//                        tokenizer = "gpt2" | "bytes", vocab_size (int64), eot_id (int64)
//   /train/tokens        [N_train] uint16 if vocab_size <= 65536, else uint32;
//                        chunked (32768 tokens), shuffle + deflate
//   /train/doc_offsets   [D_train + 1] int64: document d is tokens[doc_offsets[d],
//                        doc_offsets[d+1]); doc_offsets[0] = 0, doc_offsets[D] = N_train.
//                        Every document starts with eot_id (llm.c's convention), so a model
//                        always sees the boundary before a document's first token.
//   /val/tokens, /val/doc_offsets   the same for the validation split (may be empty)
//
//   write_token_dataset("corpus.h5", {"gpt2", 50257, 50256}, train, val);
//   Hdf5TokenSplit val("corpus.h5", "val");
//   std::vector<int32_t> ids(val.size());
//   val.read(0, val.size(), ids.data());
#pragma once

#include <memory>
#include <vector>

#include "data/token_source.h"

namespace hla::data {

inline constexpr const char* kTokenFormat = "hla-tokens";
inline constexpr int64_t kTokenFormatVersion = 1;
inline constexpr int64_t kTokenChunk = 32768;  // tokens per HDF5 chunk (64 KiB as uint16)

struct TokenDatasetInfo {
  std::string tokenizer;   // name understood by load_tokenizer
  int64_t vocab_size = 0;  // ids are in [0, vocab_size)
  int64_t eot_id = 0;      // the id that starts every document
};

// One split in memory, as written and read back.
struct TokenSplit {
  std::vector<int32_t> tokens;       // [N]
  std::vector<int64_t> doc_offsets;  // [D + 1], see the layout above
};

// Writes a complete dataset file at `path` (replacing any file there). Checks that ids are in
// [0, vocab_size) and that doc_offsets describe the tokens; throws hla::Error otherwise.
void write_token_dataset(const std::string& path, const TokenDatasetInfo& info,
                         const TokenSplit& train, const TokenSplit& val);

// One split of a dataset file, opened for reading. The constructor checks the file (exists, is
// HDF5, has the attributes and <split>/tokens) and throws hla::Error naming what is missing.
class Hdf5TokenSplit final : public TokenSource {
 public:
  Hdf5TokenSplit(const std::string& path, const std::string& split);
  ~Hdf5TokenSplit() override;

  int64_t size() const override;
  int64_t vocab_size() const override;
  std::string describe() const override;
  const TokenDatasetInfo& info() const;
  // The document offsets of this split, checked against the layout above.
  std::vector<int64_t> doc_offsets() const;

 protected:
  void read_range(int64_t start, int64_t count, int32_t* out) const override;

 private:
  struct Impl;  // the open HDF5 handles
  std::unique_ptr<Impl> impl_;
};

// True if `path` is an HDF5 file (by its signature).
bool is_hdf5_file(const std::string& path);

}  // namespace hla::data
