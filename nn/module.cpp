#include "nn/module.h"

#include <set>

namespace hla::nn {

Var Module::register_parameter(const std::string& name, Tensor value) {
  Var v(std::move(value), true);
  params_.emplace_back(name, v);
  return v;
}

void Module::collect(const std::string& prefix,
                     std::vector<std::pair<std::string, Var>>& out) const {
  for (const auto& [n, v] : params_) out.emplace_back(prefix + n, v);
  for (const auto& [n, m] : children_) m->collect(prefix + n + ".", out);
}

std::vector<std::pair<std::string, Var>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Var>> out;
  collect("", out);
  return out;
}

std::vector<Var> Module::parameters() const {
  std::vector<Var> out;
  for (auto& [n, v] : named_parameters()) out.push_back(v);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, v] : named_parameters()) n += v.numel();
  return n;
}

void Module::to(DType dtype) {
  for (auto& [n, v] : named_parameters()) v.mutable_data() = v.data().to(dtype);
}

void Module::to(Device device) {
  for (auto& [n, v] : named_parameters()) v.mutable_data() = v.data().to(device);
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, m] : children_) m->train(on);
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& [n, v] : named_parameters()) out[n] = v.data();
  return out;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  auto params = named_parameters();
  std::set<std::string> known;
  std::string missing, mismatched;
  for (auto& [n, v] : params) {
    known.insert(n);
    auto it = state.find(n);
    if (it == state.end()) {
      missing += (missing.empty() ? "" : ", ") + n;
      continue;
    }
    if (it->second.shape() != v.shape()) {
      mismatched += (mismatched.empty() ? "" : ", ") + n + " (expected " + to_string(v.shape()) +
                    ", got " + to_string(it->second.shape()) + ")";
      continue;
    }
  }
  std::string unknown;
  for (auto& [n, t] : state)
    if (!known.count(n)) unknown += (unknown.empty() ? "" : ", ") + n;
  if (!mismatched.empty())
    throw Error("load_state_dict", "parameters of the model's shapes", mismatched,
                "was the checkpoint made with another config?");
  if (strict && (!missing.empty() || !unknown.empty()))
    throw Error("load_state_dict", "exactly the model's parameters",
                (missing.empty() ? "" : "missing: " + missing) +
                    (unknown.empty() ? "" : std::string(missing.empty() ? "" : "; ") + "unknown: " + unknown),
                "was the checkpoint made with another variant or layout?");
  for (auto& [n, v] : params) {
    auto it = state.find(n);
    if (it != state.end()) v.mutable_data().copy_(it->second);
  }
}

}  // namespace hla::nn
