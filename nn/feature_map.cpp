#include "nn/feature_map.h"

#include "autograd/composites.h"
#include "autograd/primitives.h"
#include "tensor/error.h"

namespace hla::nn {

bool is_feature_map(const std::string& name) {
  return name == "none" || name == "relu" || name == "silu" || name == "swish" ||
         name == "sigmoid";
}

void check_feature_map(const std::string& key, const std::string& name) {
  if (!is_feature_map(name))
    throw Error(key, "one of none, relu, silu, swish, sigmoid", "\"" + name + "\"",
                "hla builds the elementwise feature maps only (no hedgehog, t2r, dpfp, ...)");
}

Var apply_feature_map(const std::string& name, const Var& x) {
  check_feature_map("feature_map", name);
  if (name == "relu") return relu(x);
  if (name == "silu" || name == "swish") return silu(x);
  if (name == "sigmoid") return sigmoid(x);
  return x;
}

Var elu_p1(const Var& x) { return relu(x) + exp(-relu(-x)); }

}  // namespace hla::nn
