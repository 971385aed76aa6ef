// hla op: runs one recurrence op on tensors from an HDF5 file and writes its outputs and, given
// output gradients, the gradients of every input. For checking hla against fla or numpy:
//
//   hla op --op gla --impl chunk --in case.h5 --out result.h5 [--device cpu|cuda]
//
// --device cuda moves the inputs (and output gradients) to the GPU, so the op and its backward
// run there (the CUDA kernels of the chosen tier); results come back to the host for writing.
//
// IN.h5:  in/<input> (the op's inputs, below; h0 optional), optionally dout/0 (do), dout/1 (dhT)
// OUT.h5: out/0 (o), out/1 (hT; not for softmax_attention), grad/<input> when dout/0 is given.
// OUT.h5 is written to a temporary file and renamed when complete.
#include <CLI/CLI.hpp>
#include <map>

#include "autograd/grad_mode.h"
#include "autograd/primitives.h"
#include "autograd/recurrences.h"
#include "data/hdf5.h"
#include "data/pending_file.h"
#include "experiments/cli/commands.h"
#include "experiments/cli/tensor_h5.h"
#include "tensor/storage.h"

namespace hla::cli {

namespace {

struct OpSpec {
  std::vector<std::string> inputs;  // required, in call order
  bool takes_h0 = true;
};

const std::map<std::string, OpSpec>& op_table() {
  static const std::map<std::string, OpSpec> table = {
      {"hgrn", {{"x", "g"}}},
      {"gla", {{"q", "k", "v", "gk"}}},
      {"retention", {{"q", "k", "v"}}},
      {"simple_gla", {{"q", "k", "v", "g"}}},
      {"delta_rule", {{"q", "k", "v", "beta"}}},
      {"gated_delta_rule", {{"q", "k", "v", "g", "beta"}}},
      {"softmax_attention", {{"q", "k", "v"}, false}},
  };
  return table;
}

struct OpArgs {
  std::string op, impl = "chunk", in, out, dtype, device = "cpu";
  double scale = 0;
  int64_t window = 0;
  bool l2norm_qk = false, non_causal = false;
};

std::string op_names() {
  std::string s;
  for (auto& [n, spec] : op_table()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// Calls the op; returns {o, hT} (hT undefined for attention).
std::pair<Var, Var> call_op(const OpArgs& a, const std::map<std::string, Var>& x) {
  auto in = [&](const char* n) { return x.count(n) ? x.at(n) : Var(); };
  if (a.op == "softmax_attention") {
    if (a.impl != "reference" && a.impl != "tiled")
      throw Error("hla op", "--impl reference or tiled for softmax_attention", a.impl);
    AttentionOptions o;
    o.causal = !a.non_causal;
    o.window = a.window;
    o.scale = a.scale;
    o.reference = a.impl == "reference";
    return {softmax_attention(in("q"), in("k"), in("v"), o), Var()};
  }
  if (a.impl == "tiled") throw Error("hla op", "--impl reference, recurrent or chunk", "tiled",
                                     "tiled is softmax_attention's kernel");
  const Impl impl = parse_impl(a.impl);
  const RecurrenceOptions opt{impl, a.scale, a.l2norm_qk};
  RecurrenceResult r;
  if (a.op == "hgrn") r = hgrn(in("x"), in("g"), in("h0"), impl);
  else if (a.op == "gla") r = gla(in("q"), in("k"), in("v"), in("gk"), in("h0"), opt);
  else if (a.op == "retention") r = retention(in("q"), in("k"), in("v"), in("h0"), opt);
  else if (a.op == "simple_gla") r = simple_gla(in("q"), in("k"), in("v"), in("g"), in("h0"), opt);
  else if (a.op == "delta_rule") r = delta_rule(in("q"), in("k"), in("v"), in("beta"), in("h0"), opt);
  else r = gated_delta_rule(in("q"), in("k"), in("v"), in("g"), in("beta"), in("h0"), opt);
  return {r.o, r.hT};
}

Device parse_op_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name != "cuda") throw Error("hla op", "--device cpu or cuda", "'" + name + "'");
  if (!device_available(Device::CUDA))
    throw Error("hla op", "a build with the CUDA backend and a visible GPU for --device cuda",
                "no CUDA device available",
                "configure with -DHLA_CUDA=ON on a machine with nvcc and a GPU, or use --device cpu");
  return Device::CUDA;
}

void run_op(const OpArgs& a) {
  data::h5::silence_hdf5_errors();
  const Device device = parse_op_device(a.device);
  auto it = op_table().find(a.op);
  if (it == op_table().end()) throw Error("hla op", "--op one of " + op_names(), "'" + a.op + "'");
  const OpSpec& spec = it->second;
  if (H5Fis_hdf5(a.in.c_str()) <= 0)
    throw Error("hla op", "--in an HDF5 file", "'" + a.in + "'", "does it exist? write it with h5py");
  data::h5::Handle file(H5_CHECK(H5Fopen(a.in.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Fclose);

  std::vector<std::string> names = spec.inputs;
  if (spec.takes_h0 && data::h5::exists(file.get(), "in/h0")) names.push_back("h0");
  const DType dtype = a.dtype.empty() ? stored_dtype(file.get(), "in/" + names[0], a.in)
                                      : parse_dtype(a.dtype);
  if (dtype != DType::f32 && dtype != DType::f64)
    throw Error("hla op", "--dtype f32 or f64", a.dtype);
  const bool want_grad = data::h5::exists(file.get(), "dout/0");
  std::map<std::string, Var> x;
  const auto load = [&](const std::string& path) {
    return read_tensor(file.get(), path, dtype, a.in).to(device);
  };
  for (const std::string& n : names) x[n] = Var(load("in/" + n), want_grad);

  auto [o, hT] = call_op(a, x);
  if (want_grad) {
    Var loss = sum(o * Var(load("dout/0")));
    if (hT.defined() && data::h5::exists(file.get(), "dout/1"))
      loss = loss + sum(hT * Var(load("dout/1")));
    loss.backward();
  }

  data::PendingFile out(a.out);
  {
    data::h5::Handle of(H5_CHECK(H5Fcreate(out.temp_path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT,
                                           H5P_DEFAULT)),
                        H5Fclose);
    write_tensor(of.get(), "out/0", o.data());
    if (hT.defined()) write_tensor(of.get(), "out/1", hT.data());
    if (want_grad)
      for (const std::string& n : names) {
        const Tensor& g = x[n].grad();
        write_tensor(of.get(), "grad/" + n, g.defined() ? g : Tensor::zeros(x[n].shape(), dtype));
      }
  }
  out.commit();
}

}  // namespace

void add_op_command(CLI::App& app) {
  auto args = std::make_shared<OpArgs>();
  CLI::App* c = app.add_subcommand("op", "Run one recurrence op on tensors from an HDF5 file");
  c->add_option("--op", args->op, "Op: " + op_names())->required();
  c->add_option("--impl", args->impl,
                "Tier: reference | recurrent | chunk (softmax_attention: reference | tiled)")
      ->capture_default_str();
  c->add_option("--in", args->in, "Input file: in/<name> datasets, optional dout/0, dout/1")->required();
  c->add_option("--out", args->out, "Output file: out/0, out/1, grad/<name>")->required();
  c->add_option("--dtype", args->dtype, "Compute dtype f32 | f64 (default: that of the inputs)");
  c->add_option("--device", args->device, "Run the op and its backward on cpu | cuda")
      ->capture_default_str();
  c->add_option("--scale", args->scale, "Read-out scale (default K^-1/2)");
  c->add_option("--window", args->window, "softmax_attention: keys per query (0: all)");
  c->add_flag("--l2norm-qk", args->l2norm_qk, "Delta rules: L2-normalise q and k inside");
  c->add_flag("--non-causal", args->non_causal, "softmax_attention: attend to all positions");
  c->callback([args] { run_op(*args); });
}

}  // namespace hla::cli
