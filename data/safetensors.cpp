// defines: SafetensorsFile (memory-mapped, validated reads) and write_safetensors (see
// safetensors.h).
#include "data/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/pending_file.h"
#include "tensor/error.h"

namespace hla::data {

namespace {

using json = nlohmann::json;

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// prod(shape) * element size, or throws if a dimension is negative.
uint64_t byte_size(const std::string& op, const std::string& name, const std::string& dtype,
                   const std::vector<int64_t>& shape) {
  uint64_t n = safetensors_dtype_size(dtype);
  for (int64_t d : shape) {
    if (d < 0) throw Error(op, "tensor '" + name + "': non-negative dims", shape_string(shape));
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

void put_u64_le(uint64_t v, char* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

}  // namespace

size_t safetensors_dtype_size(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "BF16" || dtype == "F16") return 2;
  throw Error("safetensors dtype", "one of F32, BF16, F16", "\"" + dtype + "\"",
              "convert the checkpoint to one of these in PyTorch first");
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const std::string op = "safetensors " + path;
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error(op, "a readable file", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error(op, "a readable file", std::strerror(errno));
  }
  map_size_ = static_cast<size_t>(st.st_size);
  if (map_size_ < 8) {
    ::close(fd);
    throw Error(op, "at least 8 bytes (the header length)",
                std::to_string(map_size_) + " bytes", "the file is truncated or not safetensors");
  }
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file open
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw Error(op, "a file that can be memory-mapped", std::strerror(errno));
  }
  try {
    const auto* base = static_cast<const std::byte*>(map_);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | std::to_integer<uint64_t>(base[i]);
    if (header_len > map_size_ - 8) {
      throw Error(op, "a header length <= " + std::to_string(map_size_ - 8) +
                          " (the bytes after the 8-byte length)",
                  std::to_string(header_len),
                  "the file is truncated or not safetensors (bad header length)");
    }
    const char* text = reinterpret_cast<const char*>(base + 8);
    json header = json::parse(text, text + header_len, nullptr, /*allow_exceptions=*/false);
    if (!header.is_object()) {
      throw Error(op, "a JSON object as header", header.is_discarded() ? "text that is not JSON"
                                                                       : header.type_name(),
                  "the file is corrupt or not safetensors");
    }
    const std::byte* data = base + 8 + header_len;
    const uint64_t data_len = map_size_ - 8 - header_len;
    for (auto& [name, v] : header.items()) {
      if (name == "__metadata__") {
        if (!v.is_object()) throw Error(op, "__metadata__ an object of strings", v.type_name());
        for (auto& [k, s] : v.items())
          if (s.is_string()) metadata_[k] = s.get<std::string>();
        continue;
      }
      const std::string what = "tensor '" + name + "'";
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
          !v.contains("data_offsets"))
        throw Error(op, what + ": an object with dtype, shape and data_offsets", v.dump());
      if (!v["dtype"].is_string()) throw Error(op, what + ": dtype a string", v["dtype"].dump());
      const std::string dtype = v["dtype"].get<std::string>();
      if (dtype != "F32" && dtype != "BF16" && dtype != "F16")
        throw Error(op, what + ": dtype one of F32, BF16, F16", "unknown dtype \"" + dtype + "\"",
                    "convert the checkpoint to one of these in PyTorch first");
      const json& js = v["shape"];
      const json& jo = v["data_offsets"];
      if (!js.is_array() || !std::all_of(js.begin(), js.end(), [](const json& d) {
            return d.is_number_unsigned();
          }))
        throw Error(op, what + ": shape a list of non-negative integers", js.dump());
      if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() ||
          !jo[1].is_number_unsigned())
        throw Error(op, what + ": data_offsets [begin, end] of non-negative integers", jo.dump());
      std::vector<int64_t> shape;
      for (const json& d : js) shape.push_back(d.get<int64_t>());
      const uint64_t begin = jo[0].get<uint64_t>(), end = jo[1].get<uint64_t>();
      if (end < begin)
        throw Error(op, what + ": data_offsets begin <= end", jo.dump());
      if (end > data_len)
        throw Error(op, what + ": data_offsets within the " + std::to_string(data_len) +
                            "-byte data buffer",
                    jo.dump() + " (offsets past the end of the file)",
                    "the file is truncated");
      const uint64_t expected = byte_size(op, name, dtype, shape);
      if (end - begin != expected)
        throw Error(op, what + ": " + std::to_string(expected) + " bytes for " + dtype + " " +
                            shape_string(shape),
                    std::to_string(end - begin) + " bytes (data_offsets " + jo.dump() + ")",
                    "shape and size mismatch: the header is corrupt");
      entries_.push_back({name, dtype, shape, std::span<const std::byte>(data + begin, end - begin)});
    }
    // Tensors are packed back to back: sorted by offset, each begins where the last ended and
    // the last ends at the end of the file.
    std::sort(entries_.begin(), entries_.end(), [](const auto& a, const auto& b) {
      return a.bytes.data() != b.bytes.data() ? a.bytes.data() < b.bytes.data()
                                              : a.bytes.size() < b.bytes.size();
    });
    uint64_t at = 0;
    std::string previous = "the start of the data buffer";
    for (const SafetensorsEntry& e : entries_) {
      const auto begin = static_cast<uint64_t>(e.bytes.data() - data);
      if (begin != at)
        throw Error(op, "tensor '" + e.name + "' to begin at byte " + std::to_string(at) +
                            " (right after " + previous + ")",
                    "byte " + std::to_string(begin) +
                        (begin < at ? " (overlapping offsets)" : " (a gap: misaligned offsets)"),
                    "the header is corrupt");
      at = begin + e.bytes.size();
      previous = "tensor '" + e.name + "'";
    }
    if (at != data_len)
      throw Error(op, "tensors covering the " + std::to_string(data_len) + "-byte data buffer",
                  std::to_string(data_len - at) + " trailing bytes after " + previous,
                  "the file is corrupt");
  } catch (...) {
    ::munmap(map_, map_size_);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  for (const SafetensorsEntry& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string op = "write safetensors " + path;
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t at = 0;
  for (const SafetensorsTensor& t : tensors) {
    if (t.name == "__metadata__" || header.contains(t.name))
      throw Error(op, "unique tensor names other than __metadata__", "'" + t.name + "' twice");
    const uint64_t n = byte_size(op, t.name, t.dtype, t.shape);
    if (n != t.bytes.size())
      throw Error(op, "tensor '" + t.name + "': " + std::to_string(n) + " bytes for " + t.dtype +
                          " " + shape_string(t.shape),
                  std::to_string(t.bytes.size()) + " bytes");
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {at, at + n}}};
    at += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  char len[8];
  put_u64_le(text.size(), len);

  PendingFile pending(path);
  {
    std::ofstream out(pending.temp_path(), std::ios::binary);
    out.write(len, 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const SafetensorsTensor& t : tensors)
      out.write(reinterpret_cast<const char*>(t.bytes.data()),
                static_cast<std::streamsize>(t.bytes.size()));
    out.flush();
    if (!out) throw Error(op, "a writable file", "a write error", "is the disk full?");
  }
  pending.commit();
}

}  // namespace hla::data
