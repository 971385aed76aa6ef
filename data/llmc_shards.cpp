// defines: llm.c / nanoGPT token files (see llmc_shards.h).
#include "data/llmc_shards.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "data/pending_file.h"
#include "tensor/error.h"

namespace hla::data {

// Both formats are little-endian and read by copying bytes straight into integers.
static_assert(std::endian::native == std::endian::little, "hla reads token files little-endian");

bool has_llmc_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  int32_t magic = 0;
  return in.read(reinterpret_cast<char*>(&magic), sizeof magic) && magic == kLlmcMagic;
}

void write_llmc_shard(const std::string& path, std::span<const int32_t> tokens,
                      int64_t vocab_size) {
  const std::string op = "write llm.c shard " + path;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab_size) {
      throw Error(op, "ids in [0, " + std::to_string(vocab_size) + ")",
                  "id " + std::to_string(tokens[i]) + " at index " + std::to_string(i));
    }
  }
  if (tokens.size() > static_cast<size_t>(INT32_MAX)) {
    throw Error(op, "at most 2^31-1 tokens per shard (the header count is int32)",
                std::to_string(tokens.size()), "split the tokens over several shards");
  }
  const bool narrow = vocab_size <= 65536;
  std::array<int32_t, kLlmcHeaderInts> header{};
  header[0] = kLlmcMagic;
  header[1] = narrow ? 1 : 2;
  header[2] = static_cast<int32_t>(tokens.size());

  PendingFile pending(path);
  {
    std::ofstream out(pending.temp_path(), std::ios::binary | std::ios::trunc);
    if (!out) throw Error(op, "a writable file", std::strerror(errno));
    out.write(reinterpret_cast<const char*>(header.data()), sizeof header);
    if (narrow) {
      const std::vector<uint16_t> narrowed(tokens.begin(), tokens.end());
      out.write(reinterpret_cast<const char*>(narrowed.data()), narrowed.size() * 2);
    } else {
      out.write(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 4);
    }
    out.flush();
    if (!out) throw Error(op, "a complete write", std::strerror(errno), "is the disk full?");
  }
  pending.commit();
}

// ---- RawTokenFile

RawTokenFile::RawTokenFile(const std::string& path, int64_t vocab_size, const std::string& op)
    : path_(path), vocab_size_(vocab_size) {
  if (vocab_size <= 0) {
    throw Error(op + " " + path, "a positive vocabulary size", std::to_string(vocab_size));
  }
  if (!std::filesystem::is_regular_file(path)) {
    throw Error(op + " " + path, "an existing file", "no such file");
  }
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw Error(op + " " + path, "a readable file", std::strerror(errno));
  file_bytes_ = static_cast<int64_t>(std::filesystem::file_size(path));
}

RawTokenFile::~RawTokenFile() {
  if (fd_ >= 0) ::close(fd_);
}

void RawTokenFile::read_bytes(int64_t offset, int64_t n, void* out) const {
  auto* dst = static_cast<char*>(out);
  while (n > 0) {
    const ssize_t got = ::pread(fd_, dst, static_cast<size_t>(n), offset);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      throw Error("read " + path_, "bytes up to offset " + std::to_string(offset + n),
                  got < 0 ? std::strerror(errno) : "end of file", "was the file truncated?");
    }
    dst += got;
    offset += got;
    n -= got;
  }
}

void RawTokenFile::read_range(int64_t start, int64_t count, int32_t* out) const {
  const int64_t offset = header_bytes_ + start * token_bytes_;
  if (token_bytes_ == 4) {
    read_bytes(offset, count * 4, out);
    return;
  }
  std::vector<uint16_t> narrow(static_cast<size_t>(count));
  read_bytes(offset, count * 2, narrow.data());
  std::copy(narrow.begin(), narrow.end(), out);
}

// ---- the two formats

LlmcShard::LlmcShard(const std::string& path, int64_t vocab_size)
    : RawTokenFile(path, vocab_size, "llm.c shard") {
  const std::string op = "llm.c shard " + path;
  const int64_t header_bytes = kLlmcHeaderInts * 4;
  if (file_bytes_ < header_bytes) {
    throw Error(op, "a 1024-byte header", std::to_string(file_bytes_) + " bytes in the file");
  }
  std::array<int32_t, kLlmcHeaderInts> header{};
  read_bytes(0, header_bytes, header.data());
  if (header[0] != kLlmcMagic) {
    throw Error(op, "magic number 20240520", std::to_string(header[0]),
                "not an llm.c shard; a headerless nanoGPT .bin opens with format nanogpt");
  }
  if (header[1] != 1 && header[1] != 2) {
    throw Error(op, "version 1 (uint16 tokens) or 2 (uint32)", std::to_string(header[1]));
  }
  version_ = header[1];
  header_bytes_ = header_bytes;
  token_bytes_ = version_ == 1 ? 2 : 4;
  size_ = header[2];
  if (size_ < 0 || header_bytes_ + size_ * token_bytes_ != file_bytes_) {
    throw Error(op,
                "a file of 1024 + " + std::to_string(size_) + " x " + std::to_string(token_bytes_) +
                    " bytes (the header's token count)",
                std::to_string(file_bytes_) + " bytes", "was the shard truncated?");
  }
}

NanoGptBin::NanoGptBin(const std::string& path, int64_t vocab_size)
    : RawTokenFile(path, vocab_size, "nanoGPT .bin") {
  if (file_bytes_ % 2 != 0) {
    throw Error("nanoGPT .bin " + path, "an even number of bytes (uint16 tokens)",
                std::to_string(file_bytes_) + " bytes");
  }
  size_ = file_bytes_ / 2;
}

}  // namespace hla::data
