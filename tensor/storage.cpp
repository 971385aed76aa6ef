#include "tensor/storage.h"

#include <cstring>
#include <new>

#include "tensor/error.h"

namespace hla {

namespace {
DeviceBackend g_cuda_backend;
bool g_cuda_registered = false;
constexpr std::align_val_t kCpuAlign{64};
}  // namespace

void register_device_backend(Device device, const DeviceBackend& backend) {
  HLA_CHECK(device == Device::CUDA, "only CUDA takes a registered backend");
  g_cuda_backend = backend;
  g_cuda_registered = true;
}

bool device_available(Device device) { return device == Device::CPU || g_cuda_registered; }

const DeviceBackend& device_backend(Device device, const char* op) {
  if (device == Device::CUDA && !g_cuda_registered)
    throw Error(op, "a build with the CUDA backend and a visible GPU",
                "this build has no CUDA device available",
                "build with -DHLA_CUDA=ON on a machine with nvcc and run where a GPU is present, "
                "or use --device cpu");
  HLA_CHECK(device == Device::CUDA, "device_backend is for non-CPU devices");
  return g_cuda_backend;
}

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (nbytes == 0) return;
  if (device == Device::CPU) {
    data_ = ::operator new(nbytes, kCpuAlign);
  } else {
    data_ = device_backend(device, "allocate").allocate(nbytes);
  }
}

Storage::~Storage() {
  if (!data_) return;
  if (device_ == Device::CPU) {
    ::operator delete(data_, kCpuAlign);
  } else if (g_cuda_registered) {
    g_cuda_backend.deallocate(data_);
  }
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device == Device::CPU && src_device == Device::CPU) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  device_backend(Device::CUDA, "copy").copy(dst, dst_device, src, src_device, nbytes);
}

}  // namespace hla
