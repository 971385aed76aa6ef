#include "optim/device.h"

#include <string>

#include "tensor/error.h"

namespace hla::optim {

Device parameters_device(const std::vector<Var>& params, const char* op) {
  if (params.empty()) return Device::CPU;
  const Device device = params.front().data().device();
  for (size_t i = 1; i < params.size(); ++i)
    if (params[i].data().device() != device)
      throw Error(op, std::string("all parameters on one device (") + device_name(device) + ")",
                  std::string("parameter ") + std::to_string(i) + " on " +
                      device_name(params[i].data().device()),
                  "move the whole model to one device before building the optimizer");
  return device;
}

}  // namespace hla::optim
