// Mixed precision on CUDA: f32 master weights, bf16 activations and matrix products, f32
// accumulation (nn/model.h, autograd to_dtype, the recurrence nodes' bf16 path).
//
//   1. to_dtype on the GPU: bf16 values rounded to nearest even (the host's bits), the gradient
//      back in f32. Exact.
//   2. Every recurrence and attention node on bf16 inputs against the same op on the CPU in f32
//      on the same bf16-rounded inputs, both tiers (T = 40 step-by-step, T = 100 chunked), h0
//      and hT included: outputs and input gradients by name, relative RMS 1e-2. The nodes run
//      the f32 kernels on f32 copies, so the only difference is the final rounding to bf16
//      (2^-9 relative per element at most, ~1.1e-3 RMS) plus the f32 GPU/CPU difference
//      (~1e-5); a state or sum kept in bf16 over T = 100 steps would drift past 1e-2.
//   3. A tiny HybridLM of every variant (and a GLA 3:1 hybrid; one T = 32 case for the
//      step-by-step kernels) trained 20 AdamW steps in bf16 and in fp32 on the GPU from the
//      same init on the same batches:
//        step-1 loss: relative 5e-3. From equal parameters only the activations' rounding
//          differs (2^-9 relative per element, averaging out over B*T*vocab logits: ~1e-4
//          expected); and the two must differ, or the bf16 path did not run.
//        later losses: relative 2e-2 per step. AdamW moves each parameter by up to lr = 1e-3 a
//          step whatever the gradient's size, so near-zero gradients whose sign the rounding
//          flips separate the runs by up to 2 lr per step; over 20 steps that stays well under
//          2% of a loss near log(64) = 4.2, while a wrong cast or a bf16-accumulated reduction
//          shows at step 1.
//        step-1 gradients, measured on an H200: global norm within 0.5%, every parameter's
//          gradient within 2-7% relative RMS, the 2-element decay parameters of Gated DeltaNet
//          (A_log, dt_bias: sums over all positions of terms of both signs) up to 28%. That is
//          rounding, amplified by cancellation: the same models computing in f64 against f32
//          on the CPU (tests/nn/test_precision.cpp) differ by a median 7.8e-7 and at most
//          6.5e-6, 13x and 110x f32's unit roundoff 6e-8; scaled to bf16's 2^-9 that predicts
//          2.5% and 21%. Bounds: global norm 5e-2; all gradients as one vector 0.15 relative
//          RMS; each parameter 0.5. A wrong cast or kernel gives errors of order 1 in the
//          parameters it feeds.
//        every parameter and gradient stays f32 on the GPU, the logits and the loss are f32.
//   4. Pure bf16 (train.precision = "pure_bf16"): the same tiny models with their parameters
//      converted to bf16 (Module::to), so the compute dtype follows them, against fp32 from the
//      same init, 10 AdamW steps at lr = 1e-2 on one fixed batch (memorised: fp32's loss falls
//      from ~4.3 to 0.7-2.0 on the CPU):
//        step-1 loss: relative 5e-3, and not equal. The parameters' bf16 rounding (2^-9
//          relative per element, as the activations') adds to the activations' own; both
//          average out over B*T*vocab logits.
//        step-1 gradient norm: relative 5e-2, the mixed-precision bound above.
//        the loss falls at least half as far as fp32's over the 10 steps. bf16 parameters lose
//          updates below half a bf16 step (2^-9 of the weight); AdamW's steps of up to lr = 1e-2
//          exceed that for weights of ~0.1 and for the norm weights' 1, so most survive.
//        every parameter, gradient and AdamW moment is bf16 on the GPU; the loss is f32.
#include "tests/cuda/cuda_test_helpers.h"
#ifdef HLA_WITH_CUDA

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "autograd/primitives.h"
#include "autograd/recurrences.h"
#include "kernels/cuda/ops_cuda.h"
#include "tests/cuda/tiny_training.h"

using namespace hla;
using namespace hla::cuda_test;

namespace {

constexpr double kBf16Node = 1e-2;
constexpr double kFirstLossTol = 5e-3;
constexpr double kLossTol = 2e-2;
constexpr double kGradNormTol = 5e-2;
constexpr double kAllGradsTol = 0.15;
constexpr double kParamGradTol = 0.5;
constexpr int kSteps = 20;
constexpr double kLr = 1e-3;

// t rounded to bf16 and back: values that f32 and bf16 hold exactly, so both runs see them.
Tensor bf16_exact(const Tensor& t) { return t.to(DType::bf16).to(DType::f32); }

// Natural-log decays in [-0.3, -0.02]: forgetting within tens of steps, as trained gates do.
Tensor log_decays(const Shape& shape, Generator& gen) {
  return ops::mul_scalar(Tensor::rand(shape, gen, DType::f32, 0.02, 0.3), -1.0);
}

// ---- 2. the recurrence and attention nodes on bf16 inputs

using NodeOp = std::function<std::vector<Var>(const std::vector<Var>&)>;

// Runs `op` on CPU f32 copies of `inputs` (the reference) and on CUDA bf16 copies; compares
// every output and every input gradient by name, with random bf16-exact output gradients.
void check_bf16_node(const std::string& op_name, const NodeOp& op,
                     const std::vector<std::string>& input_names,
                     const std::vector<std::string>& output_names,
                     const std::vector<Tensor>& inputs, Generator& gen) {
  INFO(op_name);
  std::vector<Var> ref_in, in;
  for (const Tensor& t : inputs) {
    const Tensor exact = bf16_exact(t);
    ref_in.emplace_back(exact, /*requires_grad=*/true);
    in.emplace_back(gpu(exact).to(DType::bf16), /*requires_grad=*/true);
  }
  const std::vector<Var> ref_out = op(ref_in), out = op(in);
  REQUIRE(out.size() == output_names.size());
  REQUIRE(ref_out.size() == output_names.size());
  Var ref_loss, loss;
  for (size_t i = 0; i < out.size(); ++i) {
    REQUIRE(out[i].dtype() == DType::bf16);
    REQUIRE(out[i].device() == Device::CUDA);
    REQUIRE_CLOSE(op_name + " " + output_names[i], vals(ref_out[i].data()),
                  vals(out[i].data()), kBf16Node);
    const Tensor cotangent = bf16_exact(Tensor::randn(ref_out[i].shape(), gen));
    const Var r = sum(ref_out[i] * Var(cotangent));
    const Var b = sum(to_dtype(out[i], DType::f32) * Var(gpu(cotangent)));
    ref_loss = ref_loss.defined() ? ref_loss + r : r;
    loss = loss.defined() ? loss + b : b;
  }
  ref_loss.backward();
  loss.backward();
  for (size_t i = 0; i < in.size(); ++i) {
    REQUIRE(in[i].grad().dtype() == DType::bf16);
    REQUIRE(in[i].grad().device() == Device::CUDA);
    REQUIRE_CLOSE(op_name + " d" + input_names[i], vals(ref_in[i].grad()), vals(in[i].grad()),
                  kBf16Node);
  }
}

// ---- 3. training in bf16 against fp32

void train_fp32_and_bf16(const TrainCase& c) {
  INFO(c.variant << " " << c.layout << " L=" << c.num_layers << " T=" << c.T);
  const nn::ModelConfig config = tiny_config(c);
  Generator init_fp32(42), init_bf16(42);
  nn::HybridLM fp32(config, init_fp32), bf16(config, init_bf16);
  fp32.to(Device::CUDA);
  bf16.to(Device::CUDA);
  bf16.set_compute_dtype(DType::bf16);
  REQUIRE(bf16.compute_dtype() == DType::bf16);
  REQUIRE(fp32.compute_dtype() == DType::f32);
  const auto named_fp32 = fp32.named_parameters(), named_bf16 = bf16.named_parameters();
  REQUIRE(named_fp32.size() == named_bf16.size());

  optim::AdamW opt_fp32 = tiny_adamw(fp32), opt_bf16 = tiny_adamw(bf16);
  const std::vector<Var> params_fp32 = fp32.parameters(), params_bf16 = bf16.parameters();
  std::mt19937 rng(7);
  for (int step = 0; step < kSteps; ++step) {
    INFO("step " << step + 1);
    const auto [inputs, targets] = token_batch(rng, c.T);
    const StepResult r = train_step(fp32, opt_fp32, params_fp32, inputs, targets, Device::CUDA);
    const StepResult m = train_step(bf16, opt_bf16, params_bf16, inputs, targets, Device::CUDA);
    INFO("loss fp32 " << r.loss << " bf16 " << m.loss << "; grad norm fp32 " << r.grad_norm
                      << " bf16 " << m.grad_norm);
    REQUIRE(std::isfinite(m.loss));
    const double loss_tol = step == 0 ? kFirstLossTol : kLossTol;
    REQUIRE(std::abs(m.loss - r.loss) <= loss_tol * std::abs(r.loss));
    if (step == 0) {
      REQUIRE(m.loss != r.loss);  // bf16 rounding moved it: the bf16 path ran
      REQUIRE(std::abs(m.grad_norm - r.grad_norm) <= kGradNormTol * r.grad_norm);
      // Every parameter's report (printed on failure), then the bounds.
      double worst = 0.0;
      std::vector<double> all_fp32, all_bf16;
      std::string reports;
      for (size_t i = 0; i < named_bf16.size(); ++i) {
        const auto& [name, p] = named_bf16[i];
        REQUIRE(p.grad().dtype() == DType::f32);
        REQUIRE(p.grad().device() == Device::CUDA);
        const std::vector<double> ref = vals(named_fp32[i].second.grad()), out = vals(p.grad());
        const auto rep = hla::test::close_report(ref, out);
        REQUIRE(rep.finite);
        worst = std::max(worst, rep.rel_rms);
        reports += rep.describe("grad " + name) + "\n";
        all_fp32.insert(all_fp32.end(), ref.begin(), ref.end());
        all_bf16.insert(all_bf16.end(), out.begin(), out.end());
      }
      INFO(reports);
      REQUIRE_CLOSE("all gradients", all_fp32, all_bf16, kAllGradsTol);
      REQUIRE(worst <= kParamGradTol);
    }
    opt_fp32.step(kLr);
    opt_bf16.step(kLr);
  }
  for (const auto& [name, p] : named_bf16) {
    INFO(name);
    REQUIRE(p.dtype() == DType::f32);  // the master weights, updated in f32
    REQUIRE(p.device() == Device::CUDA);
  }
}

// ---- 4. pure bf16 training against fp32

constexpr int kPureSteps = 10;
constexpr double kPureLr = 1e-2;

void train_fp32_and_pure_bf16(const TrainCase& c) {
  INFO(c.variant << " " << c.layout << " L=" << c.num_layers << " T=" << c.T);
  const nn::ModelConfig config = tiny_config(c);
  Generator init_fp32(42), init_pure(42);
  nn::HybridLM fp32(config, init_fp32), pure(config, init_pure);
  fp32.to(Device::CUDA);
  pure.to(Device::CUDA);
  pure.to(DType::bf16);
  REQUIRE(pure.compute_dtype() == DType::bf16);  // by default: the parameters' dtype
  const auto named_pure = pure.named_parameters();

  optim::AdamW opt_fp32 = tiny_adamw(fp32), opt_pure = tiny_adamw(pure);
  for (const auto& [name, t] : opt_pure.state()) {
    INFO(name);
    REQUIRE(t.dtype() == DType::bf16);
    REQUIRE(t.device() == Device::CUDA);
  }
  const std::vector<Var> params_fp32 = fp32.parameters(), params_pure = pure.parameters();
  std::mt19937 rng(7);
  const auto [inputs, targets] = token_batch(rng, c.T);
  double first_fp32 = 0, first_pure = 0, last_fp32 = 0, last_pure = 0;
  for (int step = 0; step < kPureSteps; ++step) {
    INFO("step " << step + 1);
    const StepResult r = train_step(fp32, opt_fp32, params_fp32, inputs, targets, Device::CUDA);
    const StepResult m = train_step(pure, opt_pure, params_pure, inputs, targets, Device::CUDA);
    INFO("loss fp32 " << r.loss << " pure bf16 " << m.loss << "; grad norm fp32 " << r.grad_norm
                      << " pure bf16 " << m.grad_norm);
    REQUIRE(std::isfinite(m.loss));
    REQUIRE(std::isfinite(m.grad_norm));
    if (step == 0) {
      first_fp32 = r.loss, first_pure = m.loss;
      REQUIRE(std::abs(m.loss - r.loss) <= kFirstLossTol * std::abs(r.loss));
      REQUIRE(m.loss != r.loss);  // bf16 rounding moved it: the bf16 path ran
      REQUIRE(std::abs(m.grad_norm - r.grad_norm) <= kGradNormTol * r.grad_norm);
      for (const auto& [name, p] : named_pure) {
        INFO(name);
        REQUIRE(p.grad().defined());
        REQUIRE(p.grad().dtype() == DType::bf16);
        REQUIRE(p.grad().device() == Device::CUDA);
      }
    }
    last_fp32 = r.loss, last_pure = m.loss;
    opt_fp32.step(kPureLr);
    opt_pure.step(kPureLr);
  }
  INFO("loss fp32 " << first_fp32 << " -> " << last_fp32 << ", pure bf16 " << first_pure << " -> "
                    << last_pure);
  REQUIRE(first_fp32 - last_fp32 > 0.5);  // the batch is memorised
  REQUIRE(first_pure - last_pure >= 0.5 * (first_fp32 - last_fp32));
  for (const auto& [name, p] : named_pure) {
    INFO(name);
    REQUIRE(p.dtype() == DType::bf16);  // updated in place, still bf16
    REQUIRE(p.device() == Device::CUDA);
  }
  for (const auto& [name, t] : opt_pure.state()) {
    INFO(name);
    REQUIRE(t.dtype() == DType::bf16);
  }
}

}  // namespace

TEST_CASE("cuda to_dtype: bf16 values, the gradient back in f32", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(1);
  const Tensor x_host = Tensor::randn({5, 7}, gen), w_host = Tensor::randn({5, 7}, gen);
  const Var x(gpu(x_host), /*requires_grad=*/true);
  const Var y = to_dtype(x, DType::bf16);
  REQUIRE(y.dtype() == DType::bf16);
  REQUIRE(y.device() == Device::CUDA);
  CHECK(vals(y.data()) == vals(x_host.to(DType::bf16)));  // round to nearest even on both
  sum(to_dtype(y, DType::f32) * Var(gpu(w_host))).backward();
  REQUIRE(x.grad().dtype() == DType::f32);
  REQUIRE(x.grad().device() == Device::CUDA);
  CHECK(vals(x.grad()) == vals(bf16_exact(w_host)));  // w, through the bf16 cast's backward
}

TEST_CASE("cuda recurrence and attention nodes on bf16 inputs match f32 on the CPU", "[cuda]") {
  HLA_REQUIRE_GPU();
  cuda::set_tf32(false);
  Generator gen(23);
  const int64_t B = 2, H = 2, K = 16, V = 12, D = 24;
  const std::vector<std::string> oh = {"o", "hT"};
  for (const int64_t T : {40, 100}) {  // Impl::Auto: step-by-step, then chunked
    INFO("T=" << T);
    const Tensor q = Tensor::randn({B, T, H, K}, gen), k = Tensor::randn({B, T, H, K}, gen);
    const Tensor v = Tensor::randn({B, T, H, V}, gen);
    const Tensor h0 = ops::mul_scalar(Tensor::randn({B, H, K, V}, gen), 0.5);
    const Tensor gk = log_decays({B, T, H, K}, gen), g = log_decays({B, T, H}, gen);
    const Tensor beta = Tensor::rand({B, T, H}, gen, DType::f32, 0.1, 0.9);
    check_bf16_node(
        "gla", [](const std::vector<Var>& x) {
          const auto r = gla(x[0], x[1], x[2], x[3], x[4]);
          return std::vector<Var>{r.o, r.hT};
        },
        {"q", "k", "v", "gk", "h0"}, oh, {q, k, v, gk, h0}, gen);
    check_bf16_node(
        "simple_gla", [](const std::vector<Var>& x) {
          const auto r = simple_gla(x[0], x[1], x[2], x[3], x[4]);
          return std::vector<Var>{r.o, r.hT};
        },
        {"q", "k", "v", "g", "h0"}, oh, {q, k, v, g, h0}, gen);
    check_bf16_node(
        "retention", [](const std::vector<Var>& x) {
          const auto r = retention(x[0], x[1], x[2], x[3]);
          return std::vector<Var>{r.o, r.hT};
        },
        {"q", "k", "v", "h0"}, oh, {q, k, v, h0}, gen);
    check_bf16_node(
        "delta_rule", [](const std::vector<Var>& x) {
          const auto r = delta_rule(x[0], x[1], x[2], x[3], x[4], {.l2norm_qk = true});
          return std::vector<Var>{r.o, r.hT};
        },
        {"q", "k", "v", "beta", "h0"}, oh, {q, k, v, beta, h0}, gen);
    check_bf16_node(
        "gated_delta_rule", [](const std::vector<Var>& x) {
          const auto r = gated_delta_rule(x[0], x[1], x[2], x[3], x[4], x[5], {.l2norm_qk = true});
          return std::vector<Var>{r.o, r.hT};
        },
        {"q", "k", "v", "g", "beta", "h0"}, oh, {q, k, v, g, beta, h0}, gen);
    check_bf16_node(
        "hgrn", [](const std::vector<Var>& x) {
          const auto r = hgrn(x[0], x[1], x[2]);
          return std::vector<Var>{r.o, r.hT};
        },
        {"x", "g", "h0"}, oh,
        {Tensor::randn({B, T, D}, gen), log_decays({B, T, D}, gen), Tensor::randn({B, D}, gen)},
        gen);
    // GQA: 4 query heads on 2 kv heads; causal, then a window.
    const Tensor aq = Tensor::randn({B, T, 4, K}, gen), ak = Tensor::randn({B, T, 2, K}, gen);
    const Tensor av = Tensor::randn({B, T, 2, V}, gen);
    for (const int64_t window : {int64_t{0}, int64_t{17}})
      check_bf16_node(
          "softmax_attention window " + std::to_string(window),
          [window](const std::vector<Var>& x) {
            return std::vector<Var>{softmax_attention(x[0], x[1], x[2], {.window = window})};
          },
          {"q", "k", "v"}, {"o"}, {aq, ak, av}, gen);
  }
}

// Mixed precision (bf16) and pure bf16 against fp32 from the same initialisation.
TEST_CASE("cuda bf16 and pure bf16 training follow fp32: every variant, chunked kernels (T = 128)",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  cuda::set_tf32(false);
  for (const char* variant :
       {"gla", "hgrn", "hgrn2", "retnet", "delta_net", "gated_deltanet", "transformer"}) {
    SECTION(variant) {
      train_fp32_and_bf16({variant, "pure", 2, 128});
      train_fp32_and_pure_bf16({variant, "pure", 2, 128});
    }
  }
}

TEST_CASE("cuda bf16 and pure bf16 training follow fp32: GLA 3:1 hybrid (T = 128)", "[cuda]") {
  HLA_REQUIRE_GPU();
  cuda::set_tf32(false);
  train_fp32_and_bf16({"gla", "3:1", 4, 128});
  train_fp32_and_pure_bf16({"gla", "3:1", 4, 128});
}

TEST_CASE("cuda bf16 and pure bf16 training follow fp32: recurrent kernels (gated_deltanet, T=32)",
          "[cuda]") {
  HLA_REQUIRE_GPU();
  cuda::set_tf32(false);
  train_fp32_and_bf16({"gated_deltanet", "pure", 2, 32});
  train_fp32_and_pure_bf16({"gated_deltanet", "pure", 2, 32});
}

#endif  // HLA_WITH_CUDA
