// Tensor: shared storage + shape + strides + offset + dtype + device. No autograd knowledge
// (that is autograd/var.h).
//
// Views (reshape of a contiguous tensor, permute, transpose, slice, narrow, select, expand,
// unsqueeze, squeeze) share storage with their source; contiguous(), clone(), to() copy.
// Strides are in elements; a stride of 0 is a broadcast dimension.
//
//   Generator gen(0);
//   Tensor x = Tensor::randn({2, 3}, gen);              // f32 on CPU
//   Tensor y = x.transpose(0, 1).contiguous();          // [3, 2]
//   double v = x.at({1, 2});
//   std::cout << y;                                      // readable printing
//
// Every misuse (shape, dtype, device, index) throws hla::Error naming the op.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "tensor/device.h"
#include "tensor/dtype.h"
#include "tensor/error.h"
#include "tensor/random.h"
#include "tensor/shape.h"
#include "tensor/storage.h"

namespace hla {

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor (defined() is false)

  // ---- factories
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::CPU);
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::CPU);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
                     Device device = Device::CPU);
  static Tensor scalar(double value, DType dtype = DType::f32);  // 0-dim
  // [start, start+step, ...) up to end (exclusive).
  static Tensor arange(double start, double end, double step = 1.0, DType dtype = DType::f32);
  static Tensor arange(int64_t n, DType dtype = DType::i64) { return arange(0, double(n), 1, dtype); }
  // N(mean, std^2) and U[lo, hi) from our own Generator: identical numbers on every compiler.
  static Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::f32,
                      double mean = 0.0, double std = 1.0);
  static Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::f32, double lo = 0.0,
                     double hi = 1.0);
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  // Values converted to `dtype` (for literals in tests: from_values({1,2,3}, {3}, DType::f64)).
  static Tensor from_values(const std::vector<double>& values, const Shape& shape,
                            DType dtype = DType::f32);
  // Shares (does not copy) an existing storage.
  static Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape,
                             const Shape& strides, int64_t offset, DType dtype);

  // ---- properties
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return hla::numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const;
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // Typed pointer to element 0 (the offset applied); checks the dtype.
  template <class T>
  T* data();
  template <class T>
  const T* data() const;
  void* raw_data();
  const void* raw_data() const;

  // ---- views (share storage)
  Tensor view(const Shape& shape) const;     // requires a compatible (contiguous) layout
  Tensor reshape(const Shape& shape) const;  // view when possible, else copy; one -1 allowed
  Tensor flatten() const { return reshape({numel()}); }
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const {
    return slice(dim, start, start + length);
  }
  Tensor select(int64_t dim, int64_t index) const;  // drops `dim`
  Tensor expand(const Shape& shape) const;          // broadcast (stride 0); -1 keeps a size
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;  // `dim` must have size 1

  // ---- copies
  Tensor contiguous() const;  // itself if already contiguous
  Tensor clone() const;       // always a fresh contiguous copy
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  // Copies src (same shape; any layout, dtype and device) into this tensor's elements.
  void copy_(const Tensor& src);
  void fill_(double value);
  void zero_() { fill_(0.0); }

  // ---- reading values (CPU)
  double item() const;  // one-element tensors
  double at(const std::vector<int64_t>& index) const;
  template <class T>
  std::vector<T> to_vector() const;  // row-major, converted to T
  std::string to_string(int64_t max_per_dim = 6) const;

  bool same_shape(const Tensor& o) const { return shape_ == o.shape_; }

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_, strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::f32;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- argument checks used across the project; each throws hla::Error naming `op`.
void check_defined(const Tensor& t, const char* op, const char* name);
void check_dtype(const Tensor& t, DType dtype, const char* op, const char* name);
void check_floating(const Tensor& t, const char* op, const char* name);
void check_shape(const Tensor& t, const Shape& shape, const char* op, const char* name,
                 const char* layout = "");
void check_rank(const Tensor& t, int64_t rank, const char* op, const char* name,
                const char* layout = "");
void check_same_device(const Tensor& a, const Tensor& b, const char* op);
void check_same_dtype(const Tensor& a, const Tensor& b, const char* op);
// Reads class ids [N] (i32/i64, either device; a sync on a GPU) on the host; each must be in
// [0, classes) or equal ignore_index. Returns them.
std::vector<int64_t> check_targets(const Tensor& targets, int64_t classes, int64_t ignore_index,
                                   const char* op);

// ---- template definitions
template <class T>
T* Tensor::data() {
  check_dtype(*this, dtype_of<T>(), "Tensor::data", "tensor");
  return static_cast<T*>(storage_->data()) + offset_;
}
template <class T>
const T* Tensor::data() const {
  check_dtype(*this, dtype_of<T>(), "Tensor::data", "tensor");
  return static_cast<const T*>(storage_->data()) + offset_;
}
template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  if (static_cast<int64_t>(values.size()) != hla::numel(shape))
    throw Error("Tensor::from_vector", std::to_string(hla::numel(shape)) + " values for shape " +
                hla::to_string(shape), std::to_string(values.size()));
  Tensor t = empty(shape, dtype_of<T>());
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}
template <class T>
std::vector<T> Tensor::to_vector() const {
  const Tensor c = to(Device::CPU).to(dtype_of<T>()).contiguous();
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}

}  // namespace hla
