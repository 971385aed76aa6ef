#include "experiments/cli/tensor_h5.h"

#include "data/hdf5.h"

namespace hla::cli {

using data::h5::Handle;

namespace {
Handle open_dataset(hid_t file, const std::string& path, const std::string& file_name) {
  if (!data::h5::exists(file, path))
    throw Error("read " + file_name, "a dataset '" + path + "'", "none there",
                "list the file with h5ls -r " + file_name);
  return Handle(H5_CHECK(H5Dopen2(file, path.c_str(), H5P_DEFAULT)), H5Dclose);
}
}  // namespace

DType stored_dtype(hid_t file, const std::string& path, const std::string& file_name) {
  Handle ds = open_dataset(file, path, file_name);
  Handle type(H5_CHECK(H5Dget_type(ds.get())), H5Tclose);
  if (H5Tget_class(type.get()) == H5T_FLOAT && H5Tget_size(type.get()) == 4) return DType::f32;
  return DType::f64;
}

Tensor read_tensor(hid_t file, const std::string& path, DType dtype, const std::string& file_name) {
  Handle ds = open_dataset(file, path, file_name);
  Handle type(H5_CHECK(H5Dget_type(ds.get())), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_FLOAT && cls != H5T_INTEGER)
    throw Error("read " + file_name, "'" + path + "' to hold numbers", "another HDF5 type");
  Handle space(H5_CHECK(H5Dget_space(ds.get())), H5Sclose);
  const int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  std::vector<hsize_t> dims(rank);
  H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  Shape shape(dims.begin(), dims.end());
  Tensor t = Tensor::empty(shape, dtype);
  const hid_t mem = dtype == DType::f32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE;
  if (t.numel() > 0) H5_CHECK(H5Dread(ds.get(), mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw_data()));
  return t;
}

void write_tensor(hid_t file, const std::string& path, const Tensor& t_in) {
  const Tensor t = t_in.to(Device::CPU).contiguous();
  HLA_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, "write_tensor takes f32/f64");
  Handle lcpl(H5_CHECK(H5Pcreate(H5P_LINK_CREATE)), H5Pclose);
  H5_CHECK(H5Pset_create_intermediate_group(lcpl.get(), 1));
  std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
  Handle space(H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)),
               H5Sclose);
  const hid_t type = t.dtype() == DType::f32 ? H5T_IEEE_F32LE : H5T_IEEE_F64LE;
  const hid_t mem = t.dtype() == DType::f32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE;
  Handle ds(H5_CHECK(H5Dcreate2(file, path.c_str(), type, space.get(), lcpl.get(), H5P_DEFAULT,
                                H5P_DEFAULT)),
            H5Dclose);
  if (t.numel() > 0) H5_CHECK(H5Dwrite(ds.get(), mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw_data()));
}

}  // namespace hla::cli
