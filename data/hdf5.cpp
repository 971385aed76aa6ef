// defines: the HDF5 helpers of hdf5.h.
#include "data/hdf5.h"

#include <sstream>

#include "tensor/error.h"

namespace hla::data::h5 {

void silence_hdf5_errors() {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

std::string last_hdf5_error() {
  std::string message;
  // The walk goes from the innermost frame outwards; keep the first description (the cause).
  const auto visit = [](unsigned n, const H5E_error2_t* e, void* data) -> herr_t {
    auto* out = static_cast<std::string*>(data);
    if (n == 0 && e->desc) *out = e->desc;
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, visit, &message);
  return message;
}

void throw_call_failed(const char* call, const char* file, int line) {
  std::ostringstream os;
  os << file << ":" << line << ": HDF5 call failed: " << call;
  const std::string cause = last_hdf5_error();
  if (!cause.empty()) os << " (" << cause << ")";
  throw Error(os.str());
}

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    if (id_ >= 0) close_(id_);
    id_ = o.id_;
    close_ = o.close_;
    o.id_ = -1;
  }
  return *this;
}

Handle::~Handle() {
  if (id_ >= 0) close_(id_);
}

bool exists(hid_t loc, const std::string& path) {
  // H5Lexists needs every intermediate group to exist, so test the path one level at a time.
  size_t end = 0;
  while (end != std::string::npos) {
    end = path.find('/', end + 1);
    const std::string prefix = path.substr(0, end);
    if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
  }
  return true;
}

void write_1d(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type, const void* data,
              int64_t n, int64_t chunk) {
  const hsize_t dims[1] = {static_cast<hsize_t>(n)};
  // unlimited max size so that a chunk may be larger than a short dataset
  const hsize_t max_dims[1] = {H5S_UNLIMITED};
  const hsize_t chunk_dims[1] = {static_cast<hsize_t>(chunk)};
  Handle space(H5_CHECK(H5Screate_simple(1, dims, max_dims)), H5Sclose);
  Handle props(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
  H5_CHECK(H5Pset_chunk(props.get(), 1, chunk_dims));
  H5_CHECK(H5Pset_shuffle(props.get()));
  H5_CHECK(H5Pset_deflate(props.get(), 4));
  // no modification times in object headers: the same data gives the same file bytes
  H5_CHECK(H5Pset_obj_track_times(props.get(), 0));
  Handle link_props(H5_CHECK(H5Pcreate(H5P_LINK_CREATE)), H5Pclose);
  H5_CHECK(H5Pset_create_intermediate_group(link_props.get(), 1));
  Handle dset(H5_CHECK(H5Dcreate2(loc, name.c_str(), file_type, space.get(), link_props.get(),
                                  props.get(), H5P_DEFAULT)),
              H5Dclose);
  if (n > 0) H5_CHECK(H5Dwrite(dset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
}

std::vector<int64_t> read_int64(hid_t loc, const std::string& path) {
  Handle dset(H5_CHECK(H5Dopen2(loc, path.c_str(), H5P_DEFAULT)), H5Dclose);
  Handle space(H5_CHECK(H5Dget_space(dset.get())), H5Sclose);
  const hssize_t n = H5_CHECK(H5Sget_simple_extent_npoints(space.get()));
  std::vector<int64_t> values(static_cast<size_t>(n));
  if (n > 0) {
    H5_CHECK(H5Dread(dset.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()));
  }
  return values;
}

void write_attr(hid_t loc, const std::string& name, const std::string& value) {
  Handle type(H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
  H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
  H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  Handle space(H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose);
  Handle attr(
      H5_CHECK(H5Acreate2(loc, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT)),
      H5Aclose);
  const char* ptr = value.c_str();
  H5_CHECK(H5Awrite(attr.get(), type.get(), &ptr));
}

void write_attr(hid_t loc, const std::string& name, int64_t value) {
  Handle space(H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose);
  Handle attr(
      H5_CHECK(H5Acreate2(loc, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT)),
      H5Aclose);
  H5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value));
}

std::string read_string_attr(hid_t loc, const std::string& name) {
  Handle attr(H5_CHECK(H5Aopen(loc, name.c_str(), H5P_DEFAULT)), H5Aclose);
  Handle file_type(H5_CHECK(H5Aget_type(attr.get())), H5Tclose);
  Handle mem_type(H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
  // HDF5 converts between strings only of the same character set (ASCII or UTF-8)
  H5_CHECK(H5Tset_cset(mem_type.get(), H5Tget_cset(file_type.get())));
  if (H5_CHECK(H5Tis_variable_str(file_type.get())) > 0) {
    H5_CHECK(H5Tset_size(mem_type.get(), H5T_VARIABLE));
    char* ptr = nullptr;
    H5_CHECK(H5Aread(attr.get(), mem_type.get(), &ptr));
    std::string value = ptr ? ptr : "";
    H5free_memory(ptr);
    return value;
  }
  const size_t size = H5Tget_size(file_type.get());
  H5_CHECK(H5Tset_size(mem_type.get(), size + 1));  // room for the terminator
  std::string buffer(size + 1, '\0');
  H5_CHECK(H5Aread(attr.get(), mem_type.get(), buffer.data()));
  return buffer.c_str();
}

int64_t read_int_attr(hid_t loc, const std::string& name) {
  Handle attr(H5_CHECK(H5Aopen(loc, name.c_str(), H5P_DEFAULT)), H5Aclose);
  int64_t value = 0;
  H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &value));
  return value;
}

bool has_attr(hid_t loc, const std::string& name) {
  return H5_CHECK(H5Aexists(loc, name.c_str())) > 0;
}

}  // namespace hla::data::h5
