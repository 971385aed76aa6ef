// defines: reading and writing safetensors files (Hugging Face's tensor container), at the level
// of raw bytes + dtype + shape (hla_data does not know Tensor; the CLI converts).
//
// File format (https://github.com/huggingface/safetensors):
//   bytes [0, 8)        N: the header length, unsigned 64-bit little-endian
//   bytes [8, 8+N)      the header: a UTF-8 JSON object
//                         {"__metadata__": {"format": "pt", ...string: string},   (optional)
//                          "<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}}
//   bytes [8+N, end)    the data buffer; tensor bytes are [b, e) relative to its start,
//                       row-major, little-endian
//
// Supported dtypes: "F32" (4 bytes), "BF16" and "F16" (2 bytes).
//
// Reading is strict; each of these throws hla::Error naming the file and the tensor: a file
// shorter than 8 bytes or a header length past the end, a header that is not a JSON object, an
// entry without dtype/shape/data_offsets or with the wrong types, an unknown dtype, a byte size
// that differs from prod(shape) * dtype size, offsets past the end of the file, and offsets that
// overlap, leave gaps or do not cover the data buffer exactly (safetensors packs tensors
// back to back).
//
//   SafetensorsFile f("model.safetensors");          // memory-mapped, validated
//   for (const SafetensorsEntry& e : f.entries()) use(e.name, e.dtype, e.shape, e.bytes);
//
//   write_safetensors("out.safetensors", {{"w", "F32", {2, 3}, bytes_of_w}}, {{"format", "pt"}});
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace hla::data {

// Bytes per element of a supported safetensors dtype; throws hla::Error for any other name.
size_t safetensors_dtype_size(const std::string& dtype);

// One tensor of a file: bytes views the mapped file (valid while the SafetensorsFile lives).
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // "F32" | "BF16" | "F16"
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;
};

class SafetensorsFile {
 public:
  // Maps `path` read-only and validates the header against the file length.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // In the order of their data offsets.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  // nullptr if absent.
  const SafetensorsEntry* find(const std::string& name) const;
  // The header's "__metadata__" (string values only; others are skipped).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write; bytes must hold prod(shape) * dtype size bytes.
struct SafetensorsTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;
};

// Writes the tensors back to back in the given order (header padded with spaces to a multiple
// of 8 bytes, as the reference writer does), through a temporary file renamed into place.
// Throws hla::Error for a duplicate name, an unknown dtype or a size mismatch.
void write_safetensors(const std::string& path, const std::vector<SafetensorsTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace hla::data
