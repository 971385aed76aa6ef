// Tensor factories, views and copies. Printing is in tensor_print.cpp.
#include "tensor/tensor.h"

#include <algorithm>
#include <cmath>

#include "tensor/dtype_dispatch.h"
#include "tensor/strided.h"

namespace hla {

// ---------------------------------------------------------------------------------------------
// factories

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, const Shape& shape,
                            const Shape& strides, int64_t offset, DType dtype) {
  Tensor t;
  t.storage_ = std::move(storage);
  t.shape_ = shape;
  t.strides_ = strides;
  t.offset_ = offset;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    if (d < 0) throw Error("Tensor::empty", "non-negative sizes", hla::to_string(shape));
  auto st = std::make_shared<Storage>(static_cast<size_t>(hla::numel(shape)) * dtype_size(dtype),
                                      device);
  return from_storage(std::move(st), shape, contiguous_strides(shape), 0, dtype);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(0.0);
  return t;
}
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}
Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}
Tensor Tensor::scalar(double value, DType dtype) { return full({}, value, dtype); }

Tensor Tensor::arange(double start, double end, double step, DType dtype) {
  if (step == 0 || (end - start) / step < 0)
    throw Error("Tensor::arange", "a step that moves from start towards end",
                "start=" + std::to_string(start) + " end=" + std::to_string(end) +
                    " step=" + std::to_string(step));
  const int64_t n = static_cast<int64_t>(std::ceil((end - start) / step));
  Tensor t = empty({n}, dtype);
  visit_dtype(dtype, [&]<class T>() {
    T* p = t.data<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = convert<T>(start + step * static_cast<double>(i));
  });
  return t;
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, DType dtype, double mean, double std) {
  Tensor t = empty(shape, dtype);
  visit_dtype(dtype, [&]<class T>() {
    T* p = t.data<T>();
    for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = convert<T>(mean + std * gen.normal());
  });
  return t;
}

Tensor Tensor::rand(const Shape& shape, Generator& gen, DType dtype, double lo, double hi) {
  Tensor t = empty(shape, dtype);
  visit_dtype(dtype, [&]<class T>() {
    T* p = t.data<T>();
    for (int64_t i = 0, n = t.numel(); i < n; ++i)
      p[i] = convert<T>(lo + (hi - lo) * gen.uniform());
  });
  return t;
}

Tensor Tensor::from_values(const std::vector<double>& values, const Shape& shape, DType dtype) {
  if (static_cast<int64_t>(values.size()) != hla::numel(shape))
    throw Error("Tensor::from_values",
                std::to_string(hla::numel(shape)) + " values for shape " + hla::to_string(shape),
                std::to_string(values.size()));
  Tensor t = empty(shape, dtype);
  visit_dtype(dtype, [&]<class T>() {
    T* p = t.data<T>();
    for (size_t i = 0; i < values.size(); ++i) p[i] = convert<T>(values[i]);
  });
  return t;
}

// ---------------------------------------------------------------------------------------------
// properties

int64_t Tensor::size(int64_t d) const { return shape_[wrap_dim(d, dim(), "Tensor::size")]; }

Device Tensor::device() const { return storage_ ? storage_->device() : Device::CPU; }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

void* Tensor::raw_data() {
  check_defined(*this, "Tensor::raw_data", "tensor");
  return static_cast<char*>(storage_->data()) + offset_ * dtype_size(dtype_);
}
const void* Tensor::raw_data() const {
  check_defined(*this, "Tensor::raw_data", "tensor");
  return static_cast<const char*>(storage_->data()) + offset_ * dtype_size(dtype_);
}

// ---------------------------------------------------------------------------------------------
// views

namespace {
// Resolves one -1 in a target shape against numel n.
Shape infer_shape(const Shape& shape, int64_t n, const char* op, const Shape& from) {
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0) throw Error(op, "at most one -1 in the shape", to_string(shape));
      infer = static_cast<int64_t>(i);
    } else if (s[i] < 0) {
      throw Error(op, "sizes >= 0 (or one -1)", to_string(shape));
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || n % known != 0)
      throw Error(op, "a shape whose -1 can be inferred for " + std::to_string(n) + " elements",
                  to_string(shape));
    s[infer] = n / known;
  }
  if (hla::numel(s) != n)
    throw Error(op, "a shape with " + std::to_string(n) + " elements (from " + to_string(from) + ")",
                to_string(shape));
  return s;
}
}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  check_defined(*this, "view", "tensor");
  const Shape s = infer_shape(shape, numel(), "view", shape_);
  if (!is_contiguous())
    throw Error("view", "a contiguous tensor", "strides " + hla::to_string(strides_),
                "use reshape(), which copies when needed, or call contiguous() first");
  return from_storage(storage_, s, contiguous_strides(s), offset_, dtype_);
}

Tensor Tensor::reshape(const Shape& shape) const {
  check_defined(*this, "reshape", "tensor");
  const Shape s = infer_shape(shape, numel(), "reshape", shape_);
  if (is_contiguous()) return from_storage(storage_, s, contiguous_strides(s), offset_, dtype_);
  return contiguous().view(s);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  if (static_cast<int64_t>(dims.size()) != dim())
    throw Error("permute", std::to_string(dim()) + " dimensions (one per axis)",
                std::to_string(dims.size()));
  Shape s(dims.size()), st(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = wrap_dim(dims[i], dim(), "permute");
    if (seen[d]) throw Error("permute", "each dimension exactly once", "dimension " + std::to_string(d) + " twice");
    seen[d] = true;
    s[i] = shape_[d];
    st[i] = strides_[d];
  }
  return from_storage(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> p(dim());
  for (int64_t i = 0; i < dim(); ++i) p[i] = i;
  std::swap(p[wrap_dim(d0, dim(), "transpose")], p[wrap_dim(d1, dim(), "transpose")]);
  return permute(p);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  const int64_t n = shape_[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  end = std::min(end, n);
  if (step <= 0 || start < 0 || start > n || end < start)
    throw Error("slice", "0 <= start <= end <= " + std::to_string(n) + " and step > 0 on dim " +
                std::to_string(d), "start=" + std::to_string(start) + " end=" + std::to_string(end) +
                " step=" + std::to_string(step));
  Shape s = shape_, st = strides_;
  s[d] = (end - start + step - 1) / step;
  st[d] = strides_[d] * step;
  return from_storage(storage_, s, st, offset_ + start * strides_[d], dtype_);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  if (index < 0) index += shape_[d];
  if (index < 0 || index >= shape_[d])
    throw Error("select", "an index in [0, " + std::to_string(shape_[d]) + ") on dim " +
                std::to_string(d), std::to_string(index));
  Shape s = shape_, st = strides_;
  const int64_t off = offset_ + index * strides_[d];
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return from_storage(storage_, s, st, off, dtype_);
}

Tensor Tensor::expand(const Shape& shape) const {
  if (static_cast<int64_t>(shape.size()) < dim())
    throw Error("expand", "a target of rank >= " + std::to_string(dim()), hla::to_string(shape));
  const size_t lead = shape.size() - shape_.size();
  Shape s(shape.size()), st(shape.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      if (shape[i] < 0) throw Error("expand", "sizes >= 0 for new dimensions", hla::to_string(shape));
      s[i] = shape[i];
      continue;
    }
    const int64_t cur = shape_[i - lead], want = shape[i] == -1 ? cur : shape[i];
    if (cur == want) {
      s[i] = cur;
      st[i] = strides_[i - lead];
    } else if (cur == 1) {
      s[i] = want;
    } else {
      throw Error("expand", "size 1 or " + std::to_string(cur) + " at dim " + std::to_string(i),
                  hla::to_string(shape), "only size-1 dimensions can be broadcast, from " +
                  hla::to_string(shape_));
    }
  }
  return from_storage(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = shape_, st = strides_;
  const int64_t stride = d < dim() ? strides_[d] * shape_[d] : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, stride);
  return from_storage(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  if (shape_[d] != 1)
    throw Error("squeeze", "size 1 at dim " + std::to_string(d), std::to_string(shape_[d]));
  Shape s = shape_, st = strides_;
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return from_storage(storage_, s, st, offset_, dtype_);
}

// ---------------------------------------------------------------------------------------------
// copies

void Tensor::copy_(const Tensor& src) {
  check_defined(*this, "copy_", "destination");
  check_defined(src, "copy_", "source");
  if (src.shape_ != shape_)
    throw Error("copy_", "a source of shape " + hla::to_string(shape_), hla::to_string(src.shape_));
  if (device() == Device::CPU && src.device() == Device::CPU) {
    visit_dtype(dtype_, [&]<class D>() {
      visit_dtype(src.dtype_, [&]<class S>() {
        strided_apply2(shape_, data<D>(), strides_, src.data<S>(), src.strides_,
                       [](D& d, const S& s) { d = convert<D>(s); });
      });
    });
    return;
  }
  if (src.dtype_ != dtype_) return copy_(src.to(dtype_));
  if (device() == src.device()) {  // both on one accelerator: its strided copy
    device_backend(device(), "copy_").copy_within(*this, src);
    return;
  }
  // Across devices: contiguous bytes on both sides, then one transfer.
  const Tensor s = src.contiguous();
  if (!is_contiguous()) {
    Tensor staged = empty(shape_, dtype_, device());
    staged.copy_(s);
    copy_(staged);
    return;
  }
  copy_bytes(raw_data(), device(), s.raw_data(), s.device(),
             static_cast<size_t>(numel()) * dtype_size(dtype_));
}

void Tensor::fill_(double value) {
  check_defined(*this, "fill_", "tensor");
  if (device() != Device::CPU) {
    // On the device, without a host buffer of the tensor's size: +0 into a contiguous tensor is
    // one memset (all-zero bytes in every dtype); other values, or views, are a broadcast copy of
    // one element.
    const DeviceBackend& backend = device_backend(device(), "fill_");
    if (value == 0.0 && !std::signbit(value) && is_contiguous()) {
      if (numel() > 0) backend.fill_zero(raw_data(), static_cast<size_t>(numel()) * dtype_size(dtype_));
      return;
    }
    const Tensor one = Tensor::full({}, value, dtype_).to(device());
    backend.copy_within(*this, one.expand(shape_));
    return;
  }
  visit_dtype(dtype_, [&]<class T>() {
    const T v = convert<T>(value);
    strided_apply1(shape_, data<T>(), strides_, [v](T& x) { x = v; });
  });
}

Tensor Tensor::contiguous() const {
  check_defined(*this, "contiguous", "tensor");
  return is_contiguous() ? *this : clone();
}

Tensor Tensor::clone() const {
  check_defined(*this, "clone", "tensor");
  Tensor t = empty(shape_, dtype_, device());
  t.copy_(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  check_defined(*this, "to", "tensor");
  if (dtype == dtype_) return *this;
  Tensor t = empty(shape_, dtype, device());
  if (device() == Device::CPU)
    t.copy_(*this);
  else
    device_backend(device(), "to").convert(t, *this);  // on the device, no host round trip
  return t;
}

Tensor Tensor::to(Device device) const {
  check_defined(*this, "to", "tensor");
  if (device == this->device()) return *this;
  Tensor t = empty(shape_, dtype_, device);
  t.copy_(*this);
  return t;
}

double Tensor::item() const {
  check_defined(*this, "item", "tensor");
  if (numel() != 1)
    throw Error("item", "a tensor with one element", hla::to_string(shape_) + " (" +
                std::to_string(numel()) + " elements)", "reduce it first, e.g. with sum()");
  return at(Shape(dim(), 0));
}

double Tensor::at(const std::vector<int64_t>& index) const {
  check_defined(*this, "at", "tensor");
  if (static_cast<int64_t>(index.size()) != dim())
    throw Error("at", std::to_string(dim()) + " indices", std::to_string(index.size()));
  if (device() != Device::CPU) return to(Device::CPU).at(index);
  int64_t off = 0;
  for (int64_t i = 0; i < dim(); ++i) {
    if (index[i] < 0 || index[i] >= shape_[i])
      throw Error("at", "index in [0, " + std::to_string(shape_[i]) + ") at dim " + std::to_string(i),
                  std::to_string(index[i]));
    off += index[i] * strides_[i];
  }
  return visit_dtype(dtype_, [&]<class T>() { return convert<double>(data<T>()[off]); });
}

// ---------------------------------------------------------------------------------------------
// checks

void check_defined(const Tensor& t, const char* op, const char* name) {
  if (!t.defined())
    throw Error(op, std::string("a defined tensor for ") + name, "an undefined (empty) Tensor",
                "was a result used before it was computed?");
}
void check_dtype(const Tensor& t, DType dtype, const char* op, const char* name) {
  check_defined(t, op, name);
  if (t.dtype() != dtype)
    throw Error(op, std::string(name) + " of dtype " + dtype_name(dtype), dtype_name(t.dtype()),
                std::string("convert with .to(DType::") + dtype_name(dtype) + ")");
}
void check_floating(const Tensor& t, const char* op, const char* name) {
  check_defined(t, op, name);
  if (t.dtype() != DType::f32 && t.dtype() != DType::f64)
    throw Error(op, std::string(name) + " of dtype f32 or f64", dtype_name(t.dtype()),
                "convert with .to(DType::f32)");
}
void check_shape(const Tensor& t, const Shape& shape, const char* op, const char* name,
                 const char* layout) {
  check_defined(t, op, name);
  if (t.shape() != shape)
    throw Error(op, std::string(name) + " must be " + layout + (layout[0] ? "=" : "") +
                to_string(shape), to_string(t.shape()));
}
void check_rank(const Tensor& t, int64_t rank, const char* op, const char* name,
                const char* layout) {
  check_defined(t, op, name);
  if (t.dim() != rank)
    throw Error(op, std::string(name) + " of rank " + std::to_string(rank) +
                (layout[0] ? std::string(" ") + layout : std::string()), to_string(t.shape()));
}
void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  if (a.device() != b.device())
    throw Error(op, "operands on one device", std::string(device_name(a.device())) + " and " +
                device_name(b.device()), "move one with .to(Device::...)");
}
void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  if (a.dtype() != b.dtype())
    throw Error(op, "operands of one dtype", std::string(dtype_name(a.dtype())) + " and " +
                dtype_name(b.dtype()), "convert one with .to(dtype)");
}
std::vector<int64_t> check_targets(const Tensor& targets, int64_t classes, int64_t ignore_index,
                                   const char* op) {
  check_defined(targets, op, "targets");
  const Tensor host = targets.device() == Device::CPU ? targets : targets.to(Device::CPU);
  std::vector<int64_t> ids = visit_index(host.dtype(), op, [&]<class I>() {
    const std::vector<I> v = host.to_vector<I>();
    return std::vector<int64_t>(v.begin(), v.end());
  });
  for (int64_t v : ids)
    if (v != ignore_index && (v < 0 || v >= classes))
      throw Error(op, "target ids in [0, " + std::to_string(classes) + ") or ignore_index " +
                  std::to_string(ignore_index), std::to_string(v),
                  "is the vocabulary of the data larger than the model's?");
  return ids;
}

DType parse_dtype(const std::string& n) {
  if (n == "f32" || n == "float32" || n == "float") return DType::f32;
  if (n == "f64" || n == "float64" || n == "double") return DType::f64;
  if (n == "bf16" || n == "bfloat16") return DType::bf16;
  if (n == "i32" || n == "int32") return DType::i32;
  if (n == "i64" || n == "int64") return DType::i64;
  throw Error("dtype", "one of f32, f64, bf16, i32, i64", "'" + n + "'");
}
Device parse_device(const std::string& n) {
  if (n == "cpu") return Device::CPU;
  if (n == "cuda") return Device::CUDA;
  throw Error("device", "cpu or cuda", "'" + n + "'");
}

}  // namespace hla
