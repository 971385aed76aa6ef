// Device: where a tensor's bytes live. Storage owns bytes on one device; CPU memory is allocated
// here, CUDA memory by the allocator the CUDA backend registers (tensor/storage.h).
#pragma once

#include <string>

namespace hla {

enum class Device : uint8_t { CPU, CUDA };

inline const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }
// Parses "cpu" or "cuda"; throws hla::Error otherwise.
Device parse_device(const std::string& name);

}  // namespace hla
