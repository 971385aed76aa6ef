// Tensors in HDF5 files: n-d float datasets read into and written from hla::Tensor, so that
// h5py / numpy see plain arrays with the tensor's shape.
//
//   Tensor q = read_tensor(file, "in/q", DType::f64);   // converted from the stored type
//   write_tensor(file, "out/0", o);                      // stored as f32 or f64
#pragma once

#include <hdf5.h>

#include <string>

#include "tensor/tensor.h"

namespace hla::cli {

// The dataset at `path` as a tensor of `dtype` (f32 or f64; integer stores are converted).
// Throws hla::Error naming the file, the path and what is there instead.
Tensor read_tensor(hid_t file, const std::string& path, DType dtype, const std::string& file_name);
// The stored floating type of the dataset at `path`: f32 or f64.
DType stored_dtype(hid_t file, const std::string& path, const std::string& file_name);
// Writes t (f32 or f64, any layout) as a dataset at `path`, creating intermediate groups.
void write_tensor(hid_t file, const std::string& path, const Tensor& t);

}  // namespace hla::cli
