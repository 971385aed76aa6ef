// checkpoint (checkpoint.h): a Function node whose saved state is its inputs and fn itself.
#include "autograd/checkpoint.h"

#include <string>

#include "autograd/grad_mode.h"
#include "autograd/node.h"

namespace hla {

namespace {

class CheckpointNode final : public Node {
 public:
  // slots[i]: the argument position of edge i (undefined arguments have no edge).
  CheckpointNode(CheckpointFn fn, std::vector<size_t> slots, size_t n_args, const char* name)
      : fn_(std::move(fn)), slots_(std::move(slots)), n_args_(n_args), name_(name) {}
  const char* name() const override { return name_; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    // fn again, recorded, from fresh leaves holding the inputs' data
    std::vector<Var> args(n_args_);
    for (size_t i = 0; i < inputs.size(); ++i)
      args[slots_[i]] = Var(inputs[i].data(), needs_input_grad(i));
    std::vector<Var> outs;
    {
      EnableGradGuard record;
      outs = fn_(args);
    }
    HLA_CHECK(outs.size() == grad_outputs.size(), name_ << ": the second run of fn gave "
                                                        << outs.size() << " outputs, the first "
                                                        << grad_outputs.size());
    std::vector<Var> roots;
    std::vector<Tensor> grads;
    for (size_t o = 0; o < outs.size(); ++o)
      if (grad_outputs[o].defined() && outs[o].requires_grad()) {
        roots.push_back(outs[o]);
        grads.push_back(grad_outputs[o]);
      }
    if (!roots.empty()) hla::backward(roots, grads);
    std::vector<Tensor> gin(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i)
      if (needs_input_grad(i)) gin[i] = args[slots_[i]].grad();
    return gin;
  }
  void release() override { fn_ = nullptr; }  // what fn captured

 private:
  CheckpointFn fn_;
  std::vector<size_t> slots_;
  size_t n_args_;
  const char* name_;
};

}  // namespace

std::vector<Var> checkpoint(CheckpointFn fn, const std::vector<Var>& inputs, const char* name) {
  std::vector<Var> outs;
  {
    NoGradGuard no_graph;
    outs = fn(inputs);
  }
  std::vector<Tensor> data;
  for (size_t o = 0; o < outs.size(); ++o) {
    if (!outs[o].defined())
      throw Error(name, "every output of the checkpointed function defined",
                  "output " + std::to_string(o) + " undefined",
                  "return only the results the caller uses");
    data.push_back(outs[o].data());
  }
  std::vector<Var> edges;
  std::vector<size_t> slots;
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].defined()) {
      edges.push_back(inputs[i]);
      slots.push_back(i);
    }
  return record(
      std::make_shared<CheckpointNode>(std::move(fn), std::move(slots), inputs.size(), name),
      std::move(edges), std::move(data));
}

}  // namespace hla
