// `hla op` end to end: a case written to HDF5, run through the binary, read back and compared
// with the op called directly; and its error cases (non-zero exit, a message, no output file).
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "autograd/primitives.h"
#include "autograd/recurrences.h"
#include "data/hdf5.h"
#include "experiments/cli/tensor_h5.h"
#include "tensor/storage.h"
#include "tests/helpers/close.h"
#include "tests/helpers/run_hla.h"

using namespace hla;
using hla::test::run_hla;
namespace fs = std::filesystem;

namespace {
fs::path tmpdir() {
  fs::path d = fs::temp_directory_path() / ("hla_op_test_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}
void write_case(const fs::path& path, const std::map<std::string, Tensor>& ts) {
  data::h5::Handle f(H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)), H5Fclose);
  for (auto& [n, t] : ts) cli::write_tensor(f.get(), n, t);
}
Tensor read(const fs::path& path, const std::string& name) {
  data::h5::Handle f(H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Fclose);
  return cli::read_tensor(f.get(), name, DType::f64, path.string());
}
}  // namespace

TEST_CASE("hla op: gla chunk with gradients round-trips through HDF5", "[cli][op]") {
  Generator gen(5);
  const int64_t B = 1, T = 70, H = 2, K = 4, V = 3;
  const Tensor q = Tensor::randn({B, T, H, K}, gen, DType::f64), k = Tensor::randn({B, T, H, K}, gen, DType::f64);
  const Tensor v = Tensor::randn({B, T, H, V}, gen, DType::f64);
  const Tensor gk = Tensor::rand({B, T, H, K}, gen, DType::f64, -0.5, -0.01);
  const Tensor h0 = Tensor::randn({B, H, K, V}, gen, DType::f64);
  const Tensor d0 = Tensor::randn({B, T, H, V}, gen, DType::f64), d1 = Tensor::randn({B, H, K, V}, gen, DType::f64);
  const fs::path dir = tmpdir();
  write_case(dir / "in.h5", {{"in/q", q}, {"in/k", k}, {"in/v", v}, {"in/gk", gk}, {"in/h0", h0},
                             {"dout/0", d0}, {"dout/1", d1}});
  const auto r = run_hla("op --op gla --impl chunk --in " + (dir / "in.h5").string() +
                              " --out " + (dir / "out.h5").string());
  INFO(r.output);
  REQUIRE(r.code == 0);
  Var vq(q, true), vk(k, true), vv(v, true), vg(gk, true), vh(h0, true);
  const RecurrenceResult ref = gla(vq, vk, vv, vg, vh, {Impl::Reference});
  (sum(ref.o * Var(d0)) + sum(ref.hT * Var(d1))).backward();
  const fs::path out = dir / "out.h5";
  REQUIRE_CLOSE("o", ref.o.data().to_vector<double>(), read(out, "out/0").to_vector<double>(), 1e-10);
  REQUIRE_CLOSE("hT", ref.hT.data().to_vector<double>(), read(out, "out/1").to_vector<double>(), 1e-10);
  REQUIRE_CLOSE("dq", vq.grad().to_vector<double>(), read(out, "grad/q").to_vector<double>(), 1e-10);
  REQUIRE_CLOSE("dgk", vg.grad().to_vector<double>(), read(out, "grad/gk").to_vector<double>(), 1e-10);
  REQUIRE_CLOSE("dh0", vh.grad().to_vector<double>(), read(out, "grad/h0").to_vector<double>(), 1e-10);
  // f32 on request.
  const auto r32 = run_hla("op --op gla --impl recurrent --dtype f32 --in " + (dir / "in.h5").string() +
                                " --out " + (dir / "out32.h5").string());
  REQUIRE(r32.code == 0);
  REQUIRE_CLOSE("o f32", ref.o.data().to_vector<double>(), read(dir / "out32.h5", "out/0").to_vector<double>(), 1e-5);
  // On the GPU (forward and backward of the CUDA chunked kernel), where there is one.
  if (device_available(Device::CUDA)) {
    const auto rg = run_hla("op --op gla --impl chunk --device cuda --in " +
                            (dir / "in.h5").string() + " --out " + (dir / "out_cuda.h5").string());
    INFO(rg.output);
    REQUIRE(rg.code == 0);
    const fs::path gout = dir / "out_cuda.h5";
    REQUIRE_CLOSE("o cuda", ref.o.data().to_vector<double>(), read(gout, "out/0").to_vector<double>(), 1e-10);
    REQUIRE_CLOSE("hT cuda", ref.hT.data().to_vector<double>(), read(gout, "out/1").to_vector<double>(), 1e-10);
    REQUIRE_CLOSE("dq cuda", vq.grad().to_vector<double>(), read(gout, "grad/q").to_vector<double>(), 1e-10);
    REQUIRE_CLOSE("dgk cuda", vg.grad().to_vector<double>(), read(gout, "grad/gk").to_vector<double>(), 1e-10);
    REQUIRE_CLOSE("dh0 cuda", vh.grad().to_vector<double>(), read(gout, "grad/h0").to_vector<double>(), 1e-10);
  }
  fs::remove_all(dir);
}

TEST_CASE("hla op: bad input gives a clear error, a non-zero exit and no output", "[cli][op][errors]") {
  Generator gen(6);
  const fs::path dir = tmpdir();
  const std::string out = (dir / "out.h5").string();
  write_case(dir / "in.h5", {{"in/q", Tensor::randn({1, 3, 1, 2}, gen, DType::f64)},
                             {"in/k", Tensor::randn({1, 3, 1, 2}, gen, DType::f64)},
                             {"in/v", Tensor::randn({1, 3, 1, 2}, gen, DType::f64)},
                             {"in/beta", Tensor::randn({1, 3, 2}, gen, DType::f64)}});
  const std::string in = (dir / "in.h5").string();
  auto expect_fail = [&](const std::string& args, const std::string& needle) {
    const auto r = run_hla(args);
    INFO(args << "\n" << r.output);
    CHECK(r.code != 0);
    CHECK(r.output.find(needle) != std::string::npos);
    CHECK(!fs::exists(out));
    CHECK(!fs::exists(out + ".partial"));
  };
  expect_fail("op --op nope --in " + in + " --out " + out, "--op one of");
  expect_fail("op --op gla --in " + in + " --out " + out, "in/gk");
  expect_fail("op --op delta_rule --in " + in + " --out " + out, "beta must be [B,T,H]");
  expect_fail("op --op retention --impl fast --in " + in + " --out " + out, "reference, recurrent, chunk");
  expect_fail("op --op retention --device tpu --in " + in + " --out " + out, "--device cpu or cuda");
  if (!device_available(Device::CUDA))  // a CPU-only machine, whatever the build
    expect_fail("op --op retention --device cuda --in " + in + " --out " + out, "CUDA backend");
  std::ofstream(dir / "text.h5") << "not hdf5";
  expect_fail("op --op retention --in " + (dir / "text.h5").string() + " --out " + out, "HDF5");
  expect_fail("op --op retention --in " + (dir / "missing.h5").string() + " --out " + out, "HDF5");
  fs::remove_all(dir);
}
