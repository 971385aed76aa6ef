// A small language-model-like graph (embedding, RMSNorm, SwiGLU MLP, residual, short conv, gated
// RMSNorm, a transposed output projection, cross-entropy, softmax, concat, where, max) run
// forward and backward through autograd on CUDA Vars and on CPU Vars: the loss and every
// parameter gradient are compared by name. Tolerances: f64 1e-9 (a chain of ~20 ops of 1e-12
// kernels), f32 1e-4 (the same chain in single precision).
#include "tests/cuda/cuda_test_helpers.h"
#ifdef HLA_WITH_CUDA
#include "autograd/fused.h"
#include "autograd/primitives.h"
#include "autograd/var.h"
#include "kernels/cuda/ops_cuda.h"

using namespace hla;
using namespace hla::cuda_test;

namespace {

struct Params {
  std::vector<std::pair<const char*, Tensor>> list;
};

// Returns {loss, grads...} of the graph with every tensor on `dev`.
std::vector<Tensor> run_graph(const Params& p, const Tensor& ids, const Tensor& targets,
                              const Tensor& mask, Device dev) {
  std::vector<Var> v;
  for (const auto& [name, t] : p.list) v.emplace_back(t.to(dev), true);
  const Var &emb = v[0], &wn = v[1], &w1 = v[2], &w2 = v[3], &w3 = v[4], &wc = v[5], &wn2 = v[6],
            &wout_t = v[7];
  const Var x = embedding(emb, ids.to(dev));                       // [B,T,D]
  const Var h = rms_norm(x, wn, 1e-6);
  const Var y = x + matmul(swiglu(matmul(h, w1), matmul(h, w2)), w3);
  const Var c = short_conv(y, wc, true);
  const Var g = gated_rms_norm(c, y, wn2, 1e-6);
  const Var logits = reshape(matmul(g, transpose(wout_t, 0, 1)), {-1, wout_t.size(0)});  // [B*T, V]
  Var loss = cross_entropy(logits, targets.to(dev));
  const Var p_sm = softmax(slice(logits, 1, 0, 10));
  loss = loss + mean(p_sm * p_sm);
  loss = loss + mean(exp(concat({x, y}, -1) * 0.1));
  loss = loss + mean(where(mask.to(dev), tanh(x), y));
  const Var m = max(y, {-1});
  loss = loss + sum(m * m) * 0.01;
  loss.backward();
  std::vector<Tensor> out{loss.data()};
  for (const Var& pv : v) {
    const Tensor gr = pv.grad();
    out.push_back(gr.device() == Device::CUDA ? cuda::contiguous(gr) : gr);
  }
  return out;
}

}  // namespace

TEST_CASE("autograd on CUDA Vars matches the CPU on a small LM-like graph", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(61);
  const int64_t B = 2, T = 9, D = 24, F = 32, Vocab = 50, W = 4;
  for (DType dt : {DType::f64, DType::f32}) {
    INFO(dtype_name(dt));
    Params p;
    p.list = {{"emb", Tensor::randn({Vocab, D}, gen, dt)},
              {"norm.w", Tensor::rand({D}, gen, dt, 0.5, 1.5)},
              {"w1", Tensor::randn({D, F}, gen, dt, 0.0, 0.2)},
              {"w2", Tensor::randn({D, F}, gen, dt, 0.0, 0.2)},
              {"w3", Tensor::randn({F, D}, gen, dt, 0.0, 0.2)},
              {"conv.w", Tensor::randn({D, W}, gen, dt, 0.0, 0.5)},
              {"norm2.w", Tensor::rand({D}, gen, dt, 0.5, 1.5)},
              {"out.w", Tensor::randn({Vocab, D}, gen, dt, 0.0, 0.2)}};
    std::vector<double> id_vals, tgt_vals;
    for (int64_t i = 0; i < B * T; ++i) {
      id_vals.push_back(double((i * 17 + 3) % Vocab));
      tgt_vals.push_back(i % 7 == 5 ? -100.0 : double((i * 29 + 1) % Vocab));
    }
    const Tensor ids = Tensor::from_values(id_vals, {B, T}, DType::i64);
    const Tensor targets = Tensor::from_values(tgt_vals, {B * T}, DType::i64);
    const Tensor mask = ops::binary(ops::Binary::Gt, Tensor::rand({B, T, D}, gen, dt, -1.0, 1.0),
                                    Tensor::scalar(0.0, dt));
    const double tol = dt == DType::f64 ? 1e-9 : 1e-4;
    const std::vector<Tensor> ref = run_graph(p, ids, targets, mask, Device::CPU);
    const std::vector<Tensor> out = run_graph(p, ids, targets, mask, Device::CUDA);
    REQUIRE_CLOSE("loss", vals(ref[0]), vals(out[0]), tol);
    for (size_t i = 0; i < p.list.size(); ++i)
      REQUIRE_CLOSE(std::string("d") + p.list[i].first, vals(ref[i + 1]), vals(out[i + 1]), tol);
  }
}
// The backward of a reduction receiving a broadcast (stride-0) gradient reshapes it: a strided
// GPU copy through the backend's copy_within hook.
TEST_CASE("autograd: mean of a reduction on CUDA (strided GPU copies)", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(62);
  const Tensor x = Tensor::randn({3, 5}, gen);
  Var xc(x, true), xg(gpu(x), true);
  mean(max(xc, {-1})).backward();
  mean(max(xg, {-1})).backward();
  REQUIRE_CLOSE("dx", vals(xc.grad()), vals(cuda::contiguous(xg.grad())), kF32);
}
// The head and the loss in chunks (linear_cross_entropy) on CUDA against the CPU: f32 (and
// 1e-5, cuBLAS's f32 products), and bf16 x, W against the CPU in f32 on the same bf16 values
// (the logits and their gradient rounded to bf16: loss 2e-3, gradients 2e-2).
TEST_CASE("cuda linear_cross_entropy matches the CPU in f32 and bf16", "[cuda]") {
  HLA_REQUIRE_GPU();
  Generator gen(61);
  const int64_t N = 300, F = 48, V = 1000;
  const Tensor x = Tensor::randn({N, F}, gen, DType::f32), w = Tensor::randn({V, F}, gen, DType::f32, 0.0, 0.2);
  std::vector<int64_t> t(N);
  for (int64_t i = 0; i < N; ++i) t[i] = i % 7 == 3 ? kIgnoreIndex : (i * 37) % V;
  const Tensor targets = Tensor::from_vector<int64_t>(t, {N});
  for (DType dt : {DType::f32, DType::bf16}) {
    INFO(dtype_name(dt));
    const Tensor xr = x.to(dt).to(DType::f32), wr = w.to(dt).to(DType::f32);
    Var cx(xr, true), cw(wr, true);
    const Var closs = linear_cross_entropy(cx, cw, targets, kIgnoreIndex, 128);
    (closs * 1.5).backward();
    Var gx(xr.to(dt).to(Device::CUDA), true), gw(wr.to(dt).to(Device::CUDA), true);
    const Var gloss = linear_cross_entropy(gx, gw, targets.to(Device::CUDA), kIgnoreIndex, 128);
    (gloss * 1.5).backward();
    REQUIRE(gx.grad().dtype() == dt);
    REQUIRE(gw.grad().dtype() == dt);
    const double tl = dt == DType::f32 ? kF32 : 2e-3, tg = dt == DType::f32 ? kF32 : 2e-2;
    REQUIRE_CLOSE("loss", vals(closs.data()), vals(gloss.data()), tl);
    REQUIRE_CLOSE("dx", vals(cx.grad()), vals(gx.grad()), tg);
    REQUIRE_CLOSE("dW", vals(cw.grad()), vals(gw.grad()), tg);
    // The f32 master weight under bf16 rows: cast inside, dW in f32.
    Var mx(xr.to(dt).to(Device::CUDA), true), mw(wr.to(Device::CUDA), true);
    const Var mloss = linear_cross_entropy(mx, mw, targets.to(Device::CUDA), kIgnoreIndex, 128);
    (mloss * 1.5).backward();
    REQUIRE(mw.grad().dtype() == DType::f32);
    REQUIRE_CLOSE("loss (f32 W)", vals(closs.data()), vals(mloss.data()), tl);
    REQUIRE_CLOSE("dx (f32 W)", vals(cx.grad()), vals(mx.grad()), tg);
    REQUIRE_CLOSE("dW (f32 W)", vals(cw.grad()), vals(mw.grad()), tg);
  }
}

#endif
