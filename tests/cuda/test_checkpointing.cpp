// Activation checkpointing on the GPU (HybridLM::set_block_checkpointing): a tiny HybridLM of every
// variant and a GLA 3:1 hybrid, f32 and bf16 compute, one forward + backward with and without block
// checkpointing from the same init on the same batch. The recomputation runs the same deterministic
// kernels on the same inputs, so the loss and every parameter's gradient agree to rounding:
// relative RMS 1e-6 in f32, 1e-3 in bf16 (an order-dependent bf16 rounding would show as ~4e-3 on
// single elements, a lost gradient path as O(1)).
#include "tests/cuda/cuda_test_helpers.h"
#ifdef HLA_WITH_CUDA
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/ops_cuda.h"
#include "tests/cuda/tiny_training.h"

using namespace hla;
using namespace hla::cuda_test;

namespace {

// The loss and the parameters' gradients (on the host) of one step on `device`.
std::vector<std::pair<std::string, Tensor>> one_step(const TrainCase& c, DType compute,
                                                     bool checkpointing) {
  Generator init(42);
  nn::HybridLM model(tiny_config(c), init);
  model.to(Device::CUDA);
  model.set_compute_dtype(compute);
  model.set_block_checkpointing(checkpointing);
  std::mt19937 rng(7);
  const auto [inputs, targets] = token_batch(rng, c.T);
  const Var loss = model.loss(inputs.to(Device::CUDA), targets.to(Device::CUDA));
  loss.backward();
  std::vector<std::pair<std::string, Tensor>> out{{"loss", loss.data().to(Device::CPU)}};
  for (const auto& [name, p] : model.named_parameters())
    out.emplace_back("grad " + name, p.grad().to(Device::CPU));
  return out;
}

}  // namespace

TEST_CASE("cuda block checkpointing leaves the loss and every gradient unchanged", "[cuda]") {
  HLA_REQUIRE_GPU();
  cuda::set_tf32(false);
  for (const TrainCase& c :
       {TrainCase{"gla", "pure", 2, 128}, TrainCase{"hgrn", "pure", 2, 128},
        TrainCase{"hgrn2", "pure", 2, 128}, TrainCase{"retnet", "pure", 2, 128},
        TrainCase{"delta_net", "pure", 2, 128}, TrainCase{"gated_deltanet", "pure", 2, 128},
        TrainCase{"transformer", "pure", 2, 128}, TrainCase{"gla", "3:1", 4, 128}})
    for (DType compute : {DType::f32, DType::bf16}) {
      INFO(c.variant << " " << c.layout << " " << dtype_name(compute));
      const auto plain = one_step(c, compute, false), kept = one_step(c, compute, true);
      REQUIRE(plain.size() == kept.size());
      for (size_t i = 0; i < plain.size(); ++i) {
        REQUIRE(kept[i].second.defined());
        REQUIRE_CLOSE(plain[i].first, vals(plain[i].second), vals(kept[i].second),
                      compute == DType::f32 ? 1e-6 : 1e-3);
      }
    }
}

#endif  // HLA_WITH_CUDA
