// defines: parameters_device, the one device that all parameters of an optimizer or of gradient
// clipping live on. The optimizers and clip_grad_norm run their CPU loops or their CUDA kernels
// (kernels/cuda/optim_cuda.h) by it; parameters spread over several devices are a user error.
//
//   const Device device = parameters_device(model.parameters(), "adamw");
#pragma once

#include <vector>

#include "autograd/var.h"

namespace hla::optim {

// The device of every Var in `params` (CPU for an empty list). Throws hla::Error naming the op
// when two parameters live on different devices.
Device parameters_device(const std::vector<Var>& params, const char* op);

}  // namespace hla::optim
