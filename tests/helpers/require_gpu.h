// HLA_REQUIRE_GPU(): the first statement of a test that needs a visible GPU. On a machine without
// one (CPU-only CI) it prints "no CUDA device: skipping" as a Catch2 warning and returns, so the
// test passes.
#pragma once

#include <catch2/catch.hpp>

#include "tensor/storage.h"

#define HLA_REQUIRE_GPU()                                  \
  do {                                                     \
    if (!::hla::device_available(::hla::Device::CUDA)) {   \
      WARN("no CUDA device: skipping");                    \
      return;                                              \
    }                                                      \
  } while (0)
