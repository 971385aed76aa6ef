// defines: the thin layer hla::data uses over the HDF5 C API: owning handles, H5_CHECK, and
// small typed helpers for the 1-D datasets and scalar attributes of token files.
//
// Every HDF5 call goes through H5_CHECK, which throws hla::Error with file:line, the call, and
// HDF5's own innermost error message. HDF5's automatic printing of its error stack to stderr is
// switched off (silence_hdf5_errors) so users see only hla's messages.
//
//   h5::Handle file(H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Fclose);
//   std::vector<int64_t> v = h5::read_int64(file.get(), "train/doc_offsets");
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace hla::data::h5 {

// Turns off HDF5's automatic error printing (process-wide; idempotent).
void silence_hdf5_errors();

// The innermost message on HDF5's current error stack ("" if none).
std::string last_hdf5_error();

[[noreturn]] void throw_call_failed(const char* call, const char* file, int line);

// Returns `value` when it is >= 0 (a valid hid_t, herr_t or htri_t); throws otherwise.
template <class T>
T checked(T value, const char* call, const char* file, int line) {
  if (value < 0) throw_call_failed(call, file, line);
  return value;
}

// An owned hid_t, closed with its H5*close function when destroyed. Move-only.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer close) : id_(id), close_(close) {}
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle();
  hid_t get() const { return id_; }

 private:
  hid_t id_ = -1;
  Closer close_ = nullptr;
};

// True if `path` names an object (group or dataset) under `loc`, e.g. "train/tokens".
bool exists(hid_t loc, const std::string& path);

// Writes a 1-D dataset `name` under `loc` from n values of memory type `mem_type`, stored as
// `file_type`, chunked (chunk elements) and compressed (shuffle + deflate) so that readers can
// fetch any range without reading the rest. n may be 0.
void write_1d(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type, const void* data,
              int64_t n, int64_t chunk);

// The whole 1-D int64 dataset at `path` (converted from any integer type).
std::vector<int64_t> read_int64(hid_t loc, const std::string& path);

// Scalar attributes on `loc`. Strings are stored as variable-length UTF-8 (what h5py writes);
// reading accepts fixed-length strings too.
void write_attr(hid_t loc, const std::string& name, const std::string& value);
void write_attr(hid_t loc, const std::string& name, int64_t value);
std::string read_string_attr(hid_t loc, const std::string& name);
int64_t read_int_attr(hid_t loc, const std::string& name);
bool has_attr(hid_t loc, const std::string& name);

}  // namespace hla::data::h5

#define H5_CHECK(call) ::hla::data::h5::checked((call), #call, __FILE__, __LINE__)
