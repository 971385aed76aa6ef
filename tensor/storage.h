// Storage: a reference-counted block of bytes on one device. Tensors are views into a Storage.
//
// CPU bytes come from 64-byte aligned operator new. CUDA bytes come from the allocator that the
// CUDA backend registers at start-up (register_device_backend); a build without it throws a
// clear hla::Error when a CUDA tensor is asked for. Copies between devices go through the same
// backend.
#pragma once

#include <cstddef>
#include <memory>

#include "tensor/device.h"

namespace hla {

class Tensor;

// What a non-CPU device must provide. Installed once by that device's backend.
struct DeviceBackend {
  void* (*allocate)(size_t nbytes) = nullptr;
  void (*deallocate)(void* ptr) = nullptr;
  // Copies nbytes between any two devices (at least one of them this backend's).
  void (*copy)(void* dst, Device dst_device, const void* src, Device src_device,
               size_t nbytes) = nullptr;
  void (*fill_zero)(void* dst, size_t nbytes) = nullptr;
  // dst = src for two tensors on this device of one shape and dtype, any strides.
  void (*copy_within)(Tensor& dst, const Tensor& src) = nullptr;
  // dst = src converted to dst's dtype, for two tensors on this device of one shape, any dtypes
  // and strides; values convert as tensor/dtype_dispatch.h's convert<To>(from) does.
  void (*convert)(Tensor& dst, const Tensor& src) = nullptr;
};
void register_device_backend(Device device, const DeviceBackend& backend);
// The registered backend; throws hla::Error naming `op` if this build has none for `device`.
const DeviceBackend& device_backend(Device device, const char* op);
bool device_available(Device device);

class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
};

// Copies bytes between devices (CPU<->CPU is memcpy).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);

}  // namespace hla
