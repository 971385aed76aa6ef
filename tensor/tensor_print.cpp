// Readable printing: nested brackets, at most `max_per_dim` entries per dimension (the first and
// last halves, with "..." between), then the shape, dtype and device.
//
//   tensor([[ 0.1234, -1.5000],
//           [ 2.0000,  0.0000]], shape=[2, 2], f32, cpu)
#include <cstdio>
#include <ostream>

#include "tensor/tensor.h"

namespace hla {

namespace {
void print_rec(std::string& out, const Tensor& t, int64_t max_per_dim, int indent) {
  char buf[64];
  if (t.dim() == 0) {
    const double v = t.item();
    if (is_floating(t.dtype()))
      std::snprintf(buf, sizeof buf, "% .4g", v);
    else
      std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
    out += buf;
    return;
  }
  const int64_t n = t.size(0);
  out += "[";
  for (int64_t i = 0; i < n; ++i) {
    if (n > max_per_dim && i == max_per_dim / 2) {
      out += t.dim() > 1 ? "...,\n" + std::string(indent + 1, ' ') : "..., ";
      i = n - max_per_dim / 2;
    }
    print_rec(out, t.select(0, i), max_per_dim, indent + 1);
    if (i + 1 < n) out += t.dim() > 1 ? ",\n" + std::string(indent + 1, ' ') : ", ";
  }
  out += "]";
}
}  // namespace

std::string Tensor::to_string(int64_t max_per_dim) const {
  if (!defined()) return "tensor(undefined)";
  const Tensor host = to(Device::CPU);
  std::string out = "tensor(";
  print_rec(out, host, max_per_dim, 7);
  out += ", shape=" + hla::to_string(shape_) + ", " + dtype_name(dtype_) + ", " +
         device_name(device()) + ")";
  return out;
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

}  // namespace hla
