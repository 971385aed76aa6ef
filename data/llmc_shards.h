// defines: llm.c and nanoGPT token files: write_llmc_shard, LlmcShard, NanoGptBin.
//
// llm.c shard (karpathy/llm.c, dev/data/data_common.py), little-endian:
//   header  256 x int32 (1024 bytes): [0] magic 20240520, [1] version, [2] token count, rest 0
//   tokens  version 1: uint16 (GPT-2 and other vocabularies up to 65536 ids)
//           version 2: uint32 (llm.c's Llama 3 shards)
// nanoGPT train.bin / val.bin (karpathy/nanoGPT, data/*/prepare.py): uint16 tokens, no header.
//
// Both read by offset (pread), never loading the file. Neither format records the vocabulary,
// so the reader is told the vocabulary size that ids are checked against.
//
//   write_llmc_shard("train_000.bin", tokens, 50257);
//   LlmcShard shard("train_000.bin", 50257);   // shard.size() == tokens.size()
#pragma once

#include <span>

#include "data/token_source.h"

namespace hla::data {

inline constexpr int32_t kLlmcMagic = 20240520;
inline constexpr int64_t kLlmcHeaderInts = 256;

// True if the file starts with the llm.c magic number.
bool has_llmc_magic(const std::string& path);

// Writes an llm.c shard at `path` (through a .partial file, see pending_file.h): version 1 if
// vocab_size <= 65536, else version 2. Throws hla::Error if an id is outside [0, vocab_size).
void write_llmc_shard(const std::string& path, std::span<const int32_t> tokens, int64_t vocab_size);

// A raw file of fixed-width little-endian unsigned tokens after a header; the common part of
// both formats.
class RawTokenFile : public TokenSource {
 public:
  ~RawTokenFile() override;
  int64_t size() const override { return size_; }
  int64_t vocab_size() const override { return vocab_size_; }
  std::string describe() const override { return path_; }

 protected:
  // Opens `path` (throws hla::Error naming `op` if it cannot).
  RawTokenFile(const std::string& path, int64_t vocab_size, const std::string& op);
  void read_range(int64_t start, int64_t count, int32_t* out) const override;
  // Reads exactly n bytes at offset or throws; used by the constructors for headers.
  void read_bytes(int64_t offset, int64_t n, void* out) const;

  std::string path_;
  int64_t vocab_size_ = 0;
  int64_t file_bytes_ = 0;
  int64_t header_bytes_ = 0, token_bytes_ = 2;  // layout, set by the derived constructor
  int64_t size_ = 0;

 private:
  int fd_ = -1;
};

// An llm.c shard. Throws hla::Error on a bad magic number, an unknown version, or a token count
// that does not match the file size.
class LlmcShard final : public RawTokenFile {
 public:
  LlmcShard(const std::string& path, int64_t vocab_size);
  int32_t version() const { return version_; }

 private:
  int32_t version_ = 0;
};

// A headerless nanoGPT uint16 file. Throws hla::Error if its size is odd.
class NanoGptBin final : public RawTokenFile {
 public:
  NanoGptBin(const std::string& path, int64_t vocab_size);
};

}  // namespace hla::data
